//! Frame capture. A [`FrameSource`] yields RGB frames: a camera (nokhwa over V4L2), a folder or
//! glob of pictures, a video file (decoded by an ffmpeg child process), or a generated test
//! pattern. The capture thread ([`run_capture`]) paces file sources at `fps`, hands frames over
//! through a one-frame slot where the freshest frame replaces a stale one ([`FrameSlot`]: memory
//! never grows and the model always sees the present), and survives source failures: a missing or
//! unplugged camera is reported once (spoken and logged) and retried with backoff until it works.

pub mod camera;
pub mod images;
pub mod pattern;
pub mod video;

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
}

impl CaptureError {
    /// A short sentence for speech.
    pub fn spoken(&self) -> &'static str {
        match self {
            CaptureError::Camera { .. } => "Camera not available. I will keep trying.",
            CaptureError::Images(_) => "Cannot read the pictures. I will keep trying.",
            CaptureError::Video(_) => "Cannot play the video. I will keep trying.",
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
}

/// Opens the source described by `[capture]`.
pub fn open_source(cfg: &CaptureConfig) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(match cfg.source {
        SourceKind::Camera => Box::new(camera::Camera::open(cfg)?),
        SourceKind::Images => Box::new(images::ImageSequence::open(
            &cfg.path,
            cfg.looping,
            cfg.repeat_each,
        )?),
        SourceKind::Video => Box::new(video::Video::open(&cfg.path, cfg.fps, cfg.looping)?),
        SourceKind::TestPattern => {
            Box::new(pattern::TestPattern::new(cfg.width, cfg.height, cfg.fps))
        }
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

/// Backoff between attempts to (re)open a failing source: 1, 2, 4 … 30 seconds.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.min(5)).min(30))
}

/// Waits `d` unless `stop` fires first; true when stopped.
fn wait_or_stop(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

/// The capture loop: opens the source (retrying with backoff), paces and offers frames, until
/// `stop` closes or the consumer goes away. A finite source that ends leaves the loop idle (the
/// worker keeps the last frame for questions).
pub fn run_capture(
    mut open: impl FnMut() -> Result<Box<dyn FrameSource>, CaptureError>,
    kind: SourceKind,
    fps: f64,
    slot: FrameSlot,
    speaker: Speaker,
    stats: Arc<Stats>,
    stop: Receiver<()>,
) {
    let interval = Duration::from_secs_f64(1.0 / fps);
    let mut number = 0u64;
    let mut failures = 0u32;
    let mut reported: Option<String> = None;
    'open: loop {
        let mut source = match open() {
            Ok(s) => s,
            Err(e) => {
                fail(&e, &mut failures, &mut reported, &speaker, &stats);
                if wait_or_stop(&stop, backoff(failures - 1)) {
                    return;
                }
                continue 'open;
            }
        };
        let name = source.name();
        if reported.take().is_some() {
            tracing::info!("{name}: working again");
            speaker.notice(words(kind).back);
        } else {
            tracing::info!("capturing from {name}");
        }
        failures = 0;
        stats.set_source(&name, "running");
        let live = source.live();
        let mut next_at = Instant::now();
        loop {
            if !live {
                let now = Instant::now();
                if next_at > now && wait_or_stop(&stop, next_at - now) {
                    return;
                }
                next_at = (next_at + interval).max(Instant::now());
            }
            match stop.try_recv() {
                Err(crossbeam_channel::TryRecvError::Empty) => {}
                _ => return,
            }
            match source.next_frame() {
                Ok(Some(image)) => {
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
                    let _ = stop.recv();
                    return;
                }
                Err(e) => {
                    drop(source);
                    fail(&e, &mut failures, &mut reported, &speaker, &stats);
                    if wait_or_stop(&stop, backoff(failures - 1)) {
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
    }
}

/// Reports a failure: logged every time it changes, spoken once per outage.
fn fail(
    e: &CaptureError,
    failures: &mut u32,
    reported: &mut Option<String>,
    speaker: &Speaker,
    stats: &Stats,
) {
    *failures += 1;
    let msg = e.to_string();
    stats.set_source(&source_label(e), &format!("retrying: {msg}"));
    if reported.is_none() {
        tracing::warn!(
            "{msg}; retrying in {} s (and then less often)",
            backoff(*failures - 1).as_secs()
        );
        speaker.notice(e.spoken());
        *reported = Some(msg);
    } else if reported.as_deref() != Some(msg.as_str()) {
        tracing::warn!("{msg}; still retrying");
        *reported = Some(msg);
    } else {
        tracing::debug!("{msg}; retry {}", failures);
    }
}

fn source_label(e: &CaptureError) -> String {
    match e {
        CaptureError::Camera { device, .. } => format!("camera {device}"),
        CaptureError::Images(_) => "images".into(),
        CaptureError::Video(_) => "video".into(),
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
