//! The portable backend, through the `tts` crate: speech-dispatcher on Linux (through its client
//! library), and the platform's own speech service elsewhere. It cannot choose an SSIP priority
//! per utterance (the crate speaks everything at one fixed priority), so beside a screen reader
//! the `speech-dispatcher` backend ([`super::dispatcher`]) is the one to use; this one is for
//! set-ups where scenesay's own SSIP client cannot reach the speech service.

use std::mem::ManuallyDrop;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tts::{Backends, Tts, UtteranceId};

use super::{Progress, SpeechError, SpeechSink, Voice};
use crate::config::SpeechConfig;
use crate::narration::{Kind, Priority};
use crate::speech::service::utterance_limit;

const NAME: &str = "tts";

fn failed(e: tts::Error) -> SpeechError {
    SpeechError::Failed {
        backend: NAME,
        message: e.to_string(),
    }
}

/// How an utterance ended, as the `tts` callbacks report it.
enum Ended {
    Finished(UtteranceId),
    Stopped(UtteranceId),
}

struct Current {
    id: Option<UtteranceId>,
    started: Instant,
    limit: std::time::Duration,
}

pub struct TtsBackend {
    // Never dropped: `tts` removes its callback table on drop, and an event arriving during that
    // teardown would panic inside the speech library's own thread. The sink lives as long as the
    // daemon, so keeping the connection open until exit costs nothing.
    tts: ManuallyDrop<Tts>,
    ended: Receiver<Ended>,
    current: Option<Current>,
}

impl TtsBackend {
    /// Connects to the platform's speech service and applies rate, volume, voice and language.
    pub fn open(cfg: &SpeechConfig) -> Result<Self, SpeechError> {
        let tts = Tts::new(Backends::SpeechDispatcher).map_err(|e| SpeechError::Unavailable {
            backend: NAME,
            message: format!(
                "{e} (is the speech-dispatcher package installed? `sudo apt install speech-dispatcher`)"
            ),
        })?;
        let (tx, ended): (Sender<Ended>, _) = crossbeam_channel::unbounded();
        let tx2 = tx.clone();
        tts.on_utterance_end(Some(Box::new(move |id| {
            let _ = tx.send(Ended::Finished(id));
        })))
        .map_err(failed)?;
        tts.on_utterance_stop(Some(Box::new(move |id| {
            let _ = tx2.send(Ended::Stopped(id));
        })))
        .map_err(failed)?;
        let mut me = Self {
            tts: ManuallyDrop::new(tts),
            ended,
            current: None,
        };
        me.adjust(&Voice::from_config(cfg))?;
        Ok(me)
    }

    fn pick_voice(&self, voice: &Voice) -> Result<Option<tts::Voice>, SpeechError> {
        if voice.voice.is_empty() && voice.language.is_empty() {
            return Ok(None);
        }
        let voices = self.tts.voices().map_err(failed)?;
        if !voice.voice.is_empty() {
            return match voices
                .iter()
                .find(|v| v.name().eq_ignore_ascii_case(&voice.voice))
            {
                Some(v) => Ok(Some(v.clone())),
                None => Err(SpeechError::Failed {
                    backend: NAME,
                    message: format!(
                        "no voice named {:?} (voices: {})",
                        voice.voice,
                        voices
                            .iter()
                            .take(12)
                            .map(|v| v.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            };
        }
        let lang = voice.language.to_ascii_lowercase();
        Ok(voices
            .iter()
            .find(|v| {
                let l = v.language().to_string().to_ascii_lowercase();
                l == lang || l.split('-').next() == Some(lang.as_str())
            })
            .cloned())
    }
}

/// Maps scenesay's -100 … 100 (0 = the backend's own) onto the backend's range.
fn scale(value: i32, min: f32, normal: f32, max: f32) -> f32 {
    let v = value.clamp(-100, 100) as f32 / 100.0;
    if v >= 0.0 {
        normal + v * (max - normal)
    } else {
        normal + v * (normal - min)
    }
}

impl SpeechSink for TtsBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn speak(&mut self, text: &str, _kind: Kind, _priority: Priority) -> Result<(), SpeechError> {
        while self.ended.try_recv().is_ok() {}
        let id = self.tts.speak(text, false).map_err(failed)?;
        self.current = Some(Current {
            id,
            started: Instant::now(),
            limit: utterance_limit(text) + super::dispatcher::TURN_LIMIT,
        });
        Ok(())
    }

    fn stop(&mut self) -> Result<(), SpeechError> {
        self.current = None;
        self.tts.stop().map_err(failed)?;
        Ok(())
    }

    fn poll(&mut self) -> Result<Progress, SpeechError> {
        let Some(cur) = &self.current else {
            return Ok(Progress::Finished);
        };
        while let Ok(e) = self.ended.try_recv() {
            let (id, progress) = match e {
                Ended::Finished(id) => (id, Progress::Finished),
                Ended::Stopped(id) => (
                    id,
                    Progress::Cut {
                        began: true,
                        why: "stopped by the speech service".into(),
                    },
                ),
            };
            if cur.id.is_none() || cur.id == Some(id) {
                self.current = None;
                return Ok(progress);
            }
        }
        if cur.started.elapsed() > cur.limit {
            self.current = None;
            let _ = self.tts.stop();
            return Err(SpeechError::Stuck {
                backend: NAME,
                message: "the speech service accepted the sentence but never finished it (no audio output?)".into(),
                began: false,
            });
        }
        Ok(Progress::Speaking)
    }

    fn adjust(&mut self, voice: &Voice) -> Result<(), SpeechError> {
        let f = self.tts.supported_features();
        if f.rate {
            let r = scale(
                voice.rate,
                self.tts.min_rate(),
                self.tts.normal_rate(),
                self.tts.max_rate(),
            );
            self.tts.set_rate(r).map_err(failed)?;
        }
        if f.volume {
            let v = scale(
                voice.volume,
                self.tts.min_volume(),
                self.tts.normal_volume(),
                self.tts.max_volume(),
            );
            self.tts.set_volume(v).map_err(failed)?;
        }
        if f.voice {
            if let Some(v) = self.pick_voice(voice)? {
                self.tts.set_voice(&v).map_err(failed)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::scale;

    #[test]
    fn settings_map_onto_the_backends_range_around_its_normal_value() {
        let near = |a: f32, b: f32| (a - b).abs() < 1e-5;
        assert!(near(scale(0, -100.0, 0.0, 100.0), 0.0));
        assert!(near(scale(40, -100.0, 0.0, 100.0), 40.0));
        assert!(near(scale(100, 0.1, 1.0, 10.0), 10.0));
        assert!(near(scale(-100, 0.1, 1.0, 10.0), 0.1));
        assert!(near(scale(50, 0.0, 0.5, 1.0), 0.75));
        assert!(near(scale(-50, 0.0, 0.5, 1.0), 0.25));
        assert!(near(scale(500, 0.0, 0.5, 1.0), 1.0));
    }
}
