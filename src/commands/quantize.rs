//! `scenesay quantize`: writes a copy of a checkpoint whose language-model matrices are quantized to
//! 8 or 4 bits (GGUF Q8_0 / Q4_1 in `model.gguf`); the engine loads the result directly.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exit::{self, WithExit};
use crate::model::quantize::{quantize_checkpoint, Bits};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint to quantize: a directory (Apple or transformers layout) or a repository id
    /// already in the Hugging Face cache. Default: $SCENESAY_MODEL, else apple/FastVLM-0.5B from
    /// the cache.
    #[arg(long, value_name = "DIR|REPO", env = "SCENESAY_MODEL")]
    pub model: Option<String>,

    /// Where to write the quantized checkpoint (a new or empty directory).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Bits per LLM weight: 8 (GGUF Q8_0 throughout) or 4 (GGUF Q4_1 for the MLP matrices, Q8_0
    /// for the attention projections and lm_head).
    /// The vision encoder, projector and embeddings are kept as they are.
    #[arg(long, value_name = "8|4", value_parser = clap::value_parser!(u32).range(4..=8))]
    pub bits: u32,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let bits = Bits::from_number(a.bits)
        .ok_or_else(|| anyhow::anyhow!("--bits must be 8 or 4, got {}", a.bits))
        .exit_code(exit::USAGE)?;
    let src = crate::model_store::resolve_model(a.model.as_deref(), None)
        .exit_code(exit::MODEL_UNAVAILABLE)?;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("quantize [{bar:30}] {pos}/{len} matrices ({elapsed})")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let report = quantize_checkpoint(&src, &a.out, bits, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("cannot quantize {} into {}", src.display(), a.out.display()))
    .exit_code(exit::MODEL_UNAVAILABLE)?;
    bar.finish_and_clear();
    let formats: Vec<String> = report
        .formats
        .iter()
        .map(|(f, n)| format!("{n} × {f}"))
        .collect();
    eprintln!(
        "wrote {}: {} matrices ({:.0} M weights: {}) in {} ({:.0} MB), the rest in model.safetensors ({:.0} MB)",
        a.out.display(),
        report.quantized,
        report.quantized_params as f64 / 1e6,
        formats.join(", "),
        crate::model::weights::GGUF_FILE,
        report.gguf_bytes as f64 / 1e6,
        report.safetensors_bytes as f64 / 1e6
    );
    eprintln!(
        "the copy is marked as scenesay's own (model type `{}`): transformers and Apple's code refuse it",
        crate::model::quantize::QUANTIZED_MODEL_TYPE
    );
    Ok(exit::OK)
}
