//! The `log` speech backend: prints each utterance on standard output as `[kind] text`, for demos,
//! tests and machines without audio. Always available.

use std::io::Write;

use super::{Progress, SpeechError, SpeechSink, Voice};
use crate::narration::{Kind, Priority};

pub struct Stdout;

impl SpeechSink for Stdout {
    fn name(&self) -> &'static str {
        "log"
    }

    fn speak(&mut self, text: &str, kind: Kind, _priority: Priority) -> Result<(), SpeechError> {
        let mut o = std::io::stdout().lock();
        // a closed stdout must not stop narration: the narration log still records everything
        let _ = writeln!(o, "[{}] {text}", kind.name()).and_then(|_| o.flush());
        Ok(())
    }

    fn stop(&mut self) -> Result<(), SpeechError> {
        Ok(())
    }

    fn poll(&mut self) -> Result<Progress, SpeechError> {
        Ok(Progress::Finished)
    }

    fn adjust(&mut self, _voice: &Voice) -> Result<(), SpeechError> {
        Ok(())
    }
}
