//! The speech-dispatcher backend, through the `tts` crate: the same speech service the Orca
//! screen reader uses, so the user's own voice, rate and audio set-up apply. The end of each
//! utterance is known from speech-dispatcher's end / cancel events for that utterance's id.

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};

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

/// Where the speech-dispatcher client library connects: `$SPEECHD_ADDRESS` (`unix_socket:PATH`),
/// else `$XDG_RUNTIME_DIR/speech-dispatcher/speechd.sock`, else the same under `~/.cache`; `None`
/// for an address that is not a Unix socket.
pub fn socket_path(
    address: Option<&str>,
    runtime_dir: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(a) = address.map(str::trim).filter(|a| !a.is_empty()) {
        return a
            .strip_prefix("unix_socket:")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| (a == "unix_socket").then(|| default_socket(runtime_dir, home))?);
    }
    default_socket(runtime_dir, home)
}

fn default_socket(runtime_dir: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let base = runtime_dir
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| home.map(|h| h.join(".cache")))?;
    Some(base.join("speech-dispatcher/speechd.sock"))
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
        if std::env::var_os("INVOCATION_ID").is_some() {
            // under systemd: never let the client library start speech-dispatcher from inside
            // scenesay's sandbox (it would inherit it, and Orca would lose it when scenesay stops)
            if let Some(sock) = socket_path(
                std::env::var("SPEECHD_ADDRESS").ok().as_deref(),
                std::env::var_os("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .as_deref(),
                std::env::var_os("HOME").map(PathBuf::from).as_deref(),
            ) {
                if let Err(e) = std::os::unix::net::UnixStream::connect(&sock) {
                    return Err(SpeechError::Unavailable {
                        backend: NAME,
                        message: format!(
                            "speech-dispatcher is not running (nothing answers at {}: {e}), and as a service scenesay does not start it itself; it is used as soon as the desktop, Orca or its socket unit (`systemctl --user enable --now speech-dispatcher.socket`, where your distribution has one) starts it",
                            sock.display()
                        ),
                    });
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_checked_is_the_one_the_client_library_uses() {
        let run = Path::new("/run/user/1000");
        let home = Path::new("/home/a");
        assert_eq!(
            socket_path(None, Some(run), Some(home)),
            Some(PathBuf::from(
                "/run/user/1000/speech-dispatcher/speechd.sock"
            ))
        );
        assert_eq!(
            socket_path(None, None, Some(home)),
            Some(PathBuf::from(
                "/home/a/.cache/speech-dispatcher/speechd.sock"
            ))
        );
        assert_eq!(
            socket_path(Some("unix_socket:/x/s.sock"), Some(run), None),
            Some(PathBuf::from("/x/s.sock"))
        );
        assert_eq!(
            socket_path(Some("unix_socket"), Some(run), None),
            Some(PathBuf::from(
                "/run/user/1000/speech-dispatcher/speechd.sock"
            ))
        );
        // an IP address cannot be checked (and the unit allows Unix sockets only)
        assert_eq!(
            socket_path(Some("inet_socket:127.0.0.1:6560"), Some(run), None),
            None
        );
        assert_eq!(socket_path(None, None, None), None);
    }
}
