//! The speech-dispatcher backend, through the `tts` crate: the same speech service the Orca
//! screen reader uses, so the user's own voice, rate and audio set-up apply. The end of each
//! utterance is known from speech-dispatcher's end / cancel events for that utterance's id.

use std::mem::ManuallyDrop;

use crossbeam_channel::{Receiver, Sender};
use tts::{Backends, Tts, UtteranceId};

use super::{SpeechError, SpeechSink};
use crate::config::SpeechConfig;
use crate::narration::Kind;

const NAME: &str = "speech-dispatcher";

fn failed(e: tts::Error) -> SpeechError {
    SpeechError::Failed {
        backend: NAME,
        message: e.to_string(),
    }
}

pub struct Dispatcher {
    // Never dropped: `tts` removes its callback table on drop, and a speech-dispatcher event
    // arriving during that teardown would panic inside speech-dispatcher's own thread. The sink
    // lives as long as the daemon, so keeping the connection open until exit costs nothing.
    tts: ManuallyDrop<Tts>,
    done: Receiver<UtteranceId>,
    current: Option<UtteranceId>,
    pub voice: Option<String>,
}

impl Dispatcher {
    /// Connects to speech-dispatcher (started on demand by the client library) and applies
    /// `rate`, `voice` and `language`.
    pub fn open(cfg: &SpeechConfig) -> Result<Self, SpeechError> {
        let mut tts = Tts::new(Backends::SpeechDispatcher).map_err(|e| SpeechError::Unavailable {
            backend: NAME,
            message: format!(
                "{e} (is the speech-dispatcher package installed? `sudo apt install speech-dispatcher`)"
            ),
        })?;
        let (tx, done): (Sender<UtteranceId>, _) = crossbeam_channel::unbounded();
        let tx2 = tx.clone();
        tts.on_utterance_end(Some(Box::new(move |id| {
            let _ = tx.send(id);
        })))
        .map_err(failed)?;
        tts.on_utterance_stop(Some(Box::new(move |id| {
            let _ = tx2.send(id);
        })))
        .map_err(failed)?;
        if cfg.rate != 0 {
            tts.set_rate(cfg.rate as f32).map_err(failed)?;
        }
        let mut voice = None;
        if !cfg.voice.is_empty() || !cfg.language.is_empty() {
            let voices = tts.voices().map_err(failed)?;
            let chosen = if !cfg.voice.is_empty() {
                voices
                    .iter()
                    .find(|v| v.name().eq_ignore_ascii_case(&cfg.voice))
                    .or_else(|| {
                        tracing::warn!(
                            "speech-dispatcher has no voice named {:?}; using its default (voices: {})",
                            cfg.voice,
                            voices
                                .iter()
                                .take(12)
                                .map(|v| v.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        None
                    })
            } else {
                let lang = cfg.language.to_ascii_lowercase();
                voices
                    .iter()
                    .find(|v| {
                        let l = v.language().to_string().to_ascii_lowercase();
                        l == lang || l.split('-').next() == Some(lang.as_str())
                    })
                    .or_else(|| {
                        tracing::warn!(
                            "speech-dispatcher has no voice for language {:?}; using its default",
                            cfg.language
                        );
                        None
                    })
            };
            if let Some(v) = chosen {
                tts.set_voice(v).map_err(failed)?;
                voice = Some(v.name());
            }
        }
        Ok(Self {
            tts: ManuallyDrop::new(tts),
            done,
            current: None,
            voice,
        })
    }
}

impl SpeechSink for Dispatcher {
    fn name(&self) -> &'static str {
        NAME
    }

    fn speak(&mut self, text: &str, _kind: Kind) -> Result<(), SpeechError> {
        while self.done.try_recv().is_ok() {}
        let id = self.tts.speak(text, false).map_err(failed)?;
        self.current = id;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), SpeechError> {
        self.current = None;
        self.tts.stop().map_err(failed)?;
        Ok(())
    }

    fn is_speaking(&mut self) -> Result<bool, SpeechError> {
        while let Ok(id) = self.done.try_recv() {
            if Some(id) == self.current {
                self.current = None;
            }
        }
        Ok(self.current.is_some())
    }
}
