//! The building blocks of the one-shot jobs over many photos and videos (`batch`, `search`,
//! `narrate`): finding the images, decoding them ahead of the model, resumable JSON-lines output,
//! yes/no scoring, the audio-description track.

pub mod inputs;
pub mod prefetch;
pub mod progress;
pub mod resume;
pub mod track;
pub mod yesno;
