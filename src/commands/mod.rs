//! One module per subcommand: its clap arguments and its `run` function.

pub mod bench;
pub mod describe;
pub mod embed;
pub mod model_args;
pub mod quantize;
