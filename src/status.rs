//! Shared daemon state read by `scenesay ctl status`, STATUS= and the watchdog: the daemon clock,
//! frame counters (atomics), and a few small facts behind one short-held lock. Only the thread
//! that owns a fact writes it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capture::{Pace, Stills};
use crate::control::protocol::{CpuShare, FrameCounts, LastNarration, RecentLatency, StatusReport};

/// Time since the daemon started: the clock of every policy decision.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// `t` on this clock.
    pub fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }
}

const RECENT: usize = 10;

/// The window of the processor share in `status`.
pub const CPU_WINDOW: Duration = Duration::from_secs(60);
/// How often the processor time is sampled.
const CPU_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Processor time this process has used (user + system, all threads).
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv =
        |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The share of one core used between two (daemon clock, processor time) samples, in percent.
pub fn cpu_percent(from: (Duration, Duration), to: (Duration, Duration)) -> Option<f64> {
    let wall = to.0.checked_sub(from.0)?.as_secs_f64();
    (wall >= 1.0).then(|| 100.0 * to.1.saturating_sub(from.1).as_secs_f64() / wall)
}

#[derive(Debug, Default)]
struct Facts {
    state: String,
    source: String,
    source_state: String,
    speech_backend: String,
    speech_voice: crate::speech::Voice,
    last: Option<LastNarration>,
    latencies: VecDeque<RecentLatency>,
    paused_by: Vec<String>,
    session: String,
}

/// Counters and facts shared by the daemon's threads.
#[derive(Debug)]
pub struct Stats {
    pub clock: Clock,
    pub captured: AtomicU64,
    pub watched: AtomicU64,
    pub described: AtomicU64,
    pub dropped: AtomicU64,
    /// Clear frames the scene encoder looked at, and those the change gate kept from it.
    pub encoded: AtomicU64,
    pub gated: AtomicU64,
    pub paused: AtomicBool,
    /// How fast the capture takes frames (the worker sets it).
    pub pace: Arc<Pace>,
    /// Camera buffers skipped because they could not be decoded.
    pub bad_frames: AtomicU64,
    /// Still-frame requests from the worker to the capture thread.
    pub stills: Stills,
    /// (daemon clock, processor time) every few seconds over the last minute.
    cpu: Mutex<VecDeque<(Duration, Duration)>>,
    cpu_sampled_ms: AtomicU64,
    /// Worker progress (milliseconds on the daemon clock), for the watchdog.
    heartbeat_ms: AtomicU64,
    /// Capture thread progress (milliseconds on the daemon clock): a frame read that never returns
    /// (a stalled camera) stops it.
    capture_ms: AtomicU64,
    facts: Mutex<Facts>,
}

impl Stats {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            captured: AtomicU64::new(0),
            watched: AtomicU64::new(0),
            described: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            encoded: AtomicU64::new(0),
            gated: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            pace: Arc::default(),
            bad_frames: AtomicU64::new(0),
            stills: Stills::default(),
            cpu: Mutex::new(VecDeque::from([(clock.now(), process_cpu_time())])),
            cpu_sampled_ms: AtomicU64::new(0),
            heartbeat_ms: AtomicU64::new(0),
            capture_ms: AtomicU64::new(0),
            facts: Mutex::new(Facts {
                state: "starting".into(),
                ..Default::default()
            }),
        }
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        // a panic elsewhere must not take status down with it
        self.facts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker is alive and making progress.
    pub fn beat(&self) {
        let now = self.clock.now().as_millis() as u64;
        self.heartbeat_ms.store(now, Ordering::Relaxed);
        let last = self.cpu_sampled_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= CPU_SAMPLE_EVERY.as_millis() as u64 {
            self.cpu_sampled_ms.store(now, Ordering::Relaxed);
            self.sample_cpu();
        }
    }

    /// Notes the processor time now, forgetting samples older than the window needs.
    fn sample_cpu(&self) {
        let now = self.clock.now();
        let mut q = self.cpu.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back((now, process_cpu_time()));
        // keep the newest sample at least a window old, drop those before it
        while q.len() > 1 && now.saturating_sub(q[1].0) >= CPU_WINDOW {
            q.pop_front();
        }
    }

    /// The processor share over the last minute (since the start when younger).
    pub fn cpu_share(&self) -> Option<CpuShare> {
        let from = *self.cpu.lock().unwrap_or_else(|e| e.into_inner()).front()?;
        let to = (self.clock.now(), process_cpu_time());
        let percent = cpu_percent(from, to)?;
        Some(CpuShare {
            percent_of_one_core: (percent * 10.0).round() / 10.0,
            window_s: ((to.0 - from.0).as_secs_f64() * 10.0).round() / 10.0,
        })
    }

    /// Time since the worker last made progress.
    pub fn since_beat(&self) -> Duration {
        self.clock.now().saturating_sub(Duration::from_millis(
            self.heartbeat_ms.load(Ordering::Relaxed),
        ))
    }

    /// The capture thread is alive (between frames, or waiting on purpose).
    pub fn capture_beat(&self) {
        self.capture_ms
            .store(self.clock.now().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the capture thread last showed it was alive.
    pub fn since_capture_beat(&self) -> Duration {
        self.clock.now().saturating_sub(Duration::from_millis(
            self.capture_ms.load(Ordering::Relaxed),
        ))
    }

    pub fn set_state(&self, s: &str) {
        self.facts().state = s.to_string();
    }

    pub fn set_source(&self, name: &str, state: &str) {
        let mut f = self.facts();
        f.source = name.to_string();
        f.source_state = state.to_string();
    }

    /// The source's condition ("running", "paused", "ended", "retrying: …").
    pub fn source_state(&self) -> String {
        self.facts().source_state.clone()
    }

    pub fn set_speech_backend(&self, name: &str) {
        self.facts().speech_backend = name.to_string();
    }

    /// The speech settings in use (changed by `scenesay ctl rate|volume|voice`).
    pub fn set_speech_voice(&self, v: &crate::speech::Voice) {
        self.facts().speech_voice = v.clone();
    }

    /// Why narration is paused (the worker sets it; empty while it runs).
    pub fn set_paused_by(&self, why: &[&str]) {
        self.facts().paused_by = why.iter().map(|s| s.to_string()).collect();
    }

    /// Whether the login session is followed (the session thread sets it).
    pub fn set_session(&self, s: &str) {
        self.facts().session = s.to_string();
    }

    /// A narration was heard (fully or in part).
    pub fn heard(&self, last: LastNarration, latency: RecentLatency) {
        let mut f = self.facts();
        f.last = Some(last);
        if f.latencies.len() == RECENT {
            f.latencies.pop_front();
        }
        f.latencies.push_back(latency);
    }

    pub fn report(&self) -> StatusReport {
        let f = self.facts();
        let paused = self.paused.load(Ordering::Relaxed);
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: (self.clock.now().as_secs_f64() * 10.0).round() / 10.0,
            state: if paused && f.state == "watching" {
                "paused".to_string()
            } else {
                f.state.clone()
            },
            paused,
            source: f.source.clone(),
            source_state: f.source_state.clone(),
            speech_backend: f.speech_backend.clone(),
            speech: f.speech_voice.clone(),
            frames: FrameCounts {
                captured: self.captured.load(Ordering::Relaxed),
                watched: self.watched.load(Ordering::Relaxed),
                described: self.described.load(Ordering::Relaxed),
                dropped: self.dropped.load(Ordering::Relaxed),
                encoded: self.encoded.load(Ordering::Relaxed),
                gated: self.gated.load(Ordering::Relaxed),
                bad: self.bad_frames.load(Ordering::Relaxed),
            },
            pace: self.pace.get().name().to_string(),
            cpu: self.cpu_share(),
            last_narration: f.last.clone(),
            recent_latencies: f.latencies.iter().cloned().collect(),
            paused_by: f.paused_by.clone(),
            session: f.session.clone(),
        }
    }

    /// One line for systemd's STATUS=.
    pub fn summary(&self) -> String {
        let r = self.report();
        let mut s = format!(
            "{}; {} frames, {} described, {} dropped",
            r.state, r.frames.captured, r.frames.described, r.frames.dropped
        );
        if r.source_state != "running" && !r.source_state.is_empty() {
            s.push_str(&format!("; {}: {}", r.source, r.source_state));
        }
        s
    }
}
