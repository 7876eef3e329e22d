//! Writes a checkpoint of random weights with the real shapes of FastVLM-0.5B (the names, shapes and
//! dtypes of tests/fixtures/full-size/fastvlm-0.5b-apple.json), with the tiny fixture's tokenizer,
//! for measuring the daemon at full size without the real weights:
//!
//! `cargo run --release --example full_size_checkpoint -- OUT_DIR [MANIFEST]`
//!
//! then e.g. `scenesay bench --idle 20 --model OUT_DIR`. The words such a model writes are
//! gibberish; its cost is the real model's.

use std::path::{Path, PathBuf};

#[path = "../tests/full_size/mod.rs"]
mod full_size;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        anyhow::bail!("usage: full_size_checkpoint OUT_DIR [MANIFEST]");
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("tests/fixtures/full-size/fastvlm-0.5b-apple.json"));
    let out = Path::new(out);
    std::fs::create_dir_all(out)?;
    // the tiny fixture's tokenizer: any Qwen2-style byte-level one works for a cost measurement
    let n = full_size::write_full_size(
        &manifest,
        &repo.join("tests/fixtures/tiny-fastvlm-apple"),
        out,
    )?;
    println!("{}: {n} tensors", out.display());
    Ok(())
}
