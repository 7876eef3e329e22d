//! Pure decision code of the daemon, free of threads, clocks and devices: time and inputs are
//! passed in, decisions come out, so every rule is tested as a script → transcript.
//!
//! - [`scene`]: has the view changed enough, for long enough, to narrate it?
//! - [`speech`]: what to say now, what to cut short, queue or drop.

pub mod scene;
pub mod speech;
