//! Speech output. A [`SpeechSink`] says one utterance at a time and can be stopped; the backends
//! are speech-dispatcher (through the `tts` crate: what the Orca screen reader uses, so the user's
//! voice and rate settings apply), espeak-ng run directly, and `log` (print only). [`open_sink`]
//! picks one from the configuration and falls back — speech-dispatcher → espeak-ng → log — saying
//! which it chose, so the daemon is never silent without a reason in its log.
//!
//! The speech thread ([`service`]) owns the sink, applies the queue policy
//! ([`crate::policy::speech`]) and writes the narration log.

pub mod dispatcher;
pub mod espeak;
pub mod ledger;
pub mod sentences;
pub mod service;
pub mod stdout;

use crate::config::{SpeechBackend, SpeechConfig};
use crate::narration::Kind;

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
}

/// Something that can say text out loud, one utterance at a time.
pub trait SpeechSink {
    /// The backend's name, as written in the configuration.
    fn name(&self) -> &'static str;
    /// Starts saying `text` and returns at once. Only called when nothing is being said.
    fn speak(&mut self, text: &str, kind: Kind) -> Result<(), SpeechError>;
    /// Stops at once whatever is being said.
    fn stop(&mut self) -> Result<(), SpeechError>;
    /// Is the last utterance still being said?
    fn is_speaking(&mut self) -> Result<bool, SpeechError>;
}

/// Opens the configured backend, falling back to the next one when it cannot be used. Returns the
/// sink and, when it is not the configured one, why.
pub fn open_sink(cfg: &SpeechConfig) -> (Box<dyn SpeechSink>, Option<String>) {
    let mut why = vec![];
    let order: &[SpeechBackend] = match cfg.backend {
        SpeechBackend::SpeechDispatcher => &[
            SpeechBackend::SpeechDispatcher,
            SpeechBackend::EspeakNg,
            SpeechBackend::Log,
        ],
        SpeechBackend::EspeakNg => &[SpeechBackend::EspeakNg, SpeechBackend::Log],
        SpeechBackend::Log => &[SpeechBackend::Log],
    };
    for b in order {
        match open_backend(*b, cfg) {
            Ok(s) => {
                let note = (!why.is_empty())
                    .then(|| format!("{}; using {} instead", why.join("; "), s.name()));
                return (s, note);
            }
            Err(e) => why.push(e.to_string()),
        }
    }
    unreachable!("the log backend always opens")
}

/// Opens exactly one backend.
pub fn open_backend(
    backend: SpeechBackend,
    cfg: &SpeechConfig,
) -> Result<Box<dyn SpeechSink>, SpeechError> {
    Ok(match backend {
        SpeechBackend::SpeechDispatcher => Box::new(dispatcher::Dispatcher::open(cfg)?),
        SpeechBackend::EspeakNg => Box::new(espeak::EspeakNg::open(cfg, espeak::Output::Audio)?),
        SpeechBackend::Log => Box::new(stdout::Stdout),
    })
}
