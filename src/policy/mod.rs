//! Pure narration decisions, free of threads, clocks and devices: time and inputs are passed in,
//! decisions come out, so every rule is tested exhaustively (as a script → transcript where it
//! has a sequence).
//!
//! - [`narrator`]: the scene narration policy, composed of the three below: per frame, what to say.
//! - [`scene`]: has the view changed enough, for long enough, to narrate it, and how fully?
//! - [`gate`]: could this frame show a different scene at all (cheap, before the encoder)?
//! - [`guard`]: is the view too dark, covered, overexposed or blurred to describe?
//! - [`dedup`]: does a new description say essentially the same as the last one?
//! - [`phrasing`]: wording fixes ("The image shows …" → "…").
//! - [`speech`]: what to say now, what to cut short, queue or drop.
//! - [`watch`]: has a watched condition ("the kettle light is off") turned true?
//! - [`conversation`]: does a question follow up the last answer, or start afresh?
//! - [`periodic`]: in periodic mode, is a description of the view due?
//! - [`session`]: pause while the screen is locked, the lid closed or the machine asleep; resume after.

pub mod conversation;
pub mod dedup;
pub mod gate;
pub mod guard;
pub mod narrator;
pub mod periodic;
pub mod phrasing;
pub mod scene;
pub mod session;
pub mod speech;
pub mod watch;
