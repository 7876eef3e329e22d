//! Pure narration decisions, free of threads, clocks and devices: time and inputs are passed in,
//! decisions come out, so every rule is tested exhaustively (as a script → transcript where it
//! has a sequence).
//!
//! - [`scene`]: has the view changed enough, for long enough, to narrate it?
//! - [`speech`]: what to say now, what to cut short, queue or drop.
//! - [`guard`]: is the view too dark, covered, overexposed or blurred to describe?
//! - [`dedup`]: does a new description say essentially the same as the last one?

pub mod dedup;
pub mod guard;
pub mod scene;
pub mod speech;
