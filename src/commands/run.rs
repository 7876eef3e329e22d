//! `scenesay run`: the narration daemon (camera → scene watch → speech), until Ctrl-C, SIGTERM or
//! `scenesay ctl stop`.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::{Config, SpeechBackend};
use crate::daemon::{self, Shutdown, Stopped};
use crate::describer::Describer;
use crate::exit::{self, WithExit};
use crate::model::FastVlm;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file. Default: $XDG_CONFIG_HOME/scenesay/config.toml (~/.config/…), then
    /// /etc/scenesay/config.toml, else built-in defaults. `config.toml` in the source tree documents
    /// every key.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The model: a checkpoint directory or a repository id in the Hugging Face cache (as for
    /// `scenesay describe`). Default: $SCENESAY_MODEL, else the configuration's `[model] path`,
    /// else apple/FastVLM-0.5B from the cache (`scenesay model fetch`).
    #[arg(long, value_name = "DIR|REPO", env = "SCENESAY_MODEL")]
    pub model: Option<String>,

    /// Speech backend, instead of the configuration's `[speech] backend`.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub speech: Option<SpeechBackend>,
}

/// Loads the configuration named on the command line (or found on the search path), with a
/// named exit code for errors.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<(Config, Option<PathBuf>)> {
    Config::load(path).exit_code(exit::CONFIG)
}

/// Loads the model for the daemon: checks the tokenizer and the configured resolutions.
pub fn load_model(dir: &std::path::Path, config: &Config) -> anyhow::Result<FastVlm> {
    let t = std::time::Instant::now();
    let mut m = FastVlm::load(dir, config.model.dtype)
        .with_context(|| format!("cannot load the model in {}", dir.display()))
        .exit_code(exit::MODEL_UNAVAILABLE)?;
    if m.tokenizer().is_none() {
        return Err(anyhow::anyhow!(
            "{} has no tokenizer (tokenizer.json, or vocab.json + merges.txt): the model cannot write descriptions",
            dir.display()
        ))
        .exit_code(exit::MODEL_UNAVAILABLE);
    }
    for (key, r) in [
        ("scene.resolution", config.scene.resolution),
        (
            "describe.detail_resolution",
            config.describe.detail_resolution,
        ),
    ] {
        m.check_resolution(r)
            .with_context(|| format!("`{key}` does not suit this model"))
            .exit_code(exit::CONFIG)?;
    }
    m.describe_params.repetition_penalty = config.describe.repetition_penalty as f32;
    tracing::info!(
        "model {} loaded in {:.1} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// The model directory to use: `--model` / $SCENESAY_MODEL (a directory or a cached repository),
/// else `[model] path`, else apple/FastVLM-0.5B from the cache.
pub fn model_dir(config: &Config, cli: Option<&str>) -> anyhow::Result<PathBuf> {
    crate::model_store::resolve_model(cli, config.model_dir().as_deref())
        .exit_code(exit::MODEL_UNAVAILABLE)
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    // before the first frame exists: no core dump may ever hold one
    if let Err(e) = daemon::forbid_core_dumps() {
        tracing::warn!("cannot turn core dumps off: {e}");
    }
    let (mut config, path) = load_config(a.config.as_deref())?;
    match &path {
        Some(p) => tracing::info!("configuration: {}", p.display()),
        None => tracing::info!("no configuration file found; using the built-in defaults"),
    }
    if let Some(b) = a.speech {
        config.speech.backend = b;
    }
    let dir = model_dir(&config, a.model.as_deref())?;
    let shutdown = Shutdown::new();
    let tx = shutdown.tx.clone();
    let asked = crate::signals::Flag::new();
    ctrlc::set_handler(move || {
        if asked.is_set() {
            // a second Ctrl-C: the user does not want to wait
            std::process::exit(130);
        }
        asked.set();
        let _ = tx.try_send(());
    })
    .context("cannot install the SIGINT/SIGTERM handler")?;
    let cfg = config.clone();
    let stopped = daemon::run(
        &config,
        move || Ok(Box::new(load_model(&dir, &cfg)?) as Box<dyn Describer>),
        shutdown,
    )?;
    match stopped {
        Stopped::Requested => Ok(exit::OK),
        Stopped::Failed(why) => Err(anyhow::anyhow!(why)).exit_code(exit::INTERNAL),
    }
}
