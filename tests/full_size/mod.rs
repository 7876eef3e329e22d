//! Random weights with the real shapes of a FastVLM checkpoint (the names, shapes and dtypes a
//! manifest recorded from the reference's files), shared by tests/model_loading.rs and
//! examples/full_size_checkpoint.rs.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

/// Writes `config.json` and `model.safetensors` from `manifest` into `dir` (deterministic random
/// values; norms and BN variances 1), with the Qwen2 tokenizer files of `tokenizer`. Returns how
/// many tensors were written.
pub fn write_full_size(manifest: &Path, tokenizer: &Path, dir: &Path) -> anyhow::Result<usize> {
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(manifest)?)?;
    std::fs::write(dir.join("config.json"), m["config"].to_string())?;
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
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    // any Qwen2-style byte-level tokenizer works for a cost measurement or a smoke run
    for f in [
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(tokenizer.join(f), dir.join(f))?;
    }
    Ok(t.len())
}
