//! The espeak-ng backend: one `espeak-ng` process per utterance, text on its standard input (so no
//! text is ever taken for an option), killed to stop. Works without any speech server; used as the
//! fallback when speech-dispatcher is unavailable. As a fallback it never uses `[speech] voice`
//! (that names a speech-dispatcher voice): only the language.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::{Progress, SpeechError, SpeechSink, Voice};
use crate::config::{SpeechBackend, SpeechConfig};
use crate::narration::{Kind, Priority};
use crate::speech::service::utterance_limit;

const NAME: &str = "espeak-ng";

/// Where the speech goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The default audio device.
    Audio,
    /// WAV files `utterance-N.wav` in this folder (tests, recordings).
    WavDir(PathBuf),
}

pub struct EspeakNg {
    program: PathBuf,
    /// `-v` value, if any.
    voice: Option<String>,
    /// Is `voice` espeak-ng's own (configured for this backend), not a speech-dispatcher name?
    own_voice: bool,
    rate: i32,
    output: Output,
    child: Option<(Child, Instant, std::time::Duration)>,
    count: u64,
}

/// speech-dispatcher's rate scale (-100 … 100, 0 normal) → espeak-ng words per minute
/// (80 … 175 … 450).
pub fn words_per_minute(rate: i32) -> u32 {
    let r = rate.clamp(-100, 100) as f64;
    let wpm = if r < 0.0 {
        175.0 + r * 0.95
    } else {
        175.0 + r * 2.75
    };
    wpm.round() as u32
}

impl EspeakNg {
    /// Checks that `espeak-ng` runs, and prepares its voice and rate.
    pub fn open(cfg: &SpeechConfig, output: Output) -> Result<Self, SpeechError> {
        Self::with_program(PathBuf::from("espeak-ng"), cfg, output)
    }

    pub fn with_program(
        program: PathBuf,
        cfg: &SpeechConfig,
        output: Output,
    ) -> Result<Self, SpeechError> {
        let probe = Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match probe {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(SpeechError::Unavailable {
                    backend: NAME,
                    message: format!("`{} --version` failed ({s})", program.display()),
                })
            }
            Err(e) => {
                return Err(SpeechError::Unavailable {
                    backend: NAME,
                    message: format!(
                        "cannot run {} ({e}); install it with `sudo apt install espeak-ng`",
                        program.display()
                    ),
                })
            }
        }
        // `voice` names a voice of the configured backend: espeak-ng's own only when it is the
        // configured one; as speech-dispatcher's fallback only the language is used
        let own_voice = cfg.backend == SpeechBackend::EspeakNg;
        let voice = if own_voice && !cfg.voice.is_empty() {
            Some(cfg.voice.clone())
        } else if !cfg.language.is_empty() {
            Some(cfg.language.clone())
        } else {
            None
        };
        if let Output::WavDir(d) = &output {
            std::fs::create_dir_all(d).map_err(|e| SpeechError::Unavailable {
                backend: NAME,
                message: format!("cannot create {}: {e}", d.display()),
            })?;
        }
        Ok(Self {
            program,
            voice,
            own_voice,
            rate: cfg.rate,
            output,
            child: None,
            count: 0,
        })
    }

    /// The process saying the current utterance, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|(c, _, _)| c.id())
    }

    /// The arguments before the text.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![];
        if let Some(v) = &self.voice {
            args.push("-v".to_string());
            args.push(v.clone());
        }
        if self.rate != 0 {
            args.push("-s".to_string());
            args.push(words_per_minute(self.rate).to_string());
        }
        args
    }

    fn reap(&mut self) -> Result<bool, SpeechError> {
        let Some((child, started, limit)) = self.child.as_mut() else {
            return Ok(false);
        };
        match child.try_wait() {
            Ok(None) if started.elapsed() > *limit => {
                let limit = limit.as_secs();
                let _ = self.stop();
                Err(SpeechError::Stuck {
                    backend: NAME,
                    message: format!("espeak-ng did not finish an utterance within {limit} s"),
                    began: true,
                })
            }
            Ok(None) => Ok(true),
            Ok(Some(status)) => {
                // already reaped by try_wait; only its error output is left to read
                let stderr = child.stderr.take();
                self.child = None;
                if status.success() {
                    return Ok(false);
                }
                let mut err = String::new();
                if let Some(mut e) = stderr {
                    let _ = e.read_to_string(&mut err);
                }
                Err(SpeechError::Failed {
                    backend: NAME,
                    message: format!("espeak-ng exited with {status}: {}", err.trim()),
                })
            }
            Err(e) => {
                self.child = None;
                Err(SpeechError::Failed {
                    backend: NAME,
                    message: e.to_string(),
                })
            }
        }
    }
}

impl SpeechSink for EspeakNg {
    fn name(&self) -> &'static str {
        NAME
    }

    fn speak(&mut self, text: &str, _kind: Kind, _priority: Priority) -> Result<(), SpeechError> {
        self.stop()?;
        self.count += 1;
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args());
        if let Output::WavDir(d) = &self.output {
            cmd.arg("-w")
                .arg(d.join(format!("utterance-{}.wav", self.count)));
        }
        cmd.arg("--stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| SpeechError::Failed {
            backend: NAME,
            message: format!("cannot start espeak-ng: {e}"),
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // a write error means espeak-ng died; reap() reports how
            let _ = stdin.write_all(text.as_bytes());
        }
        self.child = Some((child, Instant::now(), utterance_limit(text)));
        Ok(())
    }

    fn stop(&mut self) -> Result<(), SpeechError> {
        if let Some((mut c, _, _)) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<Progress, SpeechError> {
        Ok(if self.reap()? {
            Progress::Speaking
        } else {
            Progress::Finished
        })
    }

    fn adjust(&mut self, v: &Voice) -> Result<(), SpeechError> {
        self.rate = v.rate;
        if self.own_voice && !v.voice.is_empty() {
            self.voice = Some(v.voice.clone());
        } else if !v.language.is_empty() {
            self.voice = Some(v.language.clone());
        }
        Ok(())
    }
}

impl Drop for EspeakNg {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_scale() {
        assert_eq!(words_per_minute(0), 175);
        assert_eq!(words_per_minute(-100), 80);
        assert_eq!(words_per_minute(100), 450);
        assert_eq!(words_per_minute(1000), 450);
    }

    #[test]
    fn a_speech_dispatcher_voice_name_is_never_given_to_espeak_ng() {
        let true_program = PathBuf::from("true");
        let cfg = SpeechConfig {
            voice: "MALE1".into(),
            language: "de".into(),
            rate: 50,
            ..SpeechConfig::default()
        };
        // the fallback of speech-dispatcher: the language, never speech-dispatcher's voice name
        let e = EspeakNg::with_program(true_program.clone(), &cfg, Output::Audio).unwrap();
        assert_eq!(e.args(), ["-v", "de", "-s", "313"]);
        // espeak-ng configured itself: its own voice name
        let own = SpeechConfig {
            backend: SpeechBackend::EspeakNg,
            voice: "en-us".into(),
            ..cfg.clone()
        };
        let e = EspeakNg::with_program(true_program.clone(), &own, Output::Audio).unwrap();
        assert_eq!(e.args(), ["-v", "en-us", "-s", "313"]);
        let none = SpeechConfig {
            voice: "MALE1".into(),
            ..SpeechConfig::default()
        };
        let e = EspeakNg::with_program(true_program, &none, Output::Audio).unwrap();
        assert!(e.args().is_empty(), "{:?}", e.args());
    }

    #[test]
    fn missing_program_is_unavailable_with_advice() {
        let e = EspeakNg::with_program(
            PathBuf::from("/nonexistent/espeak-ng"),
            &SpeechConfig::default(),
            Output::Audio,
        )
        .err()
        .unwrap();
        assert!(matches!(e, SpeechError::Unavailable { .. }));
        assert!(e.to_string().contains("apt install espeak-ng"), "{e}");
    }
}
