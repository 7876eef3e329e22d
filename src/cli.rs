//! The command line: one subcommand per job, each defined with its arguments in `commands/`.

use clap::{Parser, Subcommand};

use crate::commands;

/// scenesay tells a blind or low-vision person, out loud, what is in front of the camera. It runs
/// Apple's FastVLM vision-language model on the CPU: no cloud, no Python.
#[derive(Debug, Parser)]
#[command(name = "scenesay", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Worker threads for the model (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe one or more images, streaming the text as it is generated.
    Describe(commands::describe::Args),
    /// Write an image's features, projector output and scene embedding to a safetensors file.
    Embed(commands::embed::Args),
    /// Time every stage of the model (preprocess, vision encoder, projector, prefill, first token,
    /// decode) and report medians, encoder GFLOP/s and peak memory. Set the thread count with the
    /// global --threads option.
    Bench(commands::bench::Args),
    /// Write a copy of a checkpoint with its language model quantized to 8 or 4 bits (GGUF), which
    /// every command loads like any other model directory.
    Quantize(commands::quantize::Args),
}

impl Command {
    pub fn run(self) -> anyhow::Result<u8> {
        match self {
            Command::Describe(a) => commands::describe::run(a),
            Command::Embed(a) => commands::embed::run(a),
            Command::Bench(a) => commands::bench::run(a),
            Command::Quantize(a) => commands::quantize::run(a),
        }
    }
}
