//! Frame capture. A [`FrameSource`] yields RGB frames: a camera (nokhwa over V4L2), a folder or
//! glob of pictures, a video file (decoded by an ffmpeg child process), a generated test
//! pattern, a network camera (`stream`: RTSP or MJPEG over HTTP through ffmpeg), or a PipeWire
//! camera or any GStreamer pipeline (`pipewire`, `gstreamer`: a gst-launch-1.0 child); the child
//! processes share [`child`]. The capture thread ([`run_capture`]) paces file sources at `fps`, hands frames over
//! through a one-frame slot where the freshest frame replaces a stale one ([`FrameSlot`]: memory
//! never grows and the model always sees the present), and survives source failures: a missing or
//! unplugged camera is reported once (spoken and logged) and retried with backoff until it works.
//! The thread shows it is alive ([`Stats::capture_beat`]) between frames and while it waits, so a
//! frame read that never returns (a stalled camera) stops the systemd watchdog.
//!
//! Adaptive pace ([`Pace`], set by the worker): while the view is static the camera and the test
//! pattern are read at `idle_fps` only, and at `fps` again from the moment the view changes;
//! pictures and videos are recordings and keep their `fps`. While narration is paused nothing is
//! read at all, and the camera is released (its light goes off) until narration resumes.

pub mod camera;
pub mod child;
pub mod decode;
pub mod gstreamer;
pub mod health;
pub mod images;
pub mod negotiate;
pub mod noise;
pub mod pattern;
pub mod stream;
pub mod video;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use image::RgbImage;

use crate::config::{CaptureConfig, SourceKind};
use crate::speech::service::Speaker;
use crate::status::Stats;

/// One captured frame. Frames are only ever held in memory.
#[derive(Debug, Clone)]
pub struct Frame {
    /// 1, 2, 3 … in capture order.
    pub number: u64,
    pub image: Arc<RgbImage>,
    pub captured: Instant,
}

/// Why a source cannot deliver frames. `spoken()` is what the user hears.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaptureError {
    #[error("camera {device}: {message}")]
    Camera { device: String, message: String },
    #[error("{0}")]
    Images(String),
    #[error("{0}")]
    Video(String),
    /// A network camera (`url` without its password).
    #[error("stream {url}: {message}")]
    Stream { url: String, message: String },
    /// A `pipewire` or `gstreamer` pipeline (`kind` is which).
    #[error("{kind}: {message}")]
    Pipeline { kind: &'static str, message: String },
}

impl CaptureError {
    /// A short sentence for speech.
    pub fn spoken(&self) -> &'static str {
        match self {
            CaptureError::Camera { .. } => "Camera not available. I will keep trying.",
            CaptureError::Images(_) => "Cannot read the pictures. I will keep trying.",
            CaptureError::Video(_) => "Cannot play the video. I will keep trying.",
            CaptureError::Stream { .. } => "Camera stream not available. I will keep trying.",
            CaptureError::Pipeline { .. } => "Camera not available. I will keep trying.",
        }
    }
}

/// Something that yields frames.
pub trait FrameSource {
    /// For messages: "camera /dev/video0", "images ~/frames (12 files)".
    fn name(&self) -> String;
    /// A live source delivers frames in real time and paces itself; others are paced at `fps` by
    /// the capture loop.
    fn live(&self) -> bool;
    /// The next frame; `Ok(None)` when a finite source has ended.
    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError>;
    /// Whether it shows the present, so it may be read less often while the view is static (a
    /// camera, the test pattern; not a recording, which would be stretched).
    fn paceable(&self) -> bool {
        self.live()
    }
    /// Whether it holds a device to let go of while narration is paused (a camera).
    fn release_when_paused(&self) -> bool {
        self.live()
    }
    /// Whether it has a still mode with more pixels than its frames (a camera whose highest
    /// resolution is above the watch's): see [`FrameSource::still_frame`].
    fn has_still(&self) -> bool {
        false
    }
    /// One frame at the source's highest resolution, for a detail or read request (a camera
    /// switches to its still mode for it and back); `Ok(None)`: no still mode.
    fn still_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        Ok(None)
    }
    /// Buffers skipped since the last call because they could not be decoded.
    fn take_bad_frames(&mut self) -> u64 {
        0
    }
}

/// Requests for one still frame, from the worker (a detail, read or ask request) to the capture
/// thread, which owns the camera. The capture thread answers between two frames; while the source
/// has no still mode, is paused or failing, requests are not made or are answered with nothing,
/// and the worker uses the watch's frame.
#[derive(Debug)]
pub struct Stills {
    tx: Sender<Sender<Option<RgbImage>>>,
    rx: Receiver<Sender<Option<RgbImage>>>,
    available: std::sync::atomic::AtomicBool,
}

impl Default for Stills {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(4);
        Self {
            tx,
            rx,
            available: Default::default(),
        }
    }
}

/// How long the worker waits for a still frame before it uses the watch's frame.
pub const STILL_WAIT: Duration = Duration::from_secs(4);

impl Stills {
    /// Whether the source now has a still mode (set by the capture thread).
    pub fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    pub fn set_available(&self, yes: bool) {
        self.available.store(yes, Ordering::Relaxed);
        if !yes {
            self.decline_waiting();
        }
    }

    /// A still frame, waiting at most `wait`; `None` when the source has none to give.
    pub fn request(&self, wait: Duration) -> Option<RgbImage> {
        if !self.available() {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx.try_send(tx).ok()?;
        rx.recv_timeout(wait).ok().flatten()
    }

    /// The capture thread: answers a waiting request with `take()`.
    pub fn serve(&self, take: impl FnOnce() -> Option<RgbImage>) -> bool {
        let Ok(reply) = self.rx.try_recv() else {
            return false;
        };
        let _ = reply.send(take());
        true
    }

    /// Answers every waiting request with nothing.
    pub fn decline_waiting(&self) {
        for reply in self.rx.try_iter() {
            let _ = reply.send(None);
        }
    }
}

/// How fast the capture thread takes frames: set by the worker, read by the capture thread.
#[derive(Debug, Default)]
pub struct Pace(AtomicU8);

/// The pace's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceState {
    /// `fps`.
    Full,
    /// A static view: `idle_fps` (for sources that show the present).
    Idle,
    /// Narration is paused: no frames, the camera released.
    Paused,
}

impl PaceState {
    pub fn name(self) -> &'static str {
        match self {
            PaceState::Full => "full",
            PaceState::Idle => "idle",
            PaceState::Paused => "paused",
        }
    }
}

impl Pace {
    pub fn get(&self) -> PaceState {
        match self.0.load(Ordering::Relaxed) {
            1 => PaceState::Idle,
            2 => PaceState::Paused,
            _ => PaceState::Full,
        }
    }

    pub fn set(&self, s: PaceState) {
        let v = match s {
            PaceState::Full => 0,
            PaceState::Idle => 1,
            PaceState::Paused => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }
}

/// The frame rates of the capture: `fps`, and `idle_fps` while the view is static.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub fps: f64,
    pub idle_fps: f64,
}

impl Rates {
    /// One rate, never slower.
    pub fn fixed(fps: f64) -> Self {
        Self { fps, idle_fps: fps }
    }

    pub fn from_config(cfg: &CaptureConfig) -> Self {
        Self {
            fps: cfg.fps,
            idle_fps: cfg.idle_fps,
        }
    }

    /// Time between two frames at `state` (paused: as at full pace; nothing is read then anyway).
    pub fn interval(&self, state: PaceState, paceable: bool) -> Duration {
        let fps = match state {
            PaceState::Idle if paceable => self.idle_fps.min(self.fps),
            _ => self.fps,
        };
        Duration::from_secs_f64(1.0 / fps.max(1e-3))
    }
}

/// Opens the source described by `[capture]`.
pub fn open_source(cfg: &CaptureConfig) -> Result<Box<dyn FrameSource>, CaptureError> {
    open_source_paced(cfg, Arc::new(Pace::default()))
}

/// Opens the source described by `[capture]`, a camera following `pace`; with `noise`, noise is
/// added to every frame.
pub fn open_source_paced(
    cfg: &CaptureConfig,
    pace: Arc<Pace>,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    let source: Box<dyn FrameSource> = match cfg.source {
        SourceKind::Camera => Box::new(camera::Camera::open(cfg, pace)?),
        SourceKind::Images => Box::new(images::ImageSequence::open(
            &cfg.path,
            cfg.looping,
            cfg.repeat_each,
        )?),
        SourceKind::Video => Box::new(video::Video::open(&cfg.path, cfg.fps, cfg.looping)?),
        SourceKind::TestPattern => Box::new(pattern::TestPattern::new(cfg.width, cfg.height)),
        SourceKind::Stream => Box::new(stream::Stream::open(cfg, pace)?),
        SourceKind::Pipewire | SourceKind::Gstreamer => {
            Box::new(gstreamer::Pipeline::open(cfg, pace)?)
        }
    };
    Ok(if cfg.noise > 0 {
        Box::new(noise::Noisy::new(source, cfg.noise))
    } else {
        source
    })
}

/// The producer side of the one-frame hand-over.
#[derive(Debug, Clone)]
pub struct FrameSlot {
    tx: Sender<Frame>,
    rx: Receiver<Frame>,
}

/// A one-frame channel: the receiver always finds the freshest frame.
pub fn frame_slot() -> (FrameSlot, Receiver<Frame>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    (FrameSlot { tx, rx: rx.clone() }, rx)
}

/// The result of offering a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The slot was empty.
    Delivered,
    /// A frame nobody had taken yet was thrown away for this one.
    ReplacedStale,
    /// The consumer is gone.
    Closed,
}

impl FrameSlot {
    /// Puts `frame` in the slot, throwing away a frame still waiting there.
    pub fn offer(&self, frame: Frame) -> Offer {
        let mut frame = frame;
        let mut replaced = false;
        loop {
            match self.tx.try_send(frame) {
                Ok(()) => {
                    return if replaced {
                        Offer::ReplacedStale
                    } else {
                        Offer::Delivered
                    }
                }
                Err(TrySendError::Full(f)) => {
                    frame = f;
                    if self.rx.try_recv().is_ok() {
                        replaced = true;
                    }
                }
                Err(TrySendError::Disconnected(_)) => return Offer::Closed,
            }
        }
    }
}

pub use health::backoff;

/// Waits `d` unless `stop` fires first, showing the thread alive at least once a second; true
/// when stopped.
fn wait_or_stop(stop: &Receiver<()>, d: Duration, stats: &Stats) -> bool {
    let end = Instant::now() + d;
    loop {
        stats.capture_beat();
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match stop.recv_timeout(left.min(Duration::from_secs(1))) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return true,
        }
    }
}

/// The capture loop: opens the source (retrying with backoff), paces and offers frames, until
/// `stop` closes or the consumer goes away. A finite source that ends leaves the loop idle (the
/// worker keeps the last frame for questions).
pub fn run_capture(
    open: impl FnMut() -> Result<Box<dyn FrameSource>, CaptureError>,
    kind: SourceKind,
    fps: f64,
    slot: FrameSlot,
    speaker: Speaker,
    stats: Arc<Stats>,
    stop: Receiver<()>,
) {
    run_capture_paced(open, kind, Rates::fixed(fps), slot, speaker, stats, stop)
}

/// How often the capture thread looks at the pace while it waits for the next frame.
const PACE_POLL: Duration = Duration::from_millis(50);
/// How often it looks while paused.
const PAUSE_POLL: Duration = Duration::from_millis(250);

/// Waits while narration is paused (`stats.pace`); true when stopped.
fn wait_while_paused(stop: &Receiver<()>, stats: &Stats) -> bool {
    while stats.pace.get() == PaceState::Paused {
        stats.stills.decline_waiting();
        if wait_or_stop(stop, PAUSE_POLL, stats) {
            return true;
        }
    }
    false
}

/// [`run_capture`] at the pace the worker sets in `stats.pace`: `rates.idle_fps` while the view is
/// static (sources that show the present), nothing while paused (a camera is closed, and opened
/// again on resume).
pub fn run_capture_paced(
    mut open: impl FnMut() -> Result<Box<dyn FrameSource>, CaptureError>,
    kind: SourceKind,
    rates: Rates,
    slot: FrameSlot,
    speaker: Speaker,
    stats: Arc<Stats>,
    stop: Receiver<()>,
) {
    let mut number = 0u64;
    let mut outage = health::Outage::new();
    // however the loop ends, no still frame is offered any more
    struct StillsOff<'a>(&'a Stats);
    impl Drop for StillsOff<'_> {
        fn drop(&mut self) {
            self.0.stills.set_available(false);
        }
    }
    let _stills_off = StillsOff(&stats);
    'open: loop {
        stats.capture_beat();
        stats.stills.set_available(false);
        let mut source = match open() {
            Ok(s) => s,
            Err(e) => {
                let wait = fail(&e, &mut outage, &speaker, &stats);
                if wait_or_stop(&stop, wait, &stats) {
                    return;
                }
                continue 'open;
            }
        };
        let name = source.name();
        if outage.active() {
            // "working again" waits for the first good frame: a camera that opens and then
            // fails at once is still out
            tracing::info!("{name}: opened again");
        } else {
            tracing::info!("capturing from {name}");
        }
        stats.set_source(&name, "running");
        stats.stills.set_available(source.has_still());
        let live = source.live();
        let paceable = source.paceable();
        let mut last_at: Option<Instant> = None;
        loop {
            if stats.pace.get() == PaceState::Paused {
                if source.release_when_paused() {
                    stats.stills.set_available(false);
                    drop(source);
                    tracing::info!("{name}: released while narration is paused");
                    stats.set_source(&name, "paused");
                    if wait_while_paused(&stop, &stats) {
                        return;
                    }
                    continue 'open;
                }
                stats.set_source(&name, "paused");
                if wait_while_paused(&stop, &stats) {
                    return;
                }
                stats.set_source(&name, "running");
                continue;
            }
            if !live {
                // due one interval after the last frame, at the pace of the moment (a view that
                // starts changing brings the next frame forward)
                let mut stopped = false;
                while let Some(t) = last_at {
                    let state = stats.pace.get();
                    let due = t + rates.interval(state, paceable);
                    let now = Instant::now();
                    if now >= due || state == PaceState::Paused {
                        break;
                    }
                    stats.capture_beat();
                    match stop.recv_timeout((due - now).min(PACE_POLL)) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => {
                            stopped = true;
                            break;
                        }
                    }
                }
                if stopped {
                    return;
                }
                if stats.pace.get() == PaceState::Paused {
                    continue;
                }
                last_at = Some(Instant::now());
            }
            match stop.try_recv() {
                Err(crossbeam_channel::TryRecvError::Empty) => {}
                _ => return,
            }
            stats.capture_beat();
            let mut still_failed = None;
            stats.stills.serve(|| match source.still_frame() {
                Ok(still) => still,
                Err(e) => {
                    still_failed = Some(e);
                    None
                }
            });
            let next = match still_failed {
                Some(e) => Err(e),
                None => source.next_frame(),
            };
            let bad = source.take_bad_frames();
            if bad > 0 {
                stats
                    .bad_frames
                    .fetch_add(bad, std::sync::atomic::Ordering::Relaxed);
            }
            match next {
                Ok(Some(image)) => {
                    if outage.frame().is_some() {
                        tracing::info!("{name}: working again");
                        speaker.notice(words(kind).back);
                    }
                    number += 1;
                    Stats::inc(&stats.captured);
                    let frame = Frame {
                        number,
                        image: Arc::new(image),
                        captured: Instant::now(),
                    };
                    match slot.offer(frame) {
                        Offer::Delivered => {}
                        Offer::ReplacedStale => Stats::inc(&stats.dropped),
                        Offer::Closed => return,
                    }
                }
                Ok(None) => {
                    tracing::info!("{name}: end of the sequence after {number} frames");
                    stats.set_source(&name, "ended");
                    speaker.notice(words(kind).ended);
                    // idle but alive until the daemon stops
                    while !wait_or_stop(&stop, Duration::from_secs(3600), &stats) {}
                    return;
                }
                Err(e) => {
                    stats.stills.set_available(false);
                    drop(source);
                    let wait = fail(&e, &mut outage, &speaker, &stats);
                    if wait_or_stop(&stop, wait, &stats) {
                        return;
                    }
                    continue 'open;
                }
            }
        }
    }
}

/// What the user hears when a source comes back or ends.
struct Words {
    back: &'static str,
    ended: &'static str,
}

fn words(kind: SourceKind) -> Words {
    match kind {
        SourceKind::Camera => Words {
            back: "Camera is working again.",
            ended: "The camera stopped.",
        },
        SourceKind::Images => Words {
            back: "Pictures can be read again.",
            ended: "End of the pictures.",
        },
        SourceKind::Video => Words {
            back: "Video is playing again.",
            ended: "End of the video.",
        },
        SourceKind::TestPattern => Words {
            back: "Test pattern is running again.",
            ended: "End of the test pattern.",
        },
        SourceKind::Stream => Words {
            back: "Camera stream is working again.",
            ended: "The camera stream stopped.",
        },
        SourceKind::Pipewire | SourceKind::Gstreamer => Words {
            back: "Camera is working again.",
            ended: "The camera stopped.",
        },
    }
}

/// Reports a failure ([`health::Outage`]): logged every time it changes, spoken once per
/// outage; returns how long to wait before the next attempt.
fn fail(
    e: &CaptureError,
    outage: &mut health::Outage,
    speaker: &Speaker,
    stats: &Stats,
) -> Duration {
    let msg = e.to_string();
    stats.set_source(&source_label(e), &format!("retrying: {msg}"));
    let step = outage.failed(&msg);
    match (step.notice, step.log) {
        (Some(_), _) => {
            tracing::warn!(
                "{msg}; retrying in {} s (and then less often)",
                step.retry_in.as_secs()
            );
            speaker.notice(e.spoken());
        }
        (None, health::LogLevel::Warn) => tracing::warn!("{msg}; still retrying"),
        (None, health::LogLevel::Debug) => tracing::debug!("{msg}; retry {}", step.attempt),
    }
    step.retry_in
}

fn source_label(e: &CaptureError) -> String {
    match e {
        CaptureError::Camera { device, .. } => format!("camera {device}"),
        CaptureError::Images(_) => "images".into(),
        CaptureError::Video(_) => "video".into(),
        CaptureError::Stream { url, .. } => format!("stream {url}"),
        CaptureError::Pipeline { kind, .. } => (*kind).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Frame {
        Frame {
            number: n,
            image: Arc::new(RgbImage::new(1, 1)),
            captured: Instant::now(),
        }
    }

    #[test]
    fn the_freshest_frame_wins() {
        let (slot, rx) = frame_slot();
        assert_eq!(slot.offer(frame(1)), Offer::Delivered);
        assert_eq!(slot.offer(frame(2)), Offer::ReplacedStale);
        assert_eq!(slot.offer(frame(3)), Offer::ReplacedStale);
        assert_eq!(rx.try_recv().unwrap().number, 3);
        assert!(rx.try_recv().is_err(), "one frame at most");
        assert_eq!(slot.offer(frame(4)), Offer::Delivered);
        assert_eq!(rx.len(), 1);
        drop(rx);
        // the slot itself still holds a receiver: only a fully dropped consumer closes it
        assert_ne!(slot.offer(frame(5)), Offer::Closed);
    }

    #[test]
    fn backoff_grows_to_thirty_seconds() {
        let s: Vec<u64> = (0..8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
