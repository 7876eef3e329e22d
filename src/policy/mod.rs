//! Pure narration decisions: no I/O, no clocks (time is passed in), exhaustively tested.

pub mod dedup;
pub mod guard;
