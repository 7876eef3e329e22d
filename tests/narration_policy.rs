//! The narration policy in the running daemon: view guards, repeat suppression, brief and full
//! descriptions, `changed` and `read`. End to end on the tiny fixture model (the built binary), and
//! in-process with a scripted model whose words are known.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use image::{Rgb, RgbImage};
use scenesay::config::Config;
use scenesay::daemon::{self, Shutdown, Stopped};
use scenesay::describer::{DescribeRequest, Describer, Description};
use serde_json::Value;
use support::*;

/// Notices about the daemon's own life, not about the view.
const LIFECYCLE: &[&str] = &["Scene narration ready.", "End of the pictures."];

/// (kind, status, text) of every record but the lifecycle notices, in log order.
fn story(records: &[Value]) -> Vec<(String, String, String)> {
    records
        .iter()
        .filter(|r| !(r["kind"] == "notice" && LIFECYCLE.contains(&r["text"].as_str().unwrap())))
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_until_all_frames_seen(status: impl Fn() -> Value) {
    wait_for(Duration::from_secs(120), "all frames processed", || {
        let s = status();
        let f = &s["frames"];
        s["source_state"] == "ended"
            && s["state"] == "watching"
            && f["watched"].as_u64().unwrap() + f["dropped"].as_u64().unwrap()
                == f["captured"].as_u64().unwrap()
    });
}

fn checker(a: [u8; 3], b: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(64, 48, |x, y| {
        if (x / 8 + y / 8) % 2 == 0 {
            Rgb(a)
        } else {
            Rgb(b)
        }
    })
}

/// A folder of pictures, written in name order.
fn pictures(dir: &Path, pics: &[(&str, RgbImage)]) -> PathBuf {
    let d = dir.join("frames");
    std::fs::create_dir_all(&d).unwrap();
    for (name, img) in pics {
        img.save(d.join(name)).unwrap();
    }
    d
}

/// The issue's end-to-end run: the same frame ×5, a new frame ×5, a black frame ×3, on the tiny
/// fixture model → exactly one scene, one scene, one dark notice.
#[test]
fn same_new_black_gives_scene_scene_dark_notice() {
    let clean = same_new_black(0, true);
    // the frames of a real camera: noise on every frame; the change gate keeps the encoder for the
    // changes, and the same is said, no later than one frame after the clean run (or the run
    // without the gate)
    let noisy = same_new_black(12, true);
    let ungated = same_new_black(0, false);
    for (a, b) in [(&noisy, &clean), (&noisy, &ungated), (&clean, &ungated)] {
        for i in 0..2 {
            assert!(
                a.scene_frames[i] <= b.scene_frames[i] + 1,
                "scene {i}: frame {} vs {}",
                a.scene_frames[i],
                b.scene_frames[i]
            );
        }
    }
    // the gate spared the encoder the unchanged frames (the 5 repeats of each picture)
    assert_eq!(ungated.gated, 0);
    assert!(noisy.gated >= 4, "{} gated", noisy.gated);
    assert!(noisy.encoded + noisy.gated >= 10, "{noisy:?}");
    assert!(noisy.encoded <= 5, "{noisy:?}");
}

#[derive(Debug)]
struct SameNewBlack {
    scene_frames: Vec<u64>,
    encoded: u64,
    gated: u64,
}

fn same_new_black(noise: u8, gate: bool) -> SameNewBlack {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames(
        dir.path(),
        &[
            ("1.png", "landscape_640x480.png"),
            ("2.png", "text_1024x1024.png"),
        ],
    );
    RgbImage::new(640, 480).save(frames.join("3.png")).unwrap();
    let cfg = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 3\nloop = false\nrepeat_each = 5\nnoise = {noise}",
            frames.display()
        ),
        &format!("[scene]\nchange_threshold = 0.02\nstable_frames = 2\ncooldown_s = 0\ngate = {gate}\n\n[describe]\nscene_max_tokens = 8\nbrief_max_tokens = 6"),
    );
    let mut d = Daemon::start(dir, &cfg);
    wait_until_all_frames_seen(|| d.status());
    let status = d.status();
    assert_eq!(status["frames"]["captured"], 15, "{status}");
    d.stop();

    let records = d.records();
    let story = story(&records);
    let shape: Vec<(&str, &str)> = story
        .iter()
        .map(|(k, s, _)| (k.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("scene", "spoken"),
            ("scene", "spoken"),
            ("notice", "spoken")
        ],
        "{records:#?}"
    );
    assert_eq!(story[2].2, "Camera view is dark.");
    let scenes = of_kind(&records, "scene");
    let frame = |i: usize| scenes[i]["frame"].as_u64().unwrap();
    assert!((1..=5).contains(&frame(0)), "{scenes:#?}");
    assert!((6..=10).contains(&frame(1)), "{scenes:#?}");
    // the second scene came quickly after the first: a brief description
    assert!(scenes[0]["tokens"].as_u64().unwrap() <= 8, "{}", scenes[0]);
    assert!(scenes[1]["tokens"].as_u64().unwrap() <= 6, "{}", scenes[1]);
    // what was said went to stdout through the log backend: the model never saw the black frames
    let out = d.stdout();
    assert_eq!(out.matches("[scene] ").count(), 2, "{out}");
    assert_eq!(out.matches("Camera view is dark.").count(), 1, "{out}");
    let f = &status["frames"];
    SameNewBlack {
        scene_frames: vec![frame(0), frame(1)],
        encoded: f["encoded"].as_u64().unwrap(),
        gated: f["gated"].as_u64().unwrap(),
    }
}

/// A noisy static view on the tiny model: the first frame is encoded, then (almost) none; with the
/// gate off, every frame is.
#[test]
fn a_noisy_static_view_is_encoded_almost_never() {
    let run = |gate: bool| {
        let dir = tempfile::tempdir().unwrap();
        let frames = frames(dir.path(), &[("1.png", "landscape_640x480.png")]);
        let cfg = config_text(
            dir.path(),
            &format!(
                "source = \"images\"\npath = \"{}\"\nfps = 10\nloop = false\nrepeat_each = 40\nnoise = 16",
                frames.display()
            ),
            &format!("[scene]\nstable_frames = 2\ncooldown_s = 0\ngate = {gate}\n\n[describe]\nscene_max_tokens = 4"),
        );
        let mut d = Daemon::start(dir, &cfg);
        wait_until_all_frames_seen(|| d.status());
        let status = d.status();
        d.stop();
        let scenes = of_kind(&d.records(), "scene").len();
        (status, scenes)
    };
    let (on, scenes_on) = run(true);
    let (off, scenes_off) = run(false);
    let (f_on, f_off) = (&on["frames"], &off["frames"]);
    // 4 s of one noisy picture: one encoding (the first frame); the safety net (10 s) not yet
    assert_eq!(f_on["encoded"], 1, "{on}");
    let watched = f_on["watched"].as_u64().unwrap();
    assert_eq!(f_on["gated"].as_u64().unwrap(), watched - 1, "{on}");
    assert_eq!(f_off["gated"], 0, "{off}");
    assert_eq!(f_off["encoded"], f_off["watched"], "{off}");
    // the same single narration either way
    assert_eq!((scenes_on, scenes_off), (1, 1));
    assert!(on["cpu"]["percent_of_one_core"].as_f64().is_some(), "{on}");
    assert!(
        ["full", "idle"].contains(&on["pace"].as_str().unwrap()),
        "{on}"
    );
}

/// A model whose words are known: the embedding is the mean colour; a scene is "The image shows a
/// COLOUR wall ahead. It has no windows." (COLOUR: the strongest channel), said sentence by
/// sentence and stopped when cancelled; other requests get an answer naming the prompt's kind.
struct Scripted {
    calls: Arc<Mutex<Vec<String>>>,
}

fn colour(image: &RgbImage) -> &'static str {
    let mut sum = [0u64; 3];
    for p in image.pixels() {
        for c in 0..3 {
            sum[c] += p[c] as u64;
        }
    }
    let max = (0..3).max_by_key(|c| sum[*c]).unwrap();
    ["red", "green", "blue"][max]
}

impl Describer for Scripted {
    fn embed(&mut self, image: &RgbImage, _resolution: u32) -> anyhow::Result<Vec<f32>> {
        let n = (image.width() * image.height()) as f32;
        let mut v = [1f32; 3];
        for p in image.pixels() {
            for c in 0..3 {
                v[c] += p[c] as f32 / n;
            }
        }
        Ok(v.to_vec())
    }

    fn describe(
        &mut self,
        image: &RgbImage,
        request: &DescribeRequest,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Description> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{}:{}", request.resolution, request.prompt));
        let c = colour(image);
        let pieces: Vec<String> = if request.prompt.starts_with("READ") {
            vec!["EXIT 3, to the left.".into()]
        } else if request.prompt.starts_with("CHANGED") {
            vec![format!("The {c} wall replaced the old one.")]
        } else if request.resolution == 256 {
            vec![
                format!("The image shows a {c} wall ahead. "),
                "It has no windows.".into(),
            ]
        } else {
            vec![format!("In detail: a {c} wall ahead.")]
        };
        let mut text = String::new();
        for p in pieces {
            if cancel() {
                return Ok(Description {
                    text,
                    cancelled: true,
                    ..Default::default()
                });
            }
            on_text(&p);
            text.push_str(&p);
        }
        Ok(Description {
            text,
            ..Default::default()
        })
    }
}

struct InProcess {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
    handle: JoinHandle<anyhow::Result<Stopped>>,
    calls: Arc<Mutex<Vec<String>>>,
}

const PROMPTS: &str = "[describe]\nscene_prompt = \"SCENE\"\nbrief_prompt = \"BRIEF\"\ndetail_prompt = \"DETAIL\"\ndetail_resolution = 512\nread_prompt = \"READ\"\nread_resolution = 1024\nchanged_prompt = \"CHANGED since: {previous}\"\n";

/// Sensor-like noise on every frame (`[capture] noise`), as a real camera never repeats a frame:
/// every sequence is run clean and with it.
const NOISE: [u8; 2] = [0, 12];

/// The daemon in-process on [`Scripted`], showing `pics` in order, each `repeat_each` frames at
/// 10 frames a second, once, with `noise`.
fn start(pics: &[(&str, RgbImage)], repeat_each: u32, noise: u8, extra: &str) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let frames = pictures(dir.path(), pics);
    let text = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 10\nloop = false\nrepeat_each = {repeat_each}\nnoise = {noise}",
            frames.display()
        ),
        &format!("{PROMPTS}\n{extra}"),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text, &path).unwrap();
    let calls = Arc::new(Mutex::new(vec![]));
    let c = calls.clone();
    let handle = std::thread::spawn(move || {
        daemon::run(
            &config,
            move || Ok(Box::new(Scripted { calls: c }) as Box<dyn Describer>),
            Shutdown::new(),
        )
    });
    let socket = dir.path().join("scenesay.sock");
    wait_for(Duration::from_secs(30), "the control socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    InProcess {
        log: dir.path().join("narration.jsonl"),
        socket,
        _dir: dir,
        handle,
        calls,
    }
}

impl InProcess {
    fn req(&self, line: &str) -> Value {
        request(&self.socket, line)
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn all_seen(&self) {
        wait_until_all_frames_seen(|| self.req(r#"{"cmd":"status"}"#));
    }

    fn stop(self) -> Vec<Value> {
        assert_eq!(self.req(r#"{"cmd":"stop"}"#)["reply"], "accepted");
        assert_eq!(self.handle.join().unwrap().unwrap(), Stopped::Requested);
        records(&self.log)
    }
}

// bright enough for the view guards (mean luma ≥ 35, some contrast)
const RED: [u8; 3] = [200, 10, 10];
const DARK_RED: [u8; 3] = [120, 10, 10];
const ORANGE: [u8; 3] = [200, 180, 10];
const BLUE: [u8; 3] = [60, 120, 250];
const DARK_BLUE: [u8; 3] = [30, 60, 160];

#[test]
fn a_scene_that_says_the_same_in_other_words_is_suppressed_and_quick_changes_are_brief() {
    for noise in NOISE {
        suppressed_and_brief(noise);
    }
}

fn suppressed_and_brief(noise: u8) {
    // red, then orange (a different view that the model also calls a red wall), then blue, then
    // black
    let d = start(
        &[
            ("1.png", checker(RED, DARK_RED)),
            ("2.png", checker(ORANGE, DARK_RED)),
            ("3.png", checker(BLUE, DARK_BLUE)),
            ("4.png", RgbImage::new(64, 48)),
        ],
        6,
        noise,
        "[scene]\nchange_threshold = 0.05\nstable_frames = 2\ncooldown_s = 0",
    );
    d.all_seen();
    let calls = d.calls();
    let records = d.stop();
    assert_eq!(
        story(&records),
        [
            ("scene", "spoken", "A red wall ahead. It has no windows."),
            ("scene", "suppressed", "A red wall ahead."),
            ("scene", "spoken", "A blue wall ahead. It has no windows."),
            ("notice", "spoken", "Camera view is dark."),
        ]
        .map(|(k, s, t)| (k.to_string(), s.to_string(), t.to_string())),
        "noise {noise}: {records:#?}"
    );
    let repeat = &of_kind(&records, "scene")[1];
    assert!(
        repeat["reason"]
            .as_str()
            .unwrap()
            .starts_with("repeat: says what the last scene narration said"),
        "{repeat}"
    );
    // the model was stopped after the repeated first sentence
    assert_eq!(repeat["cancelled"], true, "{repeat}");
    // first the usual description, then brief ones: the scenes changed quickly; never the black
    assert_eq!(calls, ["256:SCENE", "256:BRIEF", "256:BRIEF"]);
}

#[test]
fn changed_compares_with_the_last_description_and_read_reads_at_its_resolution() {
    for noise in NOISE {
        changed_and_read(noise);
    }
}

fn changed_and_read(noise: u8) {
    // red is narrated; blue follows but max_per_minute = 1 keeps it unsaid
    let d = start(
        &[
            ("1.png", checker(RED, DARK_RED)),
            ("2.png", checker(BLUE, DARK_BLUE)),
        ],
        6,
        noise,
        "[scene]\nchange_threshold = 0.05\nstable_frames = 2\ncooldown_s = 0\nmax_per_minute = 1",
    );
    d.all_seen();
    assert_eq!(d.calls(), ["256:SCENE"]);
    // the view (blue) differs from the last description (red): the model is asked, with it
    let r = d.req(r#"{"cmd":"changed"}"#);
    assert_eq!(r["reply"], "narration", "{r}");
    assert_eq!(r["kind"], "changed");
    assert_eq!(r["text"], "The blue wall replaced the old one.");
    assert_eq!(r["resolution"], 512);
    assert_eq!(
        d.calls()[1],
        "512:CHANGED since: A red wall ahead. It has no windows."
    );
    // a detailed description of the blue view; now nothing has changed, and the model is not asked
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["text"], "In detail: a blue wall ahead.");
    let r = d.req(r#"{"cmd":"changed"}"#);
    assert_eq!(r["text"], "Nothing has changed.", "{r}");
    assert!(r.get("resolution").is_none(), "{r}");
    assert_eq!(d.calls().len(), 3, "{:?}", d.calls());
    // read: the text in view, at read_resolution
    let r = d.req(r#"{"cmd":"read"}"#);
    assert_eq!(r["kind"], "read", "{r}");
    assert_eq!(r["text"], "EXIT 3, to the left.");
    assert_eq!(r["resolution"], 1024);
    assert_eq!(d.calls()[3], "1024:READ");
    // repeat says the last narration again
    assert_eq!(d.req(r#"{"cmd":"repeat"}"#)["text"], "EXIT 3, to the left.");
    let records = d.stop();
    let kinds: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] != "notice")
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["scene", "changed", "detail", "changed", "read", "read"],
        "{records:#?}"
    );
}

#[test]
fn requests_about_a_dark_view_are_answered_without_the_model() {
    for noise in NOISE {
        dark_requests(noise);
    }
}

fn dark_requests(noise: u8) {
    let d = start(&[("1.png", RgbImage::new(64, 48))], 3, noise, "");
    d.all_seen();
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["kind"], "detail", "{r}");
    assert_eq!(r["text"], "Camera view is dark.");
    let r = d.req(r#"{"cmd":"read"}"#);
    assert_eq!(r["text"], "Camera view is dark.", "{r}");
    let r = d.req(r#"{"cmd":"changed"}"#);
    assert_eq!(r["text"], "Nothing has been described yet.", "{r}");
    assert!(d.calls().is_empty(), "{:?}", d.calls());
    let records = d.stop();
    // the scene watch announced the dark view once
    let notices: Vec<&str> = of_kind(&records, "notice")
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        notices
            .iter()
            .filter(|n| **n == "Camera view is dark.")
            .count(),
        1,
        "{notices:?}"
    );
}

#[test]
fn a_settled_view_gets_one_fuller_description_when_asked_for() {
    for noise in NOISE {
        settled_fuller(noise);
    }
}

fn settled_fuller(noise: u8) {
    // 3 s of red at 10 frames a second; settled after 1 s
    let d = start(
        &[("1.png", checker(RED, DARK_RED))],
        30,
        noise,
        "[scene]\nstable_frames = 2\ncooldown_s = 0\nsettle_s = 1\nsettle_detail = true",
    );
    d.all_seen();
    assert_eq!(d.calls(), ["256:SCENE", "512:DETAIL"]);
    let records = d.stop();
    let scenes = of_kind(&records, "scene");
    assert_eq!(scenes.len(), 2, "{records:#?}");
    assert_eq!(scenes[1]["text"], "In detail: a red wall ahead.");
    assert_eq!(scenes[1]["resolution"], 512);
    assert_eq!(scenes[1]["status"], "spoken");
}

/// `from` moved `k`/`n` of the way to `to`.
fn mix(from: [u8; 3], to: [u8; 3], k: u32, n: u32) -> [u8; 3] {
    let f = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * k as f32 / n as f32).round() as u8;
    [f(from[0], to[0]), f(from[1], to[1]), f(from[2], to[2])]
}

/// A view that drifts slowly from red to blue (each frame a little bluer than the one before,
/// with noise): never a big step, but the drift adds up against the last encoded frame and the last
/// narrated scene, so the blue wall is narrated, with the gate as without it.
#[test]
fn a_slow_drift_is_still_narrated() {
    const STEPS: u32 = 40;
    let pics: Vec<(String, RgbImage)> = (0..=STEPS)
        .map(|k| {
            (
                format!("{k:03}.png"),
                checker(mix(RED, BLUE, k, STEPS), mix(DARK_RED, DARK_BLUE, k, STEPS)),
            )
        })
        .collect();
    // the last picture stays a while
    let mut pics = pics;
    for k in 0..10 {
        pics.push((
            format!("{:03}.png", STEPS + 1 + k),
            pics[STEPS as usize].1.clone(),
        ));
    }
    let named: Vec<(&str, RgbImage)> = pics.iter().map(|(n, i)| (n.as_str(), i.clone())).collect();
    let mut last = vec![];
    for gate in [true, false] {
        let d = start(
            &named,
            1,
            12,
            &format!("[scene]\nchange_threshold = 0.05\nstable_frames = 2\ncooldown_s = 0\nmax_per_minute = 600\nrepeat_similarity = 0\ngate = {gate}"),
        );
        d.all_seen();
        let status = d.req(r#"{"cmd":"status"}"#);
        let records = d.stop();
        let spoken: Vec<String> = of_kind(&records, "scene")
            .iter()
            .filter(|r| r["status"] == "spoken")
            .map(|r| r["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            spoken.first().map(String::as_str),
            Some("A red wall ahead. It has no windows."),
            "gate {gate}: {records:#?}"
        );
        let f = &status["frames"];
        if gate {
            // the gate skipped frames along the way, yet the drift was seen
            assert!(f["gated"].as_u64().unwrap() > 0, "{status}");
            assert!(f["encoded"].as_u64().unwrap() > 2, "{status}");
        } else {
            assert_eq!(f["gated"], 0, "{status}");
        }
        last.push(spoken.last().cloned().unwrap());
    }
    assert_eq!(last, ["A blue wall ahead. It has no windows."; 2]);
}
