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
