//! `scenesay describe`: describe images, streaming text to stdout (or one JSON line per image).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::model_args::{open_image, ModelArgs};
use crate::describer::Timings;
use crate::exit;
use crate::model::{GenerationParams, Sampling};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// What to ask about each image.
    #[arg(long, default_value = "Describe the image.")]
    pub prompt: String,

    /// Square side the image is resized to, a multiple of 64 (256 → 16 image tokens, 1024 → 256).
    /// Default: the model's native resolution (1024 for the released models).
    #[arg(long, value_name = "N")]
    pub resolution: Option<u32>,

    /// Most tokens to generate per image.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,

    /// Always pick the most likely token (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "seed"])]
    pub greedy: bool,

    /// Sample with this temperature (> 0) instead of greedy decoding.
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,

    /// Nucleus sampling: keep the most likely tokens up to this total probability (with --temperature).
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.9,
        requires = "temperature"
    )]
    pub top_p: f64,

    /// Random seed for sampling (same seed, same output).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 299792458,
        requires = "temperature"
    )]
    pub seed: u64,

    /// Penalise recently generated tokens (1.0 = off; 1.1 is a mild setting).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub repetition_penalty: f32,

    /// Keep generating past the end-of-turn token, up to --max-tokens.
    #[arg(long)]
    pub ignore_eos: bool,

    /// Print one JSON object per image (image, text, token_ids, timings) instead of plain text.
    #[arg(long)]
    pub json: bool,

    /// Image files to describe.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    image: String,
    text: &'a str,
    token_ids: &'a [u32],
    prompt_tokens: usize,
    resolution: u32,
    cancelled: bool,
    timings: &'a Timings,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let sampling = match a.temperature {
        Some(temperature) if !a.greedy => Sampling::Sample {
            temperature,
            top_p: a.top_p,
            seed: a.seed,
        },
        _ => Sampling::Greedy,
    };
    let params = GenerationParams {
        max_tokens: a.max_tokens,
        sampling,
        repetition_penalty: a.repetition_penalty,
        ignore_eos: a.ignore_eos,
        ..Default::default()
    };
    params
        .validate()
        .map_err(|e| exit::Exit::new(exit::USAGE, e))?;
    let mut model = a.model.load()?;
    let resolution = a.resolution.unwrap_or(model.config.native_resolution);
    model
        .check_resolution(resolution)
        .map_err(|e| exit::Exit::new(exit::USAGE, e))?;
    if model.tokenizer().is_none() {
        return Err(exit::Exit::new(
            exit::MODEL_UNAVAILABLE,
            anyhow::anyhow!(
                "{} has no tokenizer (tokenizer.json, or vocab.json + merges.txt): cannot write text",
                model.dir.display()
            ),
        )
        .into());
    }
    let cancel = crate::signals::interrupt_flag();
    let (mut ok, mut failed) = (0usize, 0usize);
    let stdout = std::io::stdout();
    for path in &a.images {
        if cancel.is_set() {
            break;
        }
        let img = match open_image(path) {
            Ok(i) => i,
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
                if a.json {
                    let line = serde_json::json!({"image": path.display().to_string(), "error": format!("{e:#}")});
                    writeln!(stdout.lock(), "{line}")?;
                }
                continue;
            }
        };
        if !a.json && a.images.len() > 1 {
            writeln!(stdout.lock(), "== {} ==", path.display())?;
        }
        let json = a.json;
        let mut on_text = |t: &str| {
            if !json {
                let mut o = stdout.lock();
                let _ = o.write_all(t.as_bytes());
                let _ = o.flush();
            }
        };
        let out = model
            .generate(&img, &a.prompt, resolution, &params, &mut on_text, &|| {
                cancel.is_set()
            })
            .with_context(|| format!("{}: description failed", path.display()));
        match out {
            Ok(g) => {
                ok += 1;
                let mut o = stdout.lock();
                if json {
                    let line = JsonLine {
                        image: path.display().to_string(),
                        text: &g.text,
                        token_ids: &g.token_ids,
                        prompt_tokens: g.prompt_tokens,
                        resolution,
                        cancelled: g.cancelled,
                        timings: &g.timings,
                    };
                    writeln!(o, "{}", serde_json::to_string(&line)?)?;
                } else {
                    writeln!(o)?;
                }
                o.flush()?;
                tracing::info!(
                    "{}: {} tokens, vision {:.0} ms, prefill {:.0} ms, first token {:.0} ms, {:.1} tokens/s",
                    path.display(),
                    g.token_ids.len(),
                    g.timings.vision_ms,
                    g.timings.prefill_ms,
                    g.timings.ttft_ms,
                    g.timings.decode_tokens_per_s
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(match (ok, failed) {
        (_, 0) => exit::OK,
        (0, _) => exit::FAILURE,
        _ => exit::PARTIAL,
    })
}
