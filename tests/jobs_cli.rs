//! The everyday jobs through the real binary on the tiny fixture checkpoints: `batch` (bad files,
//! exit codes, resuming after a crash), `search` (a score per photo, the threshold), `model fetch`
//! offline (a clear message, nothing written), `--model` as a repository id in the cache, and the
//! configuration's `[model] path` as the default model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const PARTIAL: i32 = 3;

/// The binary with a clean model environment: no $SCENESAY_MODEL, a private Hugging Face home, and
/// a hub address that refuses connections at once (never the outside network).
fn scenesay(hf_home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scenesay"));
    c.env_remove("SCENESAY_MODEL")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("RUST_LOG")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env("HF_HOME", hf_home)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        // no configuration file of the user: tests that need one write it here
        .env("XDG_CONFIG_HOME", hf_home.join("config"));
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("the binary runs");
    (
        status.code().expect("exited normally"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn name_of(v: &Value) -> String {
    Path::new(v["path"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A folder of photos: three real images (one without an extension, in a subfolder), a truncated
/// PNG, a text file named .jpg, and a notes file that is not an image at all.
fn photo_folder() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let imgs = fixtures().join("images");
    std::fs::copy(
        imgs.join("landscape_640x480.png"),
        d.path().join("beach.png"),
    )
    .unwrap();
    std::fs::copy(imgs.join("text_1024x1024.png"), d.path().join("sign.png")).unwrap();
    std::fs::create_dir(d.path().join("2024")).unwrap();
    std::fs::copy(
        imgs.join("portrait_300x500.png"),
        d.path().join("2024/IMG_0042"),
    )
    .unwrap();
    let png = std::fs::read(imgs.join("text_1024x1024.png")).unwrap();
    std::fs::write(d.path().join("broken.png"), &png[..png.len() / 3]).unwrap();
    std::fs::write(d.path().join("fake.jpg"), b"this is not a jpeg").unwrap();
    std::fs::write(d.path().join("notes.txt"), b"shopping list").unwrap();
    d
}

fn batch(hf: &Path, layout: &str, out: &Path, paths: &[&Path]) -> Command {
    let mut c = scenesay(hf);
    c.arg("batch")
        .arg("--model")
        .arg(model_dir(layout))
        .args(["--resolution", "256", "--max-tokens", "4", "--out"])
        .arg(out)
        .args(paths);
    c
}

#[test]
fn batch_describes_the_rest_reports_bad_files_and_resumes() {
    let hf = tempfile::tempdir().unwrap();
    let photos = photo_folder();
    let out = photos.path().join("descriptions.jsonl");
    let (code, stdout, stderr) = run(&mut batch(hf.path(), "hf", &out, &[photos.path()]));
    assert_eq!(code, PARTIAL, "{stderr}");
    assert!(
        stdout.is_empty(),
        "with --out nothing goes to stdout: {stdout}"
    );
    let lines = json_lines(&std::fs::read_to_string(&out).unwrap());
    let mut described: Vec<String> = lines
        .iter()
        .filter(|l| l.get("text").is_some())
        .map(name_of)
        .collect();
    described.sort();
    assert_eq!(
        described,
        ["IMG_0042", "beach.png", "sign.png"],
        "{lines:?}"
    );
    let mut errors: Vec<String> = lines
        .iter()
        .filter(|l| l.get("error").is_some())
        .map(name_of)
        .collect();
    errors.sort();
    assert_eq!(errors, ["broken.png", "fake.jpg"], "{lines:?}");
    for l in &lines {
        if let Some(e) = l.get("error") {
            assert!(e.as_str().unwrap().contains(&name_of(l)), "{l}");
            assert!(stderr.contains(&name_of(l)), "{stderr}");
        } else {
            assert!(l["text"].is_string());
            assert_eq!(l["resolution"], 256);
            assert_eq!(l["prompt"], "Describe the image.");
            assert!(l["tokens"].as_u64().unwrap() <= 4);
            assert!(l["timings"]["vision_ms"].as_f64().unwrap() > 0.0);
            assert!(l["timings"]["image_ms"].as_f64().is_some());
        }
    }
    let sign = lines.iter().find(|l| name_of(l) == "sign.png").unwrap();
    assert_eq!(
        (sign["width"].as_u64(), sign["height"].as_u64()),
        (Some(1024), Some(1024))
    );

    // A crash while writing: the last description is torn in half. Fix the bad files, add a photo.
    let text = std::fs::read_to_string(&out).unwrap();
    let last = text.trim_end().rsplit('\n').next().unwrap();
    let last_v: Value = serde_json::from_str(last).unwrap();
    let torn_name = name_of(&last_v);
    assert!(
        last_v.get("text").is_some(),
        "the last line is a description"
    );
    let torn = &text[..text.len() - last.len() / 2 - 1];
    std::fs::write(&out, torn).unwrap();
    std::fs::remove_file(photos.path().join("broken.png")).unwrap();
    std::fs::remove_file(photos.path().join("fake.jpg")).unwrap();
    std::fs::copy(
        fixtures().join("images/portrait_300x500.png"),
        photos.path().join("new.png"),
    )
    .unwrap();

    let (code, _, stderr) = run(&mut batch(hf.path(), "hf", &out, &[photos.path()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("2 of 4 image(s) already described"),
        "{stderr}"
    );
    let lines = json_lines(&std::fs::read_to_string(&out).unwrap());
    let done: Vec<String> = lines
        .iter()
        .filter(|l| l.get("text").is_some())
        .map(name_of)
        .collect();
    // each image described exactly once: the torn one again, the new one, nothing else twice
    let mut sorted = done.clone();
    sorted.sort();
    let mut expect = vec!["IMG_0042", "beach.png", "new.png", "sign.png"];
    expect.sort();
    assert_eq!(sorted, expect, "{lines:?}");
    assert!(done[done.len() - 2..].contains(&torn_name), "{done:?}");

    // a third run has nothing to do and does not load the model
    let (code, _, stderr) = run(&mut batch(hf.path(), "hf", &out, &[photos.path()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("nothing left to describe"), "{stderr}");
    assert_eq!(
        json_lines(&std::fs::read_to_string(&out).unwrap()).len(),
        lines.len()
    );
}

#[test]
fn batch_without_out_streams_lines_and_names_explicit_non_images() {
    let hf = tempfile::tempdir().unwrap();
    let photos = photo_folder();
    let mut c = scenesay(hf.path());
    c.arg("batch")
        .arg("--model")
        .arg(model_dir("apple"))
        .args(["--resolution", "256", "--max-tokens", "2", "--jobs", "0"])
        .arg(photos.path().join("beach.png"))
        .arg(photos.path().join("notes.txt"))
        .arg(photos.path().join("missing.png"));
    let (code, stdout, stderr) = run(&mut c);
    assert_eq!(code, PARTIAL, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 3, "{stdout}");
    let by_name = |n: &str| lines.iter().find(|l| name_of(l) == n).unwrap();
    assert!(by_name("beach.png")["text"].is_string());
    assert!(by_name("notes.txt")["error"]
        .as_str()
        .unwrap()
        .contains("not a readable image"));
    assert!(by_name("missing.png")["error"]
        .as_str()
        .unwrap()
        .contains("cannot open"));

    // nothing but failures: a plain failure
    let mut c = scenesay(hf.path());
    c.arg("batch")
        .arg("--model")
        .arg(model_dir("apple"))
        .arg(photos.path().join("fake.jpg"));
    assert_eq!(run(&mut c).0, 1);
}

fn search(hf: &Path, extra: &[&str], query: &str, paths: &[&Path]) -> (i32, String, String) {
    let mut c = scenesay(hf);
    c.arg("search")
        .arg("--model")
        .arg(model_dir("hf"))
        .args(extra)
        .arg(query)
        .args(paths);
    run(&mut c)
}

#[test]
fn search_scores_every_photo_and_respects_the_threshold() {
    let hf = tempfile::tempdir().unwrap();
    let photos = photo_folder();
    let (code, stdout, stderr) = search(hf.path(), &["--json"], "a beach", &[photos.path()]);
    assert_eq!(code, PARTIAL, "the two bad files: {stderr}");
    let lines = json_lines(&stdout);
    let mut scores: Vec<(String, f64)> = lines
        .iter()
        .filter(|l| l.get("score").is_some())
        .map(|l| (name_of(l), l["score"].as_f64().unwrap()))
        .collect();
    scores.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = scores.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["IMG_0042", "beach.png", "sign.png"], "{stdout}");
    for l in lines.iter().filter(|l| l.get("score").is_some()) {
        let s = l["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s), "{l}");
        let (py, pn) = (l["p_yes"].as_f64().unwrap(), l["p_no"].as_f64().unwrap());
        assert!(py > 0.0 && pn > 0.0 && py + pn <= 1.0, "{l}");
        assert!((s - py / (py + pn)).abs() < 1e-9, "{l}");
        assert_eq!(l["match"].as_bool().unwrap(), s >= 0.5, "{l}");
    }
    assert_eq!(lines.iter().filter(|l| l.get("error").is_some()).count(), 2);

    // the same scores whatever the decode-ahead setting
    let (_, stdout0, _) = search(
        hf.path(),
        &["--json", "--jobs", "0"],
        "a beach",
        &[photos.path()],
    );
    let untimed = |v: Vec<Value>| {
        v.into_iter()
            .map(|mut l| {
                l.as_object_mut().unwrap().remove("timings");
                l
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(untimed(json_lines(&stdout0)), untimed(lines.clone()));

    // a threshold between the lowest and the highest score splits the photos
    let lo = scores.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    let hi = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    assert!(
        hi > lo,
        "the photos should not all score the same: {scores:?}"
    );
    let t = (lo + hi) / 2.0;
    let good: Vec<PathBuf> = ["beach.png", "sign.png", "2024/IMG_0042"]
        .iter()
        .map(|n| photos.path().join(n))
        .collect();
    let good_refs: Vec<&Path> = good.iter().map(|p| p.as_path()).collect();
    let (code, stdout, stderr) = search(
        hf.path(),
        &["--threshold", &t.to_string()],
        "a beach",
        &good_refs,
    );
    assert_eq!(code, 0, "{stderr}");
    let listed: Vec<(f64, String)> = stdout
        .lines()
        .map(|l| {
            let (s, p) = l.split_once('\t').unwrap();
            (
                s.parse().unwrap(),
                Path::new(p)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect();
    let mut expect: Vec<&(String, f64)> = scores.iter().filter(|(_, s)| *s >= t).collect();
    expect.sort_by(|a, b| b.1.total_cmp(&a.1));
    assert!(!expect.is_empty() && expect.len() < scores.len());
    assert_eq!(
        listed.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
        expect.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "{stdout}"
    );
    for ((s, _), (_, want)) in listed.iter().zip(&expect) {
        assert!((s - want).abs() < 5e-4, "printed with 3 decimals");
    }
    assert!(
        stderr.contains(&format!("{} of 3 photo(s)", expect.len())),
        "{stderr}"
    );

    // nothing passes a threshold of 1 unless a score is exactly 1; bad thresholds are usage errors
    let (code, stdout, _) = search(hf.path(), &["--threshold", "1"], "a beach", &good_refs);
    assert_eq!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        search(hf.path(), &["--threshold", "1.5"], "a beach", &good_refs).0,
        2
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.clone());
            if p.is_dir() {
                out.extend(files_under(&p));
            }
        }
    }
    out
}

#[test]
fn model_fetch_offline_explains_and_writes_nothing() {
    let hf = tempfile::tempdir().unwrap();
    for args in [
        vec!["model", "fetch"],
        vec!["model", "fetch", "apple/FastVLM-7B", "--revision", "main"],
    ] {
        let (code, stdout, stderr) = run(scenesay(hf.path()).args(&args));
        assert_ne!(code, 0, "{stderr}");
        assert_eq!(code, 69, "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.contains("cannot reach the model hub at http://127.0.0.1:9"),
            "{stderr}"
        );
        assert!(stderr.contains("--model DIR"), "{stderr}");
        let repo_folder = if args.len() > 2 {
            "models--apple--FastVLM-7B"
        } else {
            "models--apple--FastVLM-0.5B"
        };
        let manual = hf
            .path()
            .join("hub")
            .join(repo_folder)
            .join("snapshots/manual");
        assert!(stderr.contains(&manual.display().to_string()), "{stderr}");
        assert_eq!(
            files_under(hf.path()),
            Vec::<PathBuf>::new(),
            "the cache stays untouched"
        );
    }
    // HF_HUB_OFFLINE: no connection attempted, same advice
    let (code, _, stderr) = run(scenesay(hf.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["model", "fetch"]));
    assert_eq!(code, 69);
    assert!(stderr.contains("HF_HUB_OFFLINE"), "{stderr}");
    // a malformed repository id is a usage error
    let (code, _, stderr) = run(scenesay(hf.path()).args(["model", "fetch", "not/a/repo"]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(files_under(hf.path()), Vec::<PathBuf>::new());
}

/// Puts a fixture checkpoint into the cache under `hf` as `repo`, as the manual-install advice says.
fn install_manually(hf: &Path, repo: &str, layout: &str) -> PathBuf {
    let folder = hf
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let snap = folder.join("snapshots/manual");
    std::fs::create_dir_all(&snap).unwrap();
    for e in std::fs::read_dir(model_dir(layout)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), "manual").unwrap();
    snap
}

#[test]
fn model_resolves_as_a_repository_id_in_the_cache() {
    let hf = tempfile::tempdir().unwrap();
    let img = fixtures().join("images/landscape_640x480.png");
    let describe = |model: Option<&str>| {
        let mut c = scenesay(hf.path());
        c.arg("describe");
        if let Some(m) = model {
            c.args(["--model", m]);
        }
        c.args(["--resolution", "256", "--max-tokens", "2", "--json"])
            .arg(&img);
        run(&mut c)
    };
    // not there yet: clear errors that name the fix
    let (code, _, stderr) = describe(Some("someone/FastVLM-tiny"));
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains("scenesay model fetch someone/FastVLM-tiny"),
        "{stderr}"
    );
    let (code, _, stderr) = describe(None);
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("scenesay model fetch"), "{stderr}");

    install_manually(hf.path(), "someone/FastVLM-tiny", "hf");
    let (code, stdout, stderr) = describe(Some("someone/FastVLM-tiny"));
    assert_eq!(code, 0, "{stderr}");
    assert!(json_lines(&stdout)[0]["text"].is_string());

    // $SCENESAY_MODEL takes a repository id too
    let (code, _, stderr) = run(scenesay(hf.path())
        .env("SCENESAY_MODEL", "someone/FastVLM-tiny")
        .args(["describe", "--resolution", "256", "--max-tokens", "2"])
        .arg(&img));
    assert_eq!(code, 0, "{stderr}");

    // the default checkpoint, once in the cache, is used when no model is named
    let snap = install_manually(hf.path(), "apple/FastVLM-0.5B", "apple");
    let (code, _, stderr) = describe(None);
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = run(scenesay(hf.path()).args(["model", "list"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("someone/FastVLM-tiny"), "{stdout}");
    assert!(stdout.contains("apple layout"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "used when no --model is given: {}",
            snap.display()
        )),
        "{stdout}"
    );

    // a broken download is reported as such, with the fix
    std::fs::remove_file(snap.join("model.safetensors")).unwrap();
    let (code, _, stderr) = describe(None);
    assert_eq!(code, 69);
    assert!(
        stderr.contains("incomplete: missing model.safetensors")
            || stderr.contains("is incomplete"),
        "{stderr}"
    );
    let (_, stdout, _) = run(scenesay(hf.path()).args(["model", "list"]));
    assert!(
        stdout.contains("incomplete (missing model.safetensors"),
        "{stdout}"
    );
}

#[test]
fn the_configured_model_is_the_default_and_a_broken_configuration_matters_only_when_read() {
    let hf = tempfile::tempdir().unwrap();
    let img = fixtures().join("images/landscape_640x480.png");
    let cfg_dir = hf.path().join("config/scenesay");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    // a relative `[model] path` is relative to the configuration file's folder
    std::os::unix::fs::symlink(model_dir("apple"), cfg_dir.join("tiny")).unwrap();
    let cfg = cfg_dir.join("config.toml");
    std::fs::write(&cfg, "[model]\npath = \"tiny\"\n").unwrap();
    let describe = |extra: &[&str]| {
        let mut c = scenesay(hf.path());
        c.arg("describe")
            .args(extra)
            .args(["--resolution", "256", "--max-tokens", "2", "--json"])
            .arg(&img);
        run(&mut c)
    };
    let (code, stdout, stderr) = describe(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(json_lines(&stdout)[0]["text"].is_string());
    let (code, stdout, stderr) = run(scenesay(hf.path()).args(["model", "list"]));
    assert_eq!(code, 0, "{stderr}");
    let configured = cfg_dir.join("tiny").display().to_string();
    assert!(
        stdout.contains(&format!("[model] path: {configured} (")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("used when no --model is given: {configured}")),
        "{stdout}"
    );

    // --config FILE instead of the search path
    let other = hf.path().join("other.toml");
    std::fs::write(&other, "[model]\npath = \"/nonexistent/model\"\n").unwrap();
    let (code, _, stderr) = describe(&["--config", other.to_str().unwrap()]);
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("/nonexistent/model"), "{stderr}");

    // a broken configuration: its error where it is read (no model named) …
    std::fs::write(&cfg, "[model]\npath = \"tiny\"\ndtype = \"f8\"\n").unwrap();
    let (code, _, stderr) = describe(&[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:9: unknown variant `f8`", cfg.display())),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(scenesay(hf.path()).args(["model", "list"]));
    assert_eq!(code, 78, "{stderr}");
    assert!(stdout.contains("model cache:"), "still listed: {stdout}");
    assert!(
        stdout.contains("unknown until the configuration is fixed"),
        "{stdout}"
    );
    assert!(stderr.contains(":3:9:"), "{stderr}");
    // … and no obstacle when a model is named
    let model = model_dir("apple");
    let (code, _, stderr) = describe(&["--model", model.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(scenesay(hf.path())
        .env("SCENESAY_MODEL", &model)
        .args(["batch", "--resolution", "256", "--max-tokens", "2"])
        .arg(&img));
    assert_eq!(code, 0, "{stderr}");
    // narrate reads `[scene]` and `[describe]` from it, so there it is an error either way
    let (code, _, stderr) = run(scenesay(hf.path())
        .args(["narrate", "--model", model.to_str().unwrap()])
        .arg(&img));
    assert_eq!(code, 78, "{stderr}");
}
