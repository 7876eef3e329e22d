//! End to end on the tiny fixture model, through the built daemon and `scenesay ctl`: watches
//! (`ctl watch`, `watch --list`, `unwatch`) and the visual memory (`ctl recall`, `recall --view`,
//! `forget`). The tiny model's random yes/no answers are made certain by rewriting its weights so
//! it always predicts the "Yes" (or the "No") token.

mod common;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use scenesay::jobs::yesno::AnswerTokens;
use scenesay::model::tokenizer::TextTokenizer;
use serde_json::Value;
use support::*;

const LANDSCAPE: &str = "landscape_640x480.png";
const TEXT: &str = "text_1024x1024.png";

/// The first "Yes" and "No" token ids of the tiny model's tokenizer.
fn answer_tokens() -> (u32, u32) {
    let tok = TextTokenizer::from_dir(&tiny_model()).unwrap();
    let a = AnswerTokens::from_encoder(|w| tok.encode(w)).unwrap();
    (a.yes[0], a.no[0])
}

/// A copy of the tiny model that always answers with `token`.
fn forced_model(token: u32) -> tempfile::TempDir {
    let d = common::copy_model("apple");
    common::force_token(d.path(), token);
    d
}

/// A configuration on `model` instead of the fixture model.
fn config_on(model: &Path, dir: &Path, capture: &str, extra: &str) -> String {
    let text = config_text(dir, capture, extra);
    let fixture = format!("path = \"{}\"", tiny_model().display());
    assert!(text.contains(&fixture));
    text.replace(&fixture, &format!("path = \"{}\"", model.display()))
}

fn ctl(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["ctl", "--socket"])
        .arg(&d.socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn watches(d: &Daemon) -> Vec<Value> {
    let r = d.request(r#"{"cmd":"watches"}"#);
    assert_eq!(r["reply"], "watches", "{r}");
    r["watches"].as_array().unwrap().clone()
}

fn notices(d: &Daemon) -> Vec<String> {
    of_kind(&d.records(), "notice")
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect()
}

/// A still view (one picture, again and again) for watching.
fn still_view(dir: &Path) -> String {
    let frames = frames(dir, &[("1.png", LANDSCAPE)]);
    format!(
        "source = \"images\"\npath = \"{}\"\nfps = 8\nloop = true",
        frames.display()
    )
}

const WATCH: &str = "[watch]\ninterval_s = 0.5\nconfirm = 2\n\n[describe]\nscene_max_tokens = 4";

#[test]
fn a_watch_that_turns_true_is_said_once_and_unwatch_removes_it() {
    let (yes, _) = answer_tokens();
    let model = forced_model(yes);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_on(model.path(), dir.path(), &still_view(dir.path()), WATCH);
    let mut d = Daemon::start(dir, &cfg);
    let (ok, out, err) = ctl(&d, &["watch", "the", "kettle light is off."]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "watch 1: the kettle light is off");
    // the model says yes at every check: true after two, said once, never again while it stays yes
    wait_for(Duration::from_secs(60), "four checks", || {
        watches(&d)[0]["checks"].as_u64().unwrap() >= 4
    });
    let w = &watches(&d)[0];
    assert_eq!(w["state"], "true", "{w}");
    assert_eq!(w["fired"], 1, "{w}");
    assert!(w["last_score"].as_f64().unwrap() > 0.99, "{w}");
    let (ok, out, _) = ctl(&d, &["watch", "--list"]);
    assert!(ok);
    assert!(
        out.starts_with("1  true     the kettle light is off  (last yes 1.00, "),
        "{out}"
    );
    // a second watch, then removal
    let r = d.request(r#"{"cmd":"watch","condition":"The kettle light is off"}"#);
    assert_eq!(r["code"], "bad_request", "duplicate: {r}");
    let r = d.request(r#"{"cmd":"watch","condition":"the door is open"}"#);
    assert_eq!(r["message"], "watch 2: the door is open", "{r}");
    let (ok, out, _) = ctl(&d, &["unwatch", "1"]);
    assert!(ok);
    assert_eq!(out.trim(), "removed watch 1: the kettle light is off");
    let (ok, _, err) = ctl(&d, &["unwatch", "1"]);
    assert!(!ok);
    assert!(err.contains("there is no watch 1 (watches: 2)"), "{err}");
    let left = watches(&d);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], 2);
    wait_for(Duration::from_secs(60), "watch 2 to turn true", || {
        watches(&d)[0]["fired"] == 1
    });
    d.stop();

    let said = notices(&d);
    let count = |s: &str| said.iter().filter(|n| *n == s).count();
    assert_eq!(
        count("Watch 1 set: the kettle light is off."),
        1,
        "{said:?}"
    );
    assert_eq!(
        count("Watch 1: the kettle light is off — now true."),
        1,
        "{said:?}"
    );
    assert_eq!(count("Watch 1 removed."), 1, "{said:?}");
    assert_eq!(
        count("Watch 2: the door is open — now true."),
        1,
        "{said:?}"
    );
}

#[test]
fn a_watch_the_model_answers_no_is_never_said_and_pause_stops_the_checks() {
    let (_, no) = answer_tokens();
    let model = forced_model(no);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_on(model.path(), dir.path(), &still_view(dir.path()), WATCH);
    let mut d = Daemon::start(dir, &cfg);
    let r = d.request(r#"{"cmd":"watch","condition":"the kettle light is off"}"#);
    assert_eq!(r["reply"], "accepted", "{r}");
    wait_for(Duration::from_secs(60), "four checks", || {
        watches(&d)[0]["checks"].as_u64().unwrap() >= 4
    });
    let w = &watches(&d)[0];
    assert_eq!(
        (&w["state"], &w["fired"]),
        (&"waiting".into(), &0.into()),
        "{w}"
    );
    assert!(w["last_score"].as_f64().unwrap() < 0.01, "{w}");
    // paused: no checks at all
    assert_eq!(d.request(r#"{"cmd":"pause"}"#)["reply"], "accepted");
    std::thread::sleep(Duration::from_millis(300));
    let before = watches(&d)[0]["checks"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(watches(&d)[0]["checks"].as_u64().unwrap(), before);
    d.stop();
    assert!(
        !notices(&d).iter().any(|n| n.contains("now true")),
        "{:?}",
        notices(&d)
    );
}

/// A memory line as the daemon writes it, `mins` minutes old.
fn memory_line(mins: u64, text: &str) -> String {
    let t = SystemTime::now() - Duration::from_secs(mins * 60);
    serde_json::json!({
        "time": humantime::format_rfc3339_millis(t).to_string(),
        "kind": "scene",
        "text": text,
    })
    .to_string()
}

#[test]
fn recall_answers_from_a_recorded_memory_and_forget_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("memory.jsonl");
    let recorded = [
        memory_line(180, "A red mug on a desk."),
        memory_line(20, "A set of keys on the kitchen table."),
        memory_line(5, "A keyboard and a laptop."),
    ];
    std::fs::write(&memory, recorded.join("\n") + "\n").unwrap();
    // the landscape, the text page, then the landscape again
    let frames = frames(
        dir.path(),
        &[("1.png", LANDSCAPE), ("2.png", TEXT), ("3.png", LANDSCAPE)],
    );
    let cfg = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 10\nloop = false\nrepeat_each = 10",
            frames.display()
        ),
        "[scene]\nchange_threshold = 0.02\nstable_frames = 2\ncooldown_s = 0\nrepeat_similarity = 0\n\n[describe]\nscene_max_tokens = 8",
    );
    let mut d = Daemon::start(dir, &cfg);

    let (ok, out, err) = ctl(&d, &["recall", "where", "did", "I", "leave", "my", "keys"]);
    assert!(ok, "{err}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("About 20 minutes ago: A set of keys on the kitchen table.  ("),
        "{out}"
    );
    assert_eq!(
        out.lines().count(),
        2,
        "one match (\"keyboard\" is no key): {out}"
    );
    assert!(
        out.ends_with("(searched the words of past descriptions)\n"),
        "{out}"
    );
    let r = d.request(r#"{"cmd":"recall","query":"a bicycle"}"#);
    assert_eq!(r["answer"], "I do not remember seeing that.", "{r}");
    assert_eq!(r["found"].as_array().unwrap().len(), 0);

    // the daemon remembers what it narrates: three scenes, each with its embedding
    wait_for(Duration::from_secs(120), "the pictures to end", || {
        let s = d.status();
        s["source_state"] == "ended" && s["state"] == "watching"
    });
    let log_scenes: Vec<String> = of_kind(&d.records(), "scene")
        .iter()
        .filter(|r| r["status"] == "spoken")
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(log_scenes.len(), 3, "{log_scenes:?}");
    let kept = records(&memory);
    assert_eq!(kept.len(), 6, "{kept:#?}");
    for (k, said) in kept[3..].iter().zip(&log_scenes) {
        assert_eq!(k["kind"], "scene");
        assert_eq!(k["text"].as_str().unwrap(), said.as_str());
        assert!(!k["embedding"]["i8"].as_str().unwrap().is_empty(), "{k}");
    }
    // the landscape now in view was seen before, at the first scene (not the text page)
    let r = d.request(r#"{"cmd":"recall_view"}"#);
    assert_eq!(r["search"], "embedding", "{r}");
    let found = r["found"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{r}");
    assert_eq!(found[0]["text"].as_str().unwrap(), log_scenes[0]);
    let text = found[0]["text"].as_str().unwrap();
    let end = if text.ends_with(['.', '!', '?']) {
        ""
    } else {
        "."
    };
    assert_eq!(found[0]["ago"], "Just now", "{r}");
    assert_eq!(
        r["answer"].as_str().unwrap(),
        format!("Just now: {text}{end}")
    );

    // forget what is older than an hour, then everything
    let (ok, out, _) = ctl(&d, &["forget", "--older-than", "1h"]);
    assert!(ok);
    assert_eq!(out.trim(), "forgot 1 view; 5 kept");
    let r = d.request(r#"{"cmd":"recall","query":"red mug"}"#);
    assert_eq!(r["answer"], "I do not remember seeing that.", "{r}");
    assert_eq!(records(&memory).len(), 5);
    let (ok, out, _) = ctl(&d, &["forget"]);
    assert!(ok);
    assert_eq!(out.trim(), "forgot 5 views; 0 kept");
    assert!(!memory.exists(), "the memory file is deleted");
    let r = d.request(r#"{"cmd":"recall","query":"keys"}"#);
    assert_eq!(r["answer"], "I do not remember anything yet.", "{r}");
    d.stop();

    // what recall said is in the narration log, with the question
    let answers: Vec<(String, String)> = of_kind(&d.records(), "answer")
        .iter()
        .map(|r| {
            (
                r["question"].as_str().unwrap().to_string(),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        answers[0],
        (
            "recall: where did I leave my keys".to_string(),
            "About 20 minutes ago: A set of keys on the kitchen table.".to_string()
        )
    );
    assert_eq!(answers.len(), 5, "{answers:?}");
    let said = notices(&d);
    assert!(
        said.contains(&"Forgot 1 older view.".to_string()),
        "{said:?}"
    );
    assert!(said.contains(&"Memory deleted.".to_string()), "{said:?}");
}

#[test]
fn memory_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames(dir.path(), &[("1.png", LANDSCAPE)]);
    let cfg = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 10\nloop = false\nrepeat_each = 5",
            frames.display()
        ),
        "[memory]\nenabled = false\n\n[describe]\nscene_max_tokens = 4",
    );
    let mut d = Daemon::start(dir, &cfg);
    wait_for(Duration::from_secs(60), "a scene", || {
        d.status()["last_narration"]["kind"] == "scene"
    });
    let r = d.request(r#"{"cmd":"recall","query":"anything"}"#);
    assert_eq!(r["answer"], "The memory is switched off.", "{r}");
    let r = d.request(r#"{"cmd":"forget"}"#);
    assert_eq!(r["reply"], "accepted", "{r}");
    d.stop();
    assert!(!d.dir.path().join("memory.jsonl").exists());
}

#[test]
fn watch_and_memory_keys_are_checked_and_the_memory_lives_beside_the_log() {
    use scenesay::config::Config;
    let p = Path::new("test.toml");
    let bad = |text: &str| match Config::from_toml(text, p) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {text}"),
    };
    let e = bad("[watch]\nquestion = \"Is it so?\"");
    assert!(
        e.contains("watch.question") && e.contains("{condition}"),
        "{e}"
    );
    let e = bad("[watch]\non = 0.4");
    assert!(e.contains("watch.on"), "{e}");
    let e = bad("[watch]\non = 0.6\noff = 0.6");
    assert!(e.contains("watch.off"), "{e}");
    let e = bad("[watch]\ninterval_s = 0");
    assert!(e.contains("watch.interval_s"), "{e}");
    let e = bad("[memory]\nmax_mb = 0.01");
    assert!(
        e.contains("memory.max_mb") && e.contains("too small"),
        "{e}"
    );
    let e = bad("[hotkey]\nrecall_key = \"KEY_NOPE\"");
    assert!(e.contains("hotkey.recall_key"), "{e}");

    let c = Config::from_toml("[log]\npath = \"/somewhere/state/narration.jsonl\"", p).unwrap();
    assert_eq!(
        c.memory_path().unwrap(),
        Path::new("/somewhere/state/memory.jsonl")
    );
    let c = Config::from_toml("[memory]\npath = \"/x/m.jsonl\"", p).unwrap();
    assert_eq!(c.memory_path().unwrap(), Path::new("/x/m.jsonl"));
    let c = Config::from_toml("[log]\npath = \"/dev/full\"", p).unwrap();
    assert!(
        !c.memory_path().unwrap().starts_with("/dev"),
        "never beside a device"
    );
    let c = Config::from_toml("[memory]\nenabled = false", p).unwrap();
    assert_eq!(c.memory_path(), None);
}
