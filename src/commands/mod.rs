//! One module per subcommand: its clap arguments and its `run` function.

pub mod check;
pub mod ctl;
pub mod describe;
pub mod embed;
pub mod model_args;
pub mod run;
