//! The daemon run in-process (`scenesay::daemon::run`) with a scripted fake model, so the timing of
//! generations is under the test's control: pre-emption of a running scene generation, requests
//! over the socket, pause / resume / repeat / ask, and a missing camera.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use image::RgbImage;
use scenesay::config::Config;
use scenesay::daemon::{self, Shutdown, Stopped};
use scenesay::describer::{DescribeRequest, Describer, Description};
use serde_json::Value;
use support::*;

/// A fake model: the embedding is the mean colour; a scene description (256 px) says one sentence
/// and then keeps "generating" until cancelled; a detail (any other resolution) answers at once.
struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Describer for Fake {
    fn embed(&mut self, image: &RgbImage, _resolution: u32) -> anyhow::Result<Vec<f32>> {
        let n = (image.width() * image.height()) as f32;
        let mut v = [0f32; 3];
        for p in image.pixels() {
            for c in 0..3 {
                v[c] += p[c] as f32 / n;
            }
        }
        Ok(vec![v[0] + 1.0, v[1] + 1.0, v[2] + 1.0])
    }

    fn describe(
        &mut self,
        _image: &RgbImage,
        request: &DescribeRequest,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Description> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{}:{}", request.resolution, request.prompt));
        if request.resolution == 256 {
            on_text("A red wall. ");
            let t = std::time::Instant::now();
            while !cancel() {
                std::thread::sleep(Duration::from_millis(5));
                if t.elapsed() > Duration::from_secs(60) {
                    break;
                }
            }
            return Ok(Description {
                text: "A red wall. It goes on".into(),
                cancelled: true,
                ..Default::default()
            });
        }
        let text = format!("Seen at {}: {}", request.resolution, request.prompt);
        on_text(&text);
        Ok(Description {
            text,
            ..Default::default()
        })
    }
}

struct InProcess {
    dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
    shutdown: Shutdown,
    handle: JoinHandle<anyhow::Result<Stopped>>,
    calls: Arc<Mutex<Vec<String>>>,
}

fn red_frames(dir: &Path) -> std::path::PathBuf {
    let d = dir.join("frames");
    std::fs::create_dir_all(&d).unwrap();
    // a red checkerboard: a flat colour would be, rightly, "covered" to the view guards
    RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([if (x / 4 + y / 4) % 2 == 0 { 200 } else { 120 }, 10, 10])
    })
    .save(d.join("red.png"))
    .unwrap();
    d
}

fn start(capture: impl FnOnce(&Path) -> String, extra: &str) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &capture(dir.path()), extra);
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text, &path).unwrap();
    let calls = Arc::new(Mutex::new(vec![]));
    let shutdown = Shutdown::new();
    let (c, s) = (calls.clone(), shutdown.clone());
    let handle = std::thread::spawn(move || {
        daemon::run(
            &config,
            move || Ok(Box::new(Fake { calls: c }) as Box<dyn Describer>),
            s,
        )
    });
    let socket = dir.path().join("scenesay.sock");
    wait_for(Duration::from_secs(30), "the control socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    InProcess {
        log: dir.path().join("narration.jsonl"),
        socket,
        dir,
        shutdown,
        handle,
        calls,
    }
}

impl InProcess {
    fn req(&self, line: &str) -> Value {
        request(&self.socket, line)
    }

    fn stop(self) -> (Vec<Value>, Vec<String>) {
        let r = self.req(r#"{"cmd":"stop"}"#);
        assert_eq!(
            r,
            serde_json::json!({"reply":"accepted","message":"stopping"})
        );
        let stopped = self.handle.join().unwrap().unwrap();
        assert_eq!(stopped, Stopped::Requested);
        assert!(!self.socket.exists());
        let _ = &self.dir;
        let _ = &self.shutdown;
        (records(&self.log), self.calls.lock().unwrap().clone())
    }
}

fn images(dir: &Path) -> String {
    format!(
        "source = \"images\"\npath = \"{}\"\nfps = 10",
        red_frames(dir).display()
    )
}

const FAST_SCENES: &str = "[scene]\nstable_frames = 1\ncooldown_s = 0\n\n[describe]\ndetail_resolution = 512\ndetail_prompt = \"Tell me everything.\"";

/// (kind, status) of every narration that is not a notice, in log order.
fn narrations(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r["kind"] != "notice")
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(k: &str, s: &str) -> (String, String) {
    (k.to_string(), s.to_string())
}

#[test]
fn a_detail_request_pre_empts_the_running_scene_and_is_logged_first() {
    let d = start(images, FAST_SCENES);
    wait_for(Duration::from_secs(30), "the scene generation", || {
        d.req(r#"{"cmd":"status"}"#)["state"] == "describing scene"
    });
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["reply"], "narration", "{r}");
    assert_eq!(r["kind"], "detail");
    assert_eq!(r["text"], "Seen at 512: Tell me everything.");
    assert_eq!(r["resolution"], 512);
    let (records, calls) = d.stop();
    assert_eq!(
        narrations(&records),
        [pair("detail", "spoken"), pair("scene", "interrupted")],
        "{records:#?}"
    );
    let scene = records.iter().find(|r| r["kind"] == "scene").unwrap();
    assert_eq!(scene["reason"], "pre-empted by a newer request");
    assert_eq!(scene["cancelled"], true);
    assert_eq!(scene["text"], "A red wall. It goes on");
    // after the detail the view counts as seen: no second scene narration of the same view
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("256:")).count(),
        1,
        "{calls:?}"
    );
}

#[test]
fn pause_resume_repeat_and_ask_over_the_socket() {
    let d = start(
        images,
        "[scene]\nstable_frames = 1\ncooldown_s = 0\n\n[describe]\ndetail_resolution = 512",
    );
    wait_for(Duration::from_secs(30), "the scene generation", || {
        d.req(r#"{"cmd":"status"}"#)["state"] == "describing scene"
    });
    assert_eq!(d.req(r#"{"cmd":"pause"}"#)["message"], "paused");
    let s = d.req(r#"{"cmd":"status"}"#);
    assert_eq!(s["paused"], true, "{s}");
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(d.req(r#"{"cmd":"pause"}"#)["message"], "already paused");
    // requests are still answered while paused
    let a = d.req(r#"{"cmd":"ask","question":"Is the door open?"}"#);
    assert_eq!(a["kind"], "answer", "{a}");
    assert_eq!(a["text"], "Seen at 512: Is the door open?");
    let rep = d.req(r#"{"cmd":"repeat"}"#);
    assert_eq!(rep["reply"], "narration", "{rep}");
    assert_eq!(rep["text"], "Seen at 512: Is the door open?");
    // a malformed line gets an error and the daemon carries on
    let bad = d.req(r#"{"cmd":"ask"}"#);
    assert_eq!(bad["reply"], "error");
    assert_eq!(bad["code"], "bad_request");
    assert_eq!(d.req(r#"{"cmd":"resume"}"#)["message"], "resumed");
    assert_eq!(d.req(r#"{"cmd":"status"}"#)["paused"], false);
    let (records, _) = d.stop();
    let answers: Vec<&Value> = records.iter().filter(|r| r["kind"] == "answer").collect();
    assert_eq!(answers.len(), 2, "the answer and its repeat: {records:#?}");
    assert_eq!(answers[0]["question"], "Is the door open?");
    assert_eq!(answers[1]["repeat"], true);
    let notices: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "notice")
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert!(notices.contains(&"Narration paused."), "{notices:?}");
    assert!(notices.contains(&"Narration resumed."), "{notices:?}");
    // the scene being generated when pause came was cut, not left to finish
    let scene = records.iter().find(|r| r["kind"] == "scene").unwrap();
    assert_eq!(scene["cancelled"], true, "{scene}");
}

#[test]
fn a_missing_camera_is_announced_once_and_the_daemon_keeps_running() {
    let d = start(
        |_| "source = \"camera\"\ndevice = \"/dev/video987\"".to_string(),
        "",
    );
    // first attempt at once, retries after 1 s and 2 s more
    wait_for(Duration::from_secs(30), "a retry", || {
        let s = d.req(r#"{"cmd":"status"}"#);
        s["source_state"]
            .as_str()
            .is_some_and(|x| x.starts_with("retrying"))
    });
    std::thread::sleep(Duration::from_millis(3500));
    let s = d.req(r#"{"cmd":"status"}"#);
    assert!(
        s["source_state"]
            .as_str()
            .unwrap()
            .contains("/dev/video987"),
        "{s}"
    );
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["code"], "no_frame", "{r}");
    let (records, calls) = d.stop();
    let notices: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "notice")
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        notices
            .iter()
            .filter(|n| **n == "Camera not available. I will keep trying.")
            .count(),
        1,
        "{notices:?}"
    );
    assert!(notices.contains(&"No camera picture yet."), "{notices:?}");
    assert!(calls.is_empty());
}
