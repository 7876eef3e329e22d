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
    /// Get a FastVLM checkpoint (`model fetch`) and see which ones are here (`model list`).
    Model(commands::model::Args),
    /// Describe every image under files and folders: one JSON line per image, resumable.
    Batch(commands::batch::Args),
    /// List the photos that show something ("a beach"), scored by asking the model yes or no.
    Search(commands::search::Args),
    /// Write an audio-description track (SRT / WebVTT subtitles, JSON lines) for a video or a
    /// picture sequence: the daemon's scene watch, at the media's own pace.
    Narrate(commands::narrate::Args),
    /// Run the narration daemon: watch the camera, say when the scene changes, describe in detail
    /// on a hotkey, SIGUSR1 or `scenesay ctl describe`.
    Run(commands::run::Args),
    /// Control the running daemon: describe, ask, repeat, pause, resume, status, stop.
    Ctl(commands::ctl::Args),
    /// Check the configuration, model, camera, speech, hotkey and socket; say what to fix.
    Check(commands::check::Args),
    /// Install, remove or inspect scenesay as a systemd user service (`scenesay service install`
    /// writes the unit with this binary's path, reloads systemd and starts it).
    Service(commands::service::Args),
}

impl Command {
    pub fn run(self) -> anyhow::Result<u8> {
        match self {
            Command::Describe(a) => commands::describe::run(a),
            Command::Embed(a) => commands::embed::run(a),
            Command::Bench(a) => commands::bench::run(a),
            Command::Quantize(a) => commands::quantize::run(a),
            Command::Model(a) => commands::model::run(a),
            Command::Batch(a) => commands::batch::run(a),
            Command::Search(a) => commands::search::run(a),
            Command::Narrate(a) => commands::narrate::run(a),
            Command::Run(a) => commands::run::run(a),
            Command::Ctl(a) => commands::ctl::run(a),
            Command::Check(a) => commands::check::run(a),
            Command::Service(a) => commands::service::run(a),
        }
    }
}
