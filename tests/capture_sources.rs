//! Frame sources and the capture loop: a video made with ffmpeg's test source decoded through the
//! ffmpeg child process, and the capture loop's behaviour when a source fails and comes back
//! (one spoken notice per outage, automatic resume), ends, or is faster than the consumer.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use scenesay::capture::video::{probe, Video};
use scenesay::capture::{frame_slot, run_capture, CaptureError, FrameSource};
use scenesay::config::SourceKind;
use scenesay::speech::service::{Speaker, SpeechMsg};
use scenesay::status::{Clock, Stats};

/// Writes a 4-second 160×120 video at 10 fps: 2 s of colour bars, then 2 s of a test pattern.
fn make_video(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("clip.mp4");
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "smptebars=size=160x120:rate=10:duration=2",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=2",
            "-filter_complex",
            "[0:v][1:v]concat=n=2:v=1[v]",
            "-map",
            "[v]",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&p)
        .output()
        .expect("ffmpeg is installed (apt install ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

#[test]
fn video_is_probed_and_decoded_at_the_requested_rate() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_video(dir.path());
    let info = probe(&p).unwrap();
    assert_eq!((info.width, info.height), (160, 120));
    assert!((info.fps.unwrap() - 10.0).abs() < 0.01, "{info:?}");
    assert!((info.duration_s.unwrap() - 4.0).abs() < 0.2, "{info:?}");

    // 2 frames per second of video, played once: 8 frames, then the end
    let mut v = Video::open(p.to_str().unwrap(), 2.0, false).unwrap();
    let mut frames = vec![];
    while let Some(f) = v.next_frame().unwrap() {
        frames.push(f);
        assert!(frames.len() < 20, "the video must end");
    }
    assert!((7..=9).contains(&frames.len()), "{} frames", frames.len());
    assert_eq!(frames[0].dimensions(), (160, 120));
    assert_ne!(
        frames[0],
        frames[frames.len() - 1],
        "bars, then the test pattern"
    );
    assert!(v.next_frame().unwrap().is_none());

    // looping starts again
    let mut v = Video::open(p.to_str().unwrap(), 2.0, true).unwrap();
    let n = (0..20)
        .filter(|_| v.next_frame().unwrap().is_some())
        .count();
    assert_eq!(n, 20);
}

#[test]
fn a_file_that_is_not_a_video_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.mp4");
    std::fs::write(&p, "not a video").unwrap();
    let e = Video::open(p.to_str().unwrap(), 2.0, true).err().unwrap();
    assert!(e.to_string().contains("not a readable video"), "{e}");
}

/// An opened source that yields `frames_left` frames, then fails (unplugged) and must be reopened.
struct Flaky {
    frames_left: u32,
}

impl FrameSource for Flaky {
    fn name(&self) -> String {
        "camera test".into()
    }
    fn live(&self) -> bool {
        false
    }
    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        if self.frames_left == 0 {
            return Err(CaptureError::Camera {
                device: "test".into(),
                message: "unplugged".into(),
            });
        }
        self.frames_left -= 1;
        Ok(Some(RgbImage::new(2, 2)))
    }
}

fn notices(rx: &crossbeam_channel::Receiver<SpeechMsg>) -> Vec<String> {
    rx.try_iter()
        .filter_map(|m| match m {
            SpeechMsg::Text { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failing_source_is_announced_once_and_resumes_by_itself() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let speaker = Speaker::new(tx);
    let stats = Arc::new(Stats::new(Clock::new()));
    let (slot, frames) = frame_slot();
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let opens = Arc::new(Mutex::new(0u32));
    let o = opens.clone();
    let st = stats.clone();
    let t = Instant::now();
    let h = std::thread::spawn(move || {
        run_capture(
            move || {
                let mut n = o.lock().unwrap();
                *n += 1;
                match *n {
                    // not there at start (attempts 1, 2), then works for 3 frames, then is
                    // unplugged and comes back at once
                    1 | 2 => Err(CaptureError::Camera {
                        device: "test".into(),
                        message: "no such device".into(),
                    }),
                    _ => Ok(Box::new(Flaky { frames_left: 3 }) as Box<dyn FrameSource>),
                }
            },
            SourceKind::Camera,
            50.0,
            slot,
            speaker,
            st,
            stop,
        )
    });
    // retries after 1 s and 2 s: frames arrive after about 3 s
    let first = frames
        .recv_timeout(Duration::from_secs(20))
        .expect("frames after the retries");
    assert_eq!(first.number, 1);
    assert!(
        t.elapsed() >= Duration::from_millis(2900),
        "backoff was respected"
    );
    let said = notices(&rx);
    assert_eq!(
        said,
        [
            "Camera not available. I will keep trying.",
            "Camera is working again."
        ]
    );
    // the unplug after 3 frames: announced again (a new outage), then back after 1 s
    let mut numbers = vec![first.number];
    while numbers.len() < 4 {
        numbers.push(frames.recv_timeout(Duration::from_secs(20)).unwrap().number);
    }
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    drop(stop_tx);
    h.join().unwrap();
    let said = notices(&rx);
    assert!(
        said.starts_with(&["Camera not available. I will keep trying.".to_string()]),
        "{said:?}"
    );
    assert!(*opens.lock().unwrap() >= 4);
    assert!(stats.captured.load(Ordering::Relaxed) >= 4);
}

#[test]
fn a_fast_source_never_queues_frames() {
    struct Endless;
    impl FrameSource for Endless {
        fn name(&self) -> String {
            "test-pattern".into()
        }
        fn live(&self) -> bool {
            true
        }
        fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
            Ok(Some(RgbImage::new(4, 4)))
        }
    }
    let (tx, _rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(Stats::new(Clock::new()));
    let (slot, frames) = frame_slot();
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let st = stats.clone();
    let h = std::thread::spawn(move || {
        run_capture(
            || Ok(Box::new(Endless) as Box<dyn FrameSource>),
            SourceKind::TestPattern,
            30.0,
            slot,
            Speaker::new(tx),
            st,
            stop,
        )
    });
    // a slow consumer: every frame it gets is the freshest, at most one waits
    let mut last = 0;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(50));
        assert!(frames.len() <= 1);
        let f = frames.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(f.number > last);
        last = f.number;
    }
    drop(stop_tx);
    h.join().unwrap();
    let captured = stats.captured.load(Ordering::Relaxed);
    let dropped = stats.dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "stale frames were replaced");
    assert!(
        captured >= dropped + 5,
        "captured {captured}, dropped {dropped}"
    );
}

#[test]
fn an_images_sequence_played_once_ends_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3u8 {
        RgbImage::from_pixel(4, 4, image::Rgb([i * 50, 0, 0]))
            .save(dir.path().join(format!("{i}.png")))
            .unwrap();
    }
    let cfg = scenesay::config::CaptureConfig {
        source: SourceKind::Images,
        path: dir.path().display().to_string(),
        looping: false,
        fps: 50.0,
        ..Default::default()
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(Stats::new(Clock::new()));
    let (slot, frames) = frame_slot();
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let st = stats.clone();
    let h = std::thread::spawn(move || {
        run_capture(
            || scenesay::capture::open_source(&cfg),
            SourceKind::Images,
            50.0,
            slot,
            Speaker::new(tx),
            st,
            stop,
        )
    });
    let t = Instant::now();
    while stats.report().source_state != "ended" {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(stats.captured.load(Ordering::Relaxed), 3);
    assert!(
        frames.try_recv().is_ok(),
        "the last frame waits for the worker"
    );
    assert_eq!(notices(&rx), ["End of the pictures."]);
    drop(stop_tx);
    h.join().unwrap();
}

/// A source that counts its frames and whether it is open (a camera to release while paused).
struct Counted {
    open: Arc<Mutex<i32>>,
    device: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        *self.open.lock().unwrap() -= 1;
    }
}

impl FrameSource for Counted {
    fn name(&self) -> String {
        "counted".into()
    }
    fn live(&self) -> bool {
        false
    }
    fn paceable(&self) -> bool {
        true
    }
    fn release_when_paused(&self) -> bool {
        self.device
    }
    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        Ok(Some(RgbImage::new(2, 2)))
    }
}

/// Frames taken from `frames` during `d`.
fn taken(frames: &crossbeam_channel::Receiver<scenesay::capture::Frame>, d: Duration) -> usize {
    let end = Instant::now() + d;
    let mut n = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if frames.recv_timeout(left).is_ok() {
            n += 1;
        }
    }
    n
}

/// The pace the worker sets: idle is slow, full is `fps` again, paused reads nothing and closes a
/// device (opened again on resume); a source without a device keeps its place.
#[test]
fn the_capture_follows_the_pace() {
    use scenesay::capture::{run_capture_paced, PaceState, Rates};
    for device in [true, false] {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(Stats::new(Clock::new()));
        let (slot, frames) = frame_slot();
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let open = Arc::new(Mutex::new(0i32));
        let opens = Arc::new(Mutex::new(0u32));
        let (o, n, st) = (open.clone(), opens.clone(), stats.clone());
        let h = std::thread::spawn(move || {
            run_capture_paced(
                move || {
                    *o.lock().unwrap() += 1;
                    *n.lock().unwrap() += 1;
                    Ok(Box::new(Counted {
                        open: o.clone(),
                        device,
                    }) as Box<dyn FrameSource>)
                },
                SourceKind::TestPattern,
                Rates {
                    fps: 50.0,
                    idle_fps: 1.0,
                },
                slot,
                Speaker::new(tx),
                st,
                stop,
            )
        });
        // full pace: 50 a second (at least a few, however busy the machine)
        assert!(taken(&frames, Duration::from_millis(1500)) >= 5);
        // idle: one a second at most (an upper bound: a busy machine only lowers it)
        stats.pace.set(PaceState::Idle);
        let _ = taken(&frames, Duration::from_millis(100));
        assert!(taken(&frames, Duration::from_millis(2500)) <= 4);
        // back to full at once
        stats.pace.set(PaceState::Full);
        assert!(taken(&frames, Duration::from_millis(1000)) >= 3);
        // paused: nothing is read, a device is closed
        stats.pace.set(PaceState::Paused);
        let _ = taken(&frames, Duration::from_millis(300));
        assert_eq!(taken(&frames, Duration::from_millis(1000)), 0);
        assert_eq!(*open.lock().unwrap(), if device { 0 } else { 1 });
        assert_eq!(
            stats.report().source_state,
            "paused",
            "status says the capture is paused"
        );
        stats.pace.set(PaceState::Full);
        let first = frames
            .recv_timeout(Duration::from_secs(5))
            .expect("frames after resume");
        assert!(first.number > 1);
        assert_eq!(*open.lock().unwrap(), 1);
        assert_eq!(*opens.lock().unwrap(), if device { 2 } else { 1 });
        drop(stop_tx);
        h.join().unwrap();
    }
}
