//! Configuration files as users meet them: the documented `config.toml` is exactly the defaults
//! and names every key; the demo configuration is valid; errors from the command line name the
//! file, line and column; `scenesay check` reports what works.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use scenesay::config::Config;
use support::*;

fn keys(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(t) = v {
        for (k, v) in t {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_table() {
                keys(&name, v, out);
            } else {
                out.insert(name);
            }
        }
    }
}

#[test]
fn config_toml_documents_every_key_with_its_default() {
    let path = repo().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed = Config::from_toml(&text, &path).unwrap();
    let mut defaults = Config::default();
    defaults.resolve_paths(Some(&repo()));
    assert_eq!(
        parsed, defaults,
        "config.toml must show the built-in defaults"
    );

    let mut documented = BTreeSet::new();
    keys(
        "",
        &toml::from_str::<toml::Value>(&text).unwrap(),
        &mut documented,
    );
    let mut all = BTreeSet::new();
    keys(
        "",
        &toml::Value::try_from(Config::default()).unwrap(),
        &mut all,
    );
    assert_eq!(
        documented, all,
        "every key, and only real keys, in config.toml"
    );
    // and each key has a comment above it or its section
    assert!(text.matches("\n# ").count() > all.len());
}

#[test]
fn the_demo_configuration_is_valid_and_complete() {
    let path = repo().join("assets/demo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::from_toml(&text, &path).unwrap();
    let model = c.model_dir().unwrap();
    assert!(model.join("config.json").is_file(), "{}", model.display());
    assert!(model.join("model.safetensors").is_file());
    let frames = scenesay::capture::images::list(&c.capture.path).unwrap();
    assert!(frames.len() >= 3, "{frames:?}");
    assert_eq!(c.speech.backend, scenesay::config::SpeechBackend::Log);
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("bad.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn run_reports_config_errors_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "[capture]\nsource = \"images\"\npath = \"x\"\n\n[speech]\nbackend = \"festival\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:6:11: unknown variant `festival`", p.display())),
        "{err}"
    );
    assert!(
        err.contains("`speech-dispatcher`, `tts`, `espeak-ng`, `log`"),
        "{err}"
    );

    let p = write(dir.path(), "[scene]\ncooldown = 3\n");
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:1: unknown field `cooldown`"), "{err}");
    assert!(err.contains("`cooldown_s`"), "{err}");

    let p = write(dir.path(), "[describe]\ndetail_resolution = 1000\n");
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:21: `describe.detail_resolution`: resolution 1000 is not allowed"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["run", "--config", "/nonexistent/scenesay.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/scenesay.toml"));
}

#[test]
fn run_without_a_model_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "[capture]\nsource = \"test-pattern\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["run", "--config"])
        .arg(&p)
        .env_remove("SCENESAY_MODEL")
        .env("HF_HUB_CACHE", dir.path().join("empty-cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no model given"), "{err}");
    assert!(err.contains("scenesay model fetch"), "{err}");
}

#[test]
fn check_reports_each_item() {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames(dir.path(), &[("1.png", "landscape_640x480.png")]);
    let good = config_text(
        dir.path(),
        &format!("source = \"images\"\npath = \"{}\"", frames.display()),
        "",
    );
    let p = dir.path().join("good.toml");
    std::fs::write(&p, &good).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["check", "--config"])
        .arg(&p)
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for item in [
        "config", "model", "source", "speech", "hotkey", "socket", "log",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("OK") && l.split_whitespace().nth(1) == Some(item)),
            "{item}: {text}"
        );
    }
    assert!(text.contains("first frame 640x480"), "{text}");

    // a camera that is not there: FAIL with advice, and a failing exit code
    let bad = good.replace(
        &format!("source = \"images\"\npath = \"{}\"", frames.display()),
        "source = \"camera\"\ndevice = \"/dev/video987\"",
    );
    std::fs::write(&p, &bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  source    camera /dev/video987"),
        "{text}"
    );
    assert!(text.contains("→ plug in a camera"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("OK    model")), "{text}");
}
