//! Arguments shared by every command that loads the model, and the loading itself.

use std::path::PathBuf;

use anyhow::Context;

use crate::exit::{self, WithExit};
use crate::model::{FastVlm, Precision};

/// Which model to load, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model directory: a FastVLM checkpoint in Apple's layout (e.g. a download of
    /// apple/FastVLM-0.5B) or in the transformers `fast_vlm` layout. Defaults to $SCENESAY_MODEL.
    #[arg(long, value_name = "DIR", env = "SCENESAY_MODEL")]
    pub model: Option<PathBuf>,

    /// Weight precision of the language model (the image encoder always computes in f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
}

impl ModelArgs {
    /// The model directory to use.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        match &self.model {
            Some(p) => Ok(p.clone()),
            None => Err(anyhow::anyhow!(
                "no model given: pass --model DIR (a FastVLM checkpoint directory, e.g. from \
                 `hf download apple/FastVLM-0.5B --local-dir DIR`) or set SCENESAY_MODEL"
            ))
            .exit_code(exit::MODEL_UNAVAILABLE),
        }
    }

    /// Loads the model, reporting progress on stderr.
    pub fn load(&self) -> anyhow::Result<FastVlm> {
        let dir = self.resolve()?;
        tracing::info!("loading model from {}", dir.display());
        let t = std::time::Instant::now();
        let m = FastVlm::load(&dir, self.dtype)
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
