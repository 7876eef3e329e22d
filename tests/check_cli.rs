//! `scenesay check` on the model: the weight files (present, complete, each as long as its header
//! says) and the model itself (every tensor's name and shape against config.json), one line each,
//! with what to do when something is wrong.

mod common;
mod support;

use std::path::Path;
use std::process::Command;

use candle_core::Device;

/// Runs `scenesay check` with a configuration like the daemon tests' (log speech, no hotkey, a
/// test pattern, socket and log in `dir`) and the model `model`; returns (exit code, stdout).
fn check(dir: &Path, model: Option<&Path>) -> (i32, String) {
    let cfg = dir.join("check.toml");
    let mut text = support::config_text(dir, "source = \"test-pattern\"", "");
    if model.is_none() {
        text = text.replace(
            &format!("path = \"{}\"", support::tiny_model().display()),
            "path = \"\"",
        );
    }
    std::fs::write(&cfg, text).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_scenesay"));
    c.args(["check", "--config"])
        .arg(&cfg)
        .env_remove("SCENESAY_MODEL")
        .env("HF_HUB_CACHE", dir.join("empty-cache"))
        .env("XDG_RUNTIME_DIR", dir);
    if let Some(m) = model {
        c.arg("--model").arg(m);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The line of `item` (and its advice line, if any).
fn line<'a>(text: &'a str, item: &str) -> &'a str {
    let start = text
        .lines()
        .position(|l| l.split_whitespace().nth(1) == Some(item))
        .unwrap_or_else(|| panic!("no {item} line: {text}"));
    let lines: Vec<&str> = text.lines().collect();
    let end = if lines
        .get(start + 1)
        .is_some_and(|l| l.trim_start().starts_with('→'))
    {
        start + 2
    } else {
        start + 1
    };
    let from = text.find(lines[start]).unwrap();
    let to = text.find(lines[end - 1]).unwrap() + lines[end - 1].len();
    &text[from..to]
}

#[test]
fn a_complete_model_is_ok_on_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = check(dir.path(), Some(&common::model_dir("apple")));
    assert_eq!(code, 0, "{text}");
    let weights = line(&text, "weights");
    assert!(weights.starts_with("OK"), "{weights}");
    assert!(
        weights.contains("1 weight file(s)") && weights.contains("none cut off"),
        "{weights}"
    );
    let model = line(&text, "model");
    assert!(
        model.starts_with("OK") && model.contains("every tensor's name and shape matches"),
        "{model}"
    );
    for item in [
        "config", "weights", "model", "source", "ffmpeg", "speech", "hotkey", "socket", "log",
    ] {
        assert!(line(&text, item).starts_with("OK"), "{item}: {text}");
    }
}

#[test]
fn a_cut_off_weight_file_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::copy_model("apple");
    let w = model.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 1000]).unwrap();
    let (code, text) = check(dir.path(), Some(model.path()));
    assert_eq!(code, 1, "{text}");
    let weights = line(&text, "weights");
    assert!(weights.starts_with("FAIL"), "{weights}");
    assert!(
        weights.contains(&format!(
            "model.safetensors: cut off: {} of {} bytes",
            bytes.len() - 1000,
            bytes.len()
        )),
        "{weights}"
    );
    assert!(
        weights.contains("→ download the checkpoint again"),
        "{weights}"
    );
    assert!(
        line(&text, "model").starts_with("FAIL  model     not loaded"),
        "{text}"
    );
    // the rest is still checked
    assert!(line(&text, "speech").starts_with("OK"), "{text}");
}

#[test]
fn a_misnamed_tensor_fails_the_model_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::copy_model("apple");
    let w = model.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
    let name = tensors
        .keys()
        .find(|k| k.starts_with("model.mm_projector"))
        .unwrap()
        .clone();
    let t = tensors.remove(&name).unwrap();
    tensors.insert(name.replace("mm_projector", "mm_projecter"), t);
    candle_core::safetensors::save(&tensors, &w).unwrap();
    let (code, text) = check(dir.path(), Some(model.path()));
    assert_eq!(code, 1, "{text}");
    assert!(
        line(&text, "weights").starts_with("OK"),
        "sizes are fine: {text}"
    );
    let m = line(&text, "model");
    assert!(m.starts_with("FAIL"), "{m}");
    assert!(m.contains(&name) || m.contains("mm_projecter"), "{m}");
    assert!(m.contains("→ point `[model] path`"), "{m}");
}

#[test]
fn no_model_at_all_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = check(dir.path(), None);
    assert_eq!(code, 1, "{text}");
    let m = line(&text, "model");
    assert!(m.starts_with("FAIL"), "{m}");
    assert!(m.contains("→ `scenesay model fetch`"), "{m}");
}
