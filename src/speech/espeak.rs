//! The espeak-ng backend: one `espeak-ng` process per utterance, text on its standard input (so no
//! text is ever taken for an option), killed to stop. Works without any speech server; used as the
//! fallback when speech-dispatcher is unavailable.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{SpeechError, SpeechSink};
use crate::config::SpeechConfig;
use crate::narration::Kind;

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
    args: Vec<String>,
    output: Output,
    child: Option<Child>,
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
        let mut args = vec![];
        let voice = if !cfg.voice.is_empty() {
            Some(&cfg.voice)
        } else if !cfg.language.is_empty() {
            Some(&cfg.language)
        } else {
            None
        };
        if let Some(v) = voice {
            args.push("-v".to_string());
            args.push(v.clone());
        }
        if cfg.rate != 0 {
            args.push("-s".to_string());
            args.push(words_per_minute(cfg.rate).to_string());
        }
        if let Output::WavDir(d) = &output {
            std::fs::create_dir_all(d).map_err(|e| SpeechError::Unavailable {
                backend: NAME,
                message: format!("cannot create {}: {e}", d.display()),
            })?;
        }
        Ok(Self {
            program,
            args,
            output,
            child: None,
            count: 0,
        })
    }

    fn reap(&mut self) -> Result<bool, SpeechError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(false);
        };
        match child.try_wait() {
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

    fn speak(&mut self, text: &str, _kind: Kind) -> Result<(), SpeechError> {
        self.stop()?;
        self.count += 1;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
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
        self.child = Some(child);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), SpeechError> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    fn is_speaking(&mut self) -> Result<bool, SpeechError> {
        self.reap()
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
