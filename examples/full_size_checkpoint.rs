//! Writes a checkpoint of random weights with the real shapes of FastVLM-0.5B (the names, shapes and
//! dtypes of tests/fixtures/full-size/fastvlm-0.5b-apple.json), with the tiny fixture's tokenizer,
//! for measuring the daemon at full size without the real weights:
//!
//! `cargo run --release --example full_size_checkpoint -- OUT_DIR [MANIFEST]`
//!
//! then e.g. `scenesay bench --idle 20 --model OUT_DIR`. The words such a model writes are
//! gibberish; its cost is the real model's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

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
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest)?)?;
    std::fs::write(out.join("config.json"), m["config"].to_string())?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut t = HashMap::new();
    for (name, spec) in m["tensors"].as_object().expect("a tensors object") {
        let shape: Vec<usize> = spec["shape"]
            .as_array()
            .expect("a shape")
            .iter()
            .map(|x| x.as_u64().unwrap_or(0) as usize)
            .collect();
        let n: usize = shape.iter().product();
        let ones = name.ends_with("running_var")
            || (name.ends_with("norm.weight") || name.ends_with("layernorm.weight"));
        let data: Vec<f32> = if ones {
            vec![1.0; n]
        } else {
            (0..n).map(|_| next() * 0.05).collect()
        };
        let dtype = match spec["dtype"].as_str().unwrap_or_default() {
            "BF16" => DType::BF16,
            "F16" => DType::F16,
            "F32" => DType::F32,
            "I64" => DType::I64,
            d => anyhow::bail!("{name}: unknown dtype {d}"),
        };
        let tensor = if dtype == DType::I64 {
            Tensor::zeros(shape, DType::I64, &Device::Cpu)?
        } else {
            Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)?
        };
        t.insert(name.clone(), tensor);
    }
    candle_core::safetensors::save(&t, out.join("model.safetensors"))?;
    // any Qwen2-style byte-level tokenizer works for a cost measurement: the tiny fixture's
    let tok = repo.join("tests/fixtures/tiny-fastvlm-apple");
    for f in [
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(tok.join(f), out.join(f))?;
    }
    println!("{}: {} tensors", out.display(), t.len());
    Ok(())
}
