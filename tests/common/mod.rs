//! Shared helpers for the integration tests: fixture paths, golden tensors, error measures.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn model_dir(layout: &str) -> PathBuf {
    fixtures().join(format!("tiny-fastvlm-{layout}"))
}

pub fn index() -> Value {
    let text = std::fs::read_to_string(fixtures().join("goldens/index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The golden tensors of one case (e.g. `landscape_640x480_r256`).
pub fn golden(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("goldens").join(file), &Device::Cpu).unwrap()
}

pub fn load_image(rel_to_goldens: &str) -> image::RgbImage {
    let p = fixtures().join("goldens").join(rel_to_goldens);
    image::open(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .to_rgb8()
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// max |a − b| / max |b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f32::max).max(1e-12);
    max_abs_diff(a, b) / scale
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Copies a fixture checkpoint into a temporary directory that a test may then break.
pub fn copy_model(layout: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(model_dir(layout)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        let mut perm = std::fs::metadata(dir.path().join(e.file_name()))
            .unwrap()
            .permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(dir.path().join(e.file_name()), perm).unwrap();
    }
    dir
}

/// Rewrites the weights of a copied checkpoint so that the model predicts `token` at every
/// position, whatever the picture and prompt: the last layer's value projection is zeroed and its
/// bias made huge, so attention adds one constant vector `c = o_proj · b_v` to every position's
/// residual stream and dominates it; an untied `lm_head` whose only non-zero row is `token`'s,
/// along `norm.weight ⊙ c`, then gives `token` the only positive logit (every other logit is 0).
pub fn force_token(dir: &std::path::Path, token: u32) {
    let cfg = scenesay::model::FastVlmConfig::from_dir(dir).unwrap();
    let t = &cfg.text;
    let prefix = match cfg.layout {
        scenesay::model::Layout::Apple => "model.",
        scenesay::model::Layout::Hf => "model.language_model.",
    };
    let path = dir.join("model.safetensors");
    let mut w = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let (h, hd) = (t.hidden_size, t.head_dim);
    let (nh, nkv) = (t.num_attention_heads, t.num_key_value_heads);
    let last = format!("{prefix}layers.{}.self_attn", t.num_hidden_layers - 1);
    let bias = vec![1e6f32; nkv * hd];
    w.insert(
        format!("{last}.v_proj.weight"),
        Tensor::zeros((nkv * hd, h), DType::F32, &Device::Cpu).unwrap(),
    );
    w.insert(
        format!("{last}.v_proj.bias"),
        Tensor::from_vec(bias.clone(), nkv * hd, &Device::Cpu).unwrap(),
    );
    // every head's attention output is its key/value group's bias
    let group = nh / nkv;
    let a: Vec<f32> = (0..nh * hd)
        .map(|i| bias[(i / hd / group) * hd + i % hd])
        .collect();
    let o = flat(&w[&format!("{last}.o_proj.weight")]);
    let g = flat(&w[&format!("{prefix}norm.weight")]);
    let c: Vec<f32> = (0..h)
        .map(|r| {
            let dot: f64 = (0..nh * hd)
                .map(|j| o[r * nh * hd + j] as f64 * a[j] as f64)
                .sum();
            dot as f32 * g[r]
        })
        .collect();
    let norm = c.iter().map(|v| v * v).sum::<f32>().sqrt();
    let mut head = vec![0f32; t.vocab_size * h];
    for (i, v) in c.iter().enumerate() {
        head[token as usize * h + i] = v / norm;
    }
    w.insert(
        "lm_head.weight".into(),
        Tensor::from_vec(head, (t.vocab_size, h), &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&w, &path).unwrap();
}

/// Rewrites one key of a copied checkpoint's `config.json` (`None` removes it); `section` is
/// `""` for the top level or e.g. `"text_config"`.
pub fn set_config_key(dir: &std::path::Path, section: &str, key: &str, value: Option<Value>) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let obj = if section.is_empty() {
        v.as_object_mut().unwrap()
    } else {
        v[section].as_object_mut().unwrap()
    };
    match value {
        Some(x) => obj.insert(key.to_string(), x),
        None => obj.remove(key),
    };
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// The worst element of `a` against `b` on `|a − b| ≤ atol + rtol·|b|`: `(ratio, index)` where
/// `ratio = |a − b| / (atol + rtol·|b|)`, so ≤ 1 passes.
pub fn worst_close(a: &[f32], b: &[f32], rtol: f32, atol: f32) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (atol + rtol * y.abs()))
        .enumerate()
        .fold(
            (0.0, 0),
            |(w, wi), (i, r)| if r > w { (r, i) } else { (w, wi) },
        )
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` for every element, naming the worst one.
pub fn assert_close(a: &[f32], b: &[f32], rtol: f32, atol: f32, what: &str) {
    let (r, i) = worst_close(a, b, rtol, atol);
    assert!(
        r <= 1.0,
        "{what}: element {i} is {} against {} (|Δ| {:.3e} > {atol:.1e} + {rtol:.1e}·|b|)",
        a[i],
        b[i],
        (a[i] - b[i]).abs()
    );
}

/// max |b|.
pub fn max_abs(b: &[f32]) -> f32 {
    b.iter().fold(0.0, |m, v| m.max(v.abs()))
}
