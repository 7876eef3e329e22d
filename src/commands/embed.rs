//! `scenesay embed`: writes `image_features` (encoder output, before the projector),
//! `projector_output` and `embedding` (pooled, L2-normalised: what the daemon compares) to a
//! safetensors file.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{Device, Tensor};

use super::model_args::{open_image, ModelArgs};
use crate::exit::{self, WithExit};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Square side the image is resized to (a multiple of 64); 256 is what the daemon watches with.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub resolution: u32,

    /// Output file (safetensors).
    #[arg(long, value_name = "FILE.safetensors")]
    pub out: PathBuf,

    /// The image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let img = open_image(&a.image).exit_code(exit::NO_INPUT)?;
    let model = a.model.load()?;
    model
        .check_resolution(a.resolution)
        .exit_code(exit::USAGE)?;
    let e = model.scene_embedding(&img, a.resolution)?;
    let n = e.embedding.len();
    let tensors: HashMap<String, Tensor> = [
        ("image_features".to_string(), e.image_features),
        ("projector_output".to_string(), e.projector_output),
        (
            "embedding".to_string(),
            Tensor::from_vec(e.embedding, n, &Device::Cpu)?,
        ),
    ]
    .into();
    // write next to the target, then rename: never a half-written file under the final name
    let tmp = a.out.with_extension("safetensors.partial");
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!("wrote {}", a.out.display());
    Ok(exit::OK)
}
