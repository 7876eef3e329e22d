//! Faults the daemon must live through, or die of cleanly: a frame source that fails for a few
//! seconds and comes back (one notice, automatic resume), a narration log on a full disk or
//! removed while running (narration goes on, a warning is logged), and a panicking thread (logged,
//! said out loud, the daemon stops with a failure so systemd restarts it). The daemon runs
//! in-process with a scripted model so the faults can be timed.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use scenesay::capture::{self, CaptureError, FrameSource};
use scenesay::config::{Config, SourceKind};
use scenesay::daemon::{self, Shutdown, Stopped};
use scenesay::describer::{DescribeRequest, Describer, Description};
use scenesay::speech::service::{Speaker, SpeechMsg};
use scenesay::status::{Clock, Stats};
use serde_json::Value;
use support::*;

/// Every log line of this test binary (the daemon's threads log through the global subscriber).
fn log_lines() -> &'static Arc<Mutex<Vec<u8>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let _ = tracing_subscriber::fmt()
            .with_writer(move || Sink(l.clone()))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        lines
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged() -> String {
    String::from_utf8_lossy(&log_lines().lock().unwrap()).into_owned()
}

/// A quick fake model: the embedding is the mean colour, a description is one sentence at once.
/// `panic_at`: the embedding call (1, 2, …) that panics.
struct Quick {
    embeds: Arc<AtomicU32>,
    panic_at: Option<u32>,
}

impl Describer for Quick {
    fn embed(&mut self, image: &RgbImage, _resolution: u32) -> anyhow::Result<Vec<f32>> {
        let n = self.embeds.fetch_add(1, Ordering::SeqCst) + 1;
        if self.panic_at == Some(n) {
            panic!("scripted failure in embedding {n}");
        }
        let px = (image.width() * image.height()) as f32;
        let mut v = [1f32; 3];
        for p in image.pixels() {
            for c in 0..3 {
                v[c] += p[c] as f32 / px;
            }
        }
        Ok(v.to_vec())
    }

    fn describe(
        &mut self,
        _image: &RgbImage,
        request: &DescribeRequest,
        on_text: &mut dyn FnMut(&str),
        _cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Description> {
        let text = format!("A view at {} pixels.", request.resolution);
        on_text(&text);
        Ok(Description {
            text,
            ..Default::default()
        })
    }
}

struct Running {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    socket: PathBuf,
    handle: JoinHandle<anyhow::Result<Stopped>>,
    embeds: Arc<AtomicU32>,
}

/// Starts the daemon in-process on `config` (see [`config_text`]), the log path replaced by `log`
/// when given.
fn start(
    capture: impl FnOnce(&Path) -> String,
    extra: &str,
    log: Option<&str>,
    panic_at: Option<u32>,
) -> Running {
    log_lines();
    let dir = tempfile::tempdir().unwrap();
    let mut text = config_text(dir.path(), &capture(dir.path()), extra);
    if let Some(l) = log {
        let default = format!("path = \"{}/narration.jsonl\"", dir.path().display());
        assert!(text.contains(&default));
        text = text.replace(&default, &format!("path = \"{l}\""));
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text, &path).unwrap();
    let embeds = Arc::new(AtomicU32::new(0));
    let e = embeds.clone();
    let handle = std::thread::spawn(move || {
        daemon::run(
            &config,
            move || {
                Ok(Box::new(Quick {
                    embeds: e,
                    panic_at,
                }) as Box<dyn Describer>)
            },
            Shutdown::new(),
        )
    });
    let socket = dir.path().join("scenesay.sock");
    wait_for(Duration::from_secs(30), "the control socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    Running {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        socket,
        handle,
        embeds,
    }
}

/// What is left of a [`Running`] daemon once it has stopped.
struct Stopped2 {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    socket: PathBuf,
    embeds: Arc<AtomicU32>,
}

impl Running {
    fn req(&self, line: &str) -> Value {
        request(&self.socket, line)
    }

    fn status(&self) -> Value {
        self.req(r#"{"cmd":"status"}"#)
    }

    /// The daemon's result, waiting at most a minute (a hang fails the test instead of blocking it).
    fn join(self) -> (anyhow::Result<Stopped>, Stopped2) {
        let t = Instant::now();
        while !self.handle.is_finished() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the daemon did not stop: {}",
                logged()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        (
            self.handle.join().unwrap(),
            Stopped2 {
                _dir: self._dir,
                dir: self.dir,
                socket: self.socket,
                embeds: self.embeds,
            },
        )
    }

    fn stop(self) -> Vec<Value> {
        assert_eq!(self.req(r#"{"cmd":"stop"}"#)["reply"], "accepted");
        let (stopped, rest) = self.join();
        let stopped = stopped.unwrap();
        assert_eq!(stopped, Stopped::Requested);
        assert!(!rest.socket.exists(), "the socket is removed");
        records(&rest.dir.join("narration.jsonl"))
    }
}

fn notices(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["kind"] == "notice")
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect()
}

fn picture_folder(dir: &Path) -> String {
    let d = dir.join("frames");
    std::fs::create_dir_all(&d).unwrap();
    RgbImage::from_pixel(32, 32, image::Rgb([200, 10, 10]))
        .save(d.join("red.png"))
        .unwrap();
    format!("source = \"images\"\npath = \"{}\"\nfps = 10", d.display())
}

/// Fast scenes; the view guards off (the test pictures are plain colours, which they would call
/// "covered"): these tests are about faults, not about the narration policy.
const SCENES: &str = "[scene]\nstable_frames = 1\ncooldown_s = 0\n\n[describe]\ndetail_resolution = 512\n\n[guards]\nenabled = false";

/// A source that fails from `from` to `until` after it was first opened (open fails then too).
struct Flaky {
    t0: Instant,
    from: Duration,
    until: Duration,
}

impl Flaky {
    fn down(&self) -> bool {
        let t = self.t0.elapsed();
        t >= self.from && t < self.until
    }
}

struct FlakySource(Arc<Flaky>);

impl FrameSource for FlakySource {
    fn name(&self) -> String {
        "flaky camera".into()
    }
    fn live(&self) -> bool {
        false
    }
    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        if self.0.down() {
            return Err(CaptureError::Camera {
                device: "/dev/video0".into(),
                message: "unplugged".into(),
            });
        }
        Ok(Some(RgbImage::new(4, 4)))
    }
}

#[test]
fn a_source_failing_for_three_seconds_is_announced_once_and_resumes_by_itself() {
    let flaky = Arc::new(Flaky {
        t0: Instant::now(),
        from: Duration::from_millis(500),
        until: Duration::from_millis(3500),
    });
    let (slot, frames) = capture::frame_slot();
    let (tx, speech) = crossbeam_channel::unbounded();
    let stats = Arc::new(Stats::new(Clock::new()));
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let (f, st) = (flaky.clone(), stats.clone());
    let opens = Arc::new(AtomicU32::new(0));
    let o = opens.clone();
    let thread = std::thread::spawn(move || {
        capture::run_capture(
            move || {
                o.fetch_add(1, Ordering::SeqCst);
                if f.down() {
                    return Err(CaptureError::Camera {
                        device: "/dev/video0".into(),
                        message: "no such device".into(),
                    });
                }
                Ok(Box::new(FlakySource(f.clone())) as Box<dyn FrameSource>)
            },
            SourceKind::Camera,
            20.0,
            slot,
            Speaker::new(tx),
            st,
            stop,
        )
    });
    // frames before, none during, frames again after — with no restart of anything
    let mut last_before = 0;
    let mut after = 0;
    let mut last_number = 0;
    let mut seen_retrying = false;
    let mut quiet = Duration::ZERO;
    while flaky.t0.elapsed() < Duration::from_secs(9) {
        if let Ok(fr) = frames.recv_timeout(Duration::from_millis(50)) {
            assert!(fr.number > last_number, "frame numbers keep counting");
            last_number = fr.number;
            let t = flaky.t0.elapsed();
            if t < flaky.from {
                last_before = fr.number;
            } else if t > flaky.until {
                after += 1;
            }
        }
        seen_retrying |= stats.report().source_state.starts_with("retrying");
        // waiting between retries is not a stall
        quiet = quiet.max(stats.since_capture_beat());
    }
    drop(stop_tx);
    thread.join().unwrap();
    assert!(last_before > 0, "frames before the outage");
    assert!(after > 20, "frames after the outage: {after}");
    assert!(seen_retrying, "the outage showed in the status");
    assert!(
        quiet < Duration::from_millis(1500),
        "{quiet:?} without a sign of life"
    );
    assert_eq!(stats.report().source_state, "running");
    let said: Vec<String> = speech
        .try_iter()
        .filter_map(|m| match m {
            SpeechMsg::Text { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        [
            "Camera not available. I will keep trying.",
            "Camera is working again."
        ],
        "one notice for the outage, one for the recovery"
    );
    // retried with backoff (after 1 s, then 2 s more: about 3 tries), not in a busy loop
    let n = opens.load(Ordering::SeqCst);
    assert!((3..=5).contains(&n), "{n} opens");
}

#[test]
fn a_picture_folder_that_vanishes_and_returns_is_picked_up_again() {
    let d = start(picture_folder, SCENES, None, None);
    wait_for(Duration::from_secs(30), "frames", || {
        d.status()["frames"]["captured"].as_u64().unwrap() > 5
    });
    let frames = d.dir.join("frames");
    let away = d.dir.join("frames-away");
    std::fs::rename(&frames, &away).unwrap();
    wait_for(Duration::from_secs(30), "the outage to be noticed", || {
        d.status()["source_state"]
            .as_str()
            .unwrap()
            .starts_with("retrying")
    });
    let during = d.status()["frames"]["captured"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.status()["frames"]["captured"].as_u64().unwrap(),
        during,
        "no frames while the folder is gone"
    );
    std::fs::rename(&away, &frames).unwrap();
    wait_for(Duration::from_secs(30), "the source to work again", || {
        let s = d.status();
        s["source_state"] == "running" && s["frames"]["captured"].as_u64().unwrap() > during + 5
    });
    let records = d.stop();
    let n = notices(&records);
    assert_eq!(
        n.iter()
            .filter(|t| *t == "Cannot read the pictures. I will keep trying.")
            .count(),
        1,
        "{n:?}"
    );
    assert_eq!(
        n.iter()
            .filter(|t| *t == "Pictures can be read again.")
            .count(),
        1,
        "{n:?}"
    );
}

#[test]
fn a_full_disk_under_the_narration_log_does_not_stop_narration() {
    // beside a device the memory would go to the state folder of the real home: off here
    let extra = format!("{SCENES}\n\n[memory]\nenabled = false");
    let d = start(picture_folder, &extra, Some("/dev/full"), None);
    // the picture's scene narration first, so the detail requests are the last narrations
    wait_for(Duration::from_secs(30), "the scene narration", || {
        d.status()["frames"]["described"].as_u64().unwrap() >= 1
    });
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["reply"], "narration", "{r}");
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["reply"], "narration", "{r}");
    let s = d.status();
    assert!(s["frames"]["described"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["last_narration"]["text"], "A view at 512 pixels.", "{s}");
    assert_eq!(d.req(r#"{"cmd":"stop"}"#)["reply"], "accepted");
    assert_eq!(d.join().0.unwrap(), Stopped::Requested);
    let log = logged();
    assert_eq!(
        log.matches("narration log /dev/full: cannot write").count(),
        1,
        "warned once: {log}"
    );
    assert!(log.contains("No space left on device"), "{log}");
}

#[test]
fn a_narration_log_removed_while_running_is_started_again() {
    let d = start(picture_folder, SCENES, None, None);
    let log = d.dir.join("narration.jsonl");
    // a describe before the first frame is refused ("no frame has been captured yet")
    wait_for(Duration::from_secs(30), "the first frame", || {
        d.status()["frames"]["watched"].as_u64().unwrap() > 0
    });
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["reply"], "narration", "{r}");
    wait_for(Duration::from_secs(30), "a first log line", || {
        records(&log).iter().any(|r| r["kind"] == "detail")
    });
    std::fs::remove_file(&log).unwrap();
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["reply"], "narration", "{r}");
    let records = d.stop();
    let details: Vec<&Value> = records.iter().filter(|r| r["kind"] == "detail").collect();
    assert_eq!(
        details.len(),
        1,
        "the new file has the new line: {records:#?}"
    );
    assert!(
        logged().contains(&format!(
            "narration log {}: the file was removed; starting a new one",
            log.display()
        )),
        "{}",
        logged()
    );
}

#[test]
fn a_panicking_thread_is_said_logged_and_stops_the_daemon_with_a_failure() {
    let d = start(picture_folder, SCENES, None, Some(3));
    let (stopped, d) = d.join();
    let stopped = stopped.unwrap();
    match &stopped {
        Stopped::Failed(why) => assert!(
            why.contains("the worker thread panicked: scripted failure in embedding 3"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(d.embeds.load(Ordering::SeqCst) >= 3);
    assert!(
        !d.socket.exists(),
        "no half-alive daemon: the socket is gone"
    );
    let records = records(&d.dir.join("narration.jsonl"));
    let failure: Vec<&Value> = records
        .iter()
        .filter(|r| r["text"] == "scenesay failed and is stopping.")
        .collect();
    assert_eq!(failure.len(), 1, "{records:#?}");
    assert_eq!(failure[0]["status"], "spoken", "said before stopping");
    assert!(
        logged().contains("the worker thread panicked: scripted failure in embedding 3"),
        "{}",
        logged()
    );
}

#[test]
fn a_model_loader_that_panics_is_a_model_failure_not_a_crash() {
    log_lines();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &picture_folder(dir.path()), "");
    let path = dir.path().join("config.toml");
    let config = Config::from_toml(&text, &path).unwrap();
    let r = daemon::run(
        &config,
        || -> anyhow::Result<Box<dyn Describer>> {
            panic!("index out of range in a damaged header")
        },
        Shutdown::new(),
    );
    let e = r.unwrap_err();
    assert_eq!(
        scenesay::exit::code_of(&e),
        scenesay::exit::MODEL_UNAVAILABLE
    );
    assert!(
        format!("{e:#}").contains("the model loader crashed: index out of range"),
        "{e:#}"
    );
    assert!(!dir.path().join("scenesay.sock").exists());
    let n = notices(&records(&dir.path().join("narration.jsonl")));
    assert!(
        n.contains(&"scenesay cannot start: the model could not be loaded.".to_string()),
        "{n:?}"
    );
}

/// A live source whose frame read blocks while `stuck` is set (a stalled camera), or that ends.
struct Stalling {
    stuck: Arc<std::sync::atomic::AtomicBool>,
    frames_left: u32,
}

impl FrameSource for Stalling {
    fn name(&self) -> String {
        "stalling camera".into()
    }
    fn live(&self) -> bool {
        true
    }
    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        while self.stuck.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.frames_left == 0 {
            return Ok(None);
        }
        self.frames_left -= 1;
        std::thread::sleep(Duration::from_millis(20));
        Ok(Some(RgbImage::new(4, 4)))
    }
}

#[test]
fn a_frame_read_that_never_returns_shows_as_a_capture_stall_and_waiting_does_not() {
    let stuck = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (slot, frames) = capture::frame_slot();
    let (tx, _speech) = crossbeam_channel::unbounded();
    let stats = Arc::new(Stats::new(Clock::new()));
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let (s, st) = (stuck.clone(), stats.clone());
    let thread = std::thread::spawn(move || {
        capture::run_capture(
            move || {
                Ok(Box::new(Stalling {
                    stuck: s.clone(),
                    frames_left: 100,
                }) as Box<dyn FrameSource>)
            },
            SourceKind::Camera,
            30.0,
            slot,
            Speaker::new(tx),
            st,
            stop,
        )
    });
    frames.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(stats.since_capture_beat() < Duration::from_millis(500));
    // the camera stalls inside a read: no more signs of life
    stuck.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        stats.since_capture_beat() >= Duration::from_secs(2),
        "{:?}",
        stats.since_capture_beat()
    );
    // it recovers, delivers its last frames and ends: waiting for the daemon to stop is alive
    stuck.store(false, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "the end of the source", || {
        stats.report().source_state == "ended"
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        stats.since_capture_beat() < Duration::from_millis(1500),
        "{:?}",
        stats.since_capture_beat()
    );
    drop(stop_tx);
    thread.join().unwrap();
}
