//! The building blocks of the one-shot jobs over many photos (`batch`, `search`): finding the
//! images, decoding them ahead of the model, resumable JSON-lines output, yes/no scoring.

pub mod inputs;
pub mod prefetch;
pub mod progress;
pub mod resume;
pub mod yesno;
