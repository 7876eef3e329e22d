//! Speech output. A [`SpeechSink`] says one utterance at a time and can be stopped; the backends
//! are speech-dispatcher (spoken to directly over its socket, [`ssip`]: what the Orca screen reader
//! uses, so the user's voice and audio settings apply, and scenesay's speech takes turns with the
//! screen reader's by priority — see [`dispatcher`]), espeak-ng run directly, and `log` (print
//! only).
//! [`resilient::Resilient`] picks one from the configuration and falls back — speech-dispatcher →
//! espeak-ng → log — saying which it chose, at start and whenever the backend in use dies while
//! running, so the daemon is never silent without a reason in its log.
//!
//! The speech thread ([`service`]) owns the sink, applies the queue policy
//! ([`crate::policy::speech`]) and writes the narration log.

pub mod dispatcher;
pub mod espeak;
pub mod ledger;
pub mod resilient;
pub mod sentences;
pub mod service;
pub mod ssip;
pub mod stdout;
pub mod tts_backend;

use crate::config::{SpeechBackend, SpeechConfig};
use crate::narration::{Kind, Priority};

/// A speech backend failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpeechError {
    /// The backend cannot be used at all (not installed, no server).
    #[error("{backend} is not available: {message}")]
    Unavailable {
        backend: &'static str,
        message: String,
    },
    /// One utterance failed.
    #[error("{backend}: {message}")]
    Failed {
        backend: &'static str,
        message: String,
    },
    /// The backend took an utterance and never finished it (no working audio output): `began`
    /// when it had said it started.
    #[error("{backend}: {message}")]
    Stuck {
        backend: &'static str,
        message: String,
        began: bool,
    },
}

/// Where the utterance being said stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still being said (or waiting for its turn in the speech service).
    Speaking,
    /// Said to the end.
    Finished,
    /// Ended without being heard in full: cut short or dropped by something else (another
    /// program's speech, such as the screen reader), or lost. `began`: part of it was heard.
    Cut { began: bool, why: String },
}

/// Speech settings that can change while the daemon runs (`scenesay ctl rate|volume|voice`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Voice {
    /// -100 … 100; 0 = the backend's own.
    pub rate: i32,
    /// -100 … 100; 0 = the backend's own.
    pub volume: i32,
    /// A voice name; empty = by language, else the backend's default.
    pub voice: String,
    /// The language code; empty = the backend's default.
    pub language: String,
}

impl Voice {
    pub fn from_config(cfg: &SpeechConfig) -> Self {
        Self {
            rate: cfg.rate,
            volume: cfg.volume,
            voice: cfg.voice.clone(),
            language: cfg.language.clone(),
        }
    }
}

/// Something that can say text out loud, one utterance at a time.
pub trait SpeechSink {
    /// The backend's name, as written in the configuration.
    fn name(&self) -> &'static str;
    /// Starts saying `text` and returns at once. Only called when nothing is being said.
    /// `priority` decides how it takes turns with other programs' speech (the screen reader).
    fn speak(&mut self, text: &str, kind: Kind, priority: Priority) -> Result<(), SpeechError>;
    /// Stops at once whatever is being said.
    fn stop(&mut self) -> Result<(), SpeechError>;
    /// Where the last utterance stands. A backend that never finishes an utterance reports
    /// [`SpeechError::Stuck`] once its time limit has passed.
    fn poll(&mut self) -> Result<Progress, SpeechError>;
    /// Is the last utterance still being said?
    fn is_speaking(&mut self) -> Result<bool, SpeechError> {
        Ok(self.poll()? == Progress::Speaking)
    }
    /// Applies changed settings to the following utterances.
    fn adjust(&mut self, voice: &Voice) -> Result<(), SpeechError>;
}

/// Opens exactly one backend.
pub fn open_backend(
    backend: SpeechBackend,
    cfg: &SpeechConfig,
) -> Result<Box<dyn SpeechSink>, SpeechError> {
    Ok(match backend {
        SpeechBackend::SpeechDispatcher => Box::new(dispatcher::Dispatcher::open(cfg)?),
        SpeechBackend::Tts => Box::new(tts_backend::TtsBackend::open(cfg)?),
        SpeechBackend::EspeakNg => Box::new(espeak::EspeakNg::open(cfg, espeak::Output::Audio)?),
        SpeechBackend::Log => Box::new(stdout::Stdout),
    })
}
