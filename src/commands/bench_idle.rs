//! `scenesay bench --idle SECONDS`: what a static view costs and how fast a change is heard, with
//! the change gate on and off, side by side in one run. The daemon runs in-process on a generated
//! view (the test pattern's colour bars, with sensor-like noise: no two frames alike) at `--fps`;
//! once its first scene has been narrated and the pace has had time to slow down, the processor
//! time of the whole process (getrusage: every thread, robust to other programs on the machine)
//! is measured for SECONDS; then the view changes (the checkerboard) and the time until the new
//! scene is narrated is measured.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use image::RgbImage;
use serde_json::Value;

use crate::capture::noise::{add_noise, Xorshift};
use crate::capture::pattern::TestPattern;
use crate::capture::{CaptureError, FrameSource};
use crate::config::{Config, SpeechBackend};
use crate::control::protocol::{Request, Response, StatusReport};
use crate::daemon::{self, Shutdown};
use crate::describer::Describer;
use crate::exit;
use crate::status::{cpu_percent, process_cpu_time};

/// The benchmark's settings.
#[derive(Debug, Clone)]
pub struct IdleBench {
    pub idle_s: f64,
    pub fps: f64,
    pub noise: u8,
    pub width: u32,
    pub height: u32,
}

/// The generated view: the colour bars until `changed`, then the checkerboard; noise on every
/// frame. It stands in for a camera (read less often while static).
struct View {
    width: u32,
    height: u32,
    noise: u8,
    changed: Arc<AtomicBool>,
    still: RgbImage,
    moved: RgbImage,
    rng: Xorshift,
}

impl FrameSource for View {
    fn name(&self) -> String {
        format!(
            "benchmark view {}x{} with noise ±{}",
            self.width, self.height, self.noise
        )
    }

    fn live(&self) -> bool {
        false
    }

    fn paceable(&self) -> bool {
        true
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        let mut img = if self.changed.load(Ordering::Relaxed) {
            self.moved.clone()
        } else {
            self.still.clone()
        };
        add_noise(&mut img, self.noise, &mut self.rng);
        Ok(Some(img))
    }
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct IdleFigures {
    /// Processor time over the static window, in percent of one core.
    pub cpu_percent: f64,
    pub window_s: f64,
    pub captured: u64,
    pub encoded: u64,
    pub gated: u64,
    /// From the change to the capture of the frame whose narration said it.
    pub noticed_s: Option<f64>,
    /// From the change to the first words of that narration.
    pub heard_s: Option<f64>,
}

fn status(socket: &Path) -> anyhow::Result<StatusReport> {
    match crate::control::client::request(socket, &Request::Status {}, Duration::from_secs(10))? {
        Response::Status(s) => Ok(*s),
        other => anyhow::bail!("unexpected status reply {other:?}"),
    }
}

/// The narration log's scene records.
fn scenes(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "scene")
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            anyhow::bail!("benchmark: no {what} within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A record's moment: its trigger time plus `ms` milliseconds.
fn record_time(r: &Value, plus_ms: f64) -> Option<SystemTime> {
    let t = humantime::parse_rfc3339_weak(r["time"].as_str()?)
        .or_else(|_| humantime::parse_rfc3339(r["time"].as_str().unwrap_or_default()))
        .ok()?;
    Some(t + Duration::from_secs_f64(plus_ms.max(0.0) / 1000.0))
}

fn secs_since(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .map(|d| d.as_secs_f64())
        .unwrap_or_else(|e| -e.duration().as_secs_f64())
}

/// Runs the daemon once (gate on or off) and measures.
fn run_once(
    b: &IdleBench,
    base: &Config,
    gate: bool,
    dir: &Path,
    load: impl FnOnce() -> anyhow::Result<Box<dyn Describer>> + Send,
) -> anyhow::Result<IdleFigures> {
    let mut cfg = base.clone();
    cfg.scene.gate = gate;
    cfg.capture.fps = b.fps;
    cfg.capture.noise = 0;
    // the benchmark times the noticing of a change, not the pauses between narrations
    cfg.scene.cooldown_s = 0.0;
    cfg.scene.settle_detail = false;
    cfg.speech.backend = SpeechBackend::Log;
    cfg.hotkey.key.clear();
    cfg.hotkey.repeat_key.clear();
    cfg.hotkey.pause_key.clear();
    cfg.hotkey.changed_key.clear();
    cfg.hotkey.read_key.clear();
    cfg.hotkey.new_key.clear();
    cfg.hotkey.mode_key.clear();
    let socket = dir.join(if gate { "on.sock" } else { "off.sock" });
    let log = dir.join(if gate { "on.jsonl" } else { "off.jsonl" });
    cfg.control.socket = socket.display().to_string();
    cfg.log.enabled = true;
    cfg.log.path = log.display().to_string();

    let changed = Arc::new(AtomicBool::new(false));
    let (w, h, noise) = (b.width, b.height, b.noise);
    let flag = changed.clone();
    let open: daemon::OpenSource = Box::new(move || {
        Ok(Box::new(View {
            width: w,
            height: h,
            noise,
            changed: flag.clone(),
            still: TestPattern::render(w, h, 0),
            moved: TestPattern::render(w, h, 1),
            rng: Xorshift::new(7),
        }) as Box<dyn FrameSource>)
    });
    let shutdown = Shutdown::new();
    let stop = shutdown.tx.clone();
    let daemon = std::thread::scope(|s| -> anyhow::Result<IdleFigures> {
        let handle = s.spawn(|| daemon::run_with_source(&cfg, load, Some(open), shutdown));
        let result = (|| {
            wait_for("control socket", Duration::from_secs(600), || {
                handle.is_finished() || status(&socket).is_ok()
            })?;
            wait_for("first scene narration", Duration::from_secs(600), || {
                handle.is_finished()
                    // spoken, or suppressed (random weights often say nothing speakable)
                    || (!scenes(&log).is_empty()
                        && status(&socket).is_ok_and(|s| s.state == "watching"))
            })?;
            anyhow::ensure!(!handle.is_finished(), "the daemon stopped early");
            // time for the pace to slow down (both runs wait the same)
            std::thread::sleep(Duration::from_secs_f64(cfg.capture.idle_after_s + 1.0));
            let before = status(&socket)?;
            let from = (Duration::ZERO, process_cpu_time());
            let t = Instant::now();
            std::thread::sleep(Duration::from_secs_f64(b.idle_s));
            let to = (t.elapsed(), process_cpu_time());
            let after = status(&socket)?;
            let seen = scenes(&log).len();
            let at = SystemTime::now();
            changed.store(true, Ordering::Relaxed);
            // A model that sees no scene change between the two views (the distance of their
            // embeddings stays under `[scene] threshold`, as with random weights) never narrates
            // it: after a bounded wait the latency is reported as not measured, not waited for.
            let limit = Duration::from_secs_f64((3.0 * cfg.scene.max_unseen_s).max(30.0));
            let narrated = wait_for("narration of the changed view", limit, || {
                scenes(&log).len() > seen
            })
            .is_ok();
            let r = if narrated {
                scenes(&log).remove(seen)
            } else {
                eprintln!(
                    "bench --idle: the changed view was not narrated within {} s (the model saw no scene change: embedding distance under [scene] threshold)",
                    limit.as_secs()
                );
                Value::Null
            };
            let first = r["latency_ms"]["first_speech"]
                .as_f64()
                .or_else(|| r["latency_ms"]["first_text"].as_f64());
            let d = |a: u64, b: u64| a.saturating_sub(b);
            Ok(IdleFigures {
                cpu_percent: cpu_percent(from, to).unwrap_or(f64::NAN),
                window_s: to.0.as_secs_f64(),
                captured: d(after.frames.captured, before.frames.captured),
                encoded: d(after.frames.encoded, before.frames.encoded),
                gated: d(after.frames.gated, before.frames.gated),
                noticed_s: record_time(&r, 0.0).map(|t| secs_since(at, t)),
                heard_s: first
                    .and_then(|ms| record_time(&r, ms))
                    .map(|t| secs_since(at, t)),
            })
        })();
        let _ = stop.send(());
        let stopped = handle
            .join()
            .map_err(|_| anyhow::anyhow!("the daemon panicked"))?;
        // the daemon's own error explains an early stop best
        stopped.context("the daemon failed")?;
        result
    });
    daemon
}

/// The instruction set the model's kernels use (`SCENESAY_ISA` can lower it).
pub fn instruction_set() -> &'static str {
    use crate::model::kernels::simd::Isa;
    match Isa::detect() {
        Isa::Avx512 => "AVX-512",
        Isa::Avx2 => "AVX2",
        Isa::Scalar => "scalar",
    }
}

/// Runs both measurements and prints the table.
pub fn run(
    b: IdleBench,
    base: Config,
    load: impl Fn() -> anyhow::Result<Box<dyn Describer>> + Sync,
) -> anyhow::Result<u8> {
    if !(b.idle_s >= 1.0 && b.idle_s <= 3600.0) {
        return Err(exit::Exit::new(
            exit::USAGE,
            anyhow::anyhow!("--idle must be 1 to 3600 seconds (e.g. 20)"),
        )
        .into());
    }
    if !(b.fps > 0.0 && b.fps <= 60.0) {
        return Err(exit::Exit::new(
            exit::USAGE,
            anyhow::anyhow!("--fps must be above 0 and at most 60 (e.g. 2)"),
        )
        .into());
    }
    // the socket and the narration log of the runs, removed afterwards
    let dir: PathBuf =
        std::env::temp_dir().join(format!("scenesay-bench-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {} for the benchmark", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // the control socket's folder must be private
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    let mut results = vec![];
    for gate in [true, false] {
        eprintln!(
            "bench --idle: gate {}: loading the model, then {:.0} s of a static view…",
            if gate { "on" } else { "off" },
            b.idle_s
        );
        let r = run_once(&b, &base, gate, &dir, &load);
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        results.push(r?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "static view {}x{} with noise ±{} at {} fps (idle {} fps after {} s), {} s measured; {} threads, {}",
        b.width,
        b.height,
        b.noise,
        b.fps,
        base.capture.idle_fps.min(b.fps),
        base.capture.idle_after_s,
        b.idle_s,
        rayon::current_num_threads(),
        instruction_set()
    )?;
    writeln!(o, "{:<40} {:>12} {:>12}", "", "gate on", "gate off")?;
    let row = |o: &mut dyn Write, name: &str, f: &dyn Fn(&IdleFigures) -> String| {
        writeln!(
            o,
            "{:<40} {:>12} {:>12}",
            name,
            f(&results[0]),
            f(&results[1])
        )
    };
    row(&mut o, "processor, % of one core", &|r| {
        format!("{:.1}", r.cpu_percent)
    })?;
    row(&mut o, "frames captured in the window", &|r| {
        r.captured.to_string()
    })?;
    row(&mut o, "frames encoded in the window", &|r| {
        r.encoded.to_string()
    })?;
    row(&mut o, "frames gated out in the window", &|r| {
        r.gated.to_string()
    })?;
    let s = |x: Option<f64>| {
        x.map(|v| format!("{v:.2} s"))
            .unwrap_or_else(|| "not narrated".into())
    };
    row(&mut o, "change → frame narrated was captured", &|r| {
        s(r.noticed_s)
    })?;
    row(&mut o, "change → first words of its narration", &|r| {
        s(r.heard_s)
    })?;
    Ok(exit::OK)
}
