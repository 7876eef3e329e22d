//! One module per subcommand: its clap arguments and its `run` function.

pub mod batch;
pub mod bench;
pub mod bench_idle;
pub mod check;
pub mod ctl;
pub mod describe;
pub mod embed;
pub mod model;
pub mod model_args;
pub mod narrate;
pub mod quantize;
pub mod run;
pub mod search;
pub mod service;
