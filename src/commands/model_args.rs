//! Arguments shared by every command that loads the model, and the loading itself.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exit::{self, WithExit};
use crate::model::{FastVlm, Precision};
use crate::model_store;

/// Which model to load, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// The model: a checkpoint directory (Apple's layout, e.g. a download of apple/FastVLM-0.5B, or
    /// the transformers `fast_vlm` layout), or a repository id such as apple/FastVLM-1.5B (or
    /// OWNER/NAME@REVISION) already in the Hugging Face cache (`scenesay model fetch` puts it
    /// there). Default: $SCENESAY_MODEL, else the configured `[model] path`, else
    /// apple/FastVLM-0.5B from the cache.
    #[arg(long, value_name = "DIR|REPO", env = "SCENESAY_MODEL")]
    pub model: Option<String>,

    /// Configuration file whose `[model] path` is the default model. Default: the one `scenesay
    /// run` uses ($XDG_CONFIG_HOME/scenesay/config.toml, then /etc/scenesay/config.toml). It is
    /// only read when no --model / $SCENESAY_MODEL is given.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Weight precision of the language model (the image encoder always computes in f32).
    /// Default: the configured `[model] dtype` when the configuration is read, else f32.
    #[arg(long, value_enum)]
    pub dtype: Option<Precision>,
}

impl ModelArgs {
    /// Whether a model is named on the command line or in $SCENESAY_MODEL.
    pub fn named(&self) -> bool {
        self.model.as_deref().is_some_and(|m| !m.is_empty())
    }

    /// The model directory to use: `--model` / $SCENESAY_MODEL, else the configuration's
    /// `[model] path`, else the default repository in the cache. The configuration is read only
    /// when no model is named, so a broken configuration file (exit code 78, naming the line and
    /// column) never stands in the way of `--model DIR`.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        if self.named() {
            return self.resolve_with(None);
        }
        let (config, _) = super::run::load_config(self.config.as_deref())?;
        self.resolve_with(config.model_dir().as_deref())
    }

    /// The model directory to use: `--model` / $SCENESAY_MODEL as a path, else as a repository id
    /// in the cache, else `config_default` (the configuration's `[model] path`), else the default
    /// repository in the cache.
    pub fn resolve_with(&self, config_default: Option<&Path>) -> anyhow::Result<PathBuf> {
        model_store::resolve_model(self.model.as_deref(), config_default)
            .exit_code(exit::MODEL_UNAVAILABLE)
    }

    /// Loads the model, reporting progress on stderr.
    pub fn load(&self) -> anyhow::Result<FastVlm> {
        self.load_from(&self.resolve()?)
    }

    /// The precision to load with: `--dtype`, else `[model] dtype` of the configuration when no
    /// model is named on the command line (the configuration is then read anyway), else f32.
    pub fn precision(&self) -> Precision {
        if let Some(p) = self.dtype {
            return p;
        }
        if self.named() {
            return Precision::F32;
        }
        match super::run::load_config(self.config.as_deref()) {
            Ok((config, _)) => config.model.dtype,
            Err(_) => Precision::F32,
        }
    }

    /// Loads the model in `dir` (from [`Self::resolve_with`]).
    pub fn load_from(&self, dir: &Path) -> anyhow::Result<FastVlm> {
        tracing::info!("loading model from {}", dir.display());
        let t = std::time::Instant::now();
        let m = FastVlm::load(dir, self.precision())
            .with_context(|| format!("cannot load the model in {}", dir.display()))
            .exit_code(exit::MODEL_UNAVAILABLE)?;
        tracing::info!(
            "model loaded in {:.2} s ({:?} layout)",
            t.elapsed().as_secs_f64(),
            m.config.layout
        );
        Ok(m)
    }
}

/// Opens an image file as RGB, naming the file in the error.
pub fn open_image(path: &std::path::Path) -> anyhow::Result<image::RgbImage> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable image", path.display()))?;
    Ok(img.to_rgb8())
}
