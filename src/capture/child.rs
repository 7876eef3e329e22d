//! A child process that writes raw RGB frames (`rgb24`, a fixed `width`×`height`, one after the
//! other) to its standard output: the shared piece behind the `video` source (an ffmpeg decoder),
//! the `stream` source (ffmpeg reading a network camera) and the `pipewire` / `gstreamer` sources
//! (a `gst-launch-1.0` pipeline).
//!
//! [`FrameChild`] reads frames on demand: a recording is paced by the pipe (the child blocks while
//! nobody reads, using no CPU). [`LiveFrames`] reads a live child continuously on a thread and
//! keeps only the newest frame, so nothing queues up in the pipe or in the network buffers and the
//! model sees the present; it notices a child that stops delivering within a bounded time.
//!
//! The child's error output is read all the time (so it can never block on a full pipe); its last
//! lines explain a failure.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TrySendError};
use image::RgbImage;

use super::{Pace, Rates};

/// How many of the child's last error lines are kept for messages.
const TAIL_LINES: usize = 8;

/// The last lines a child wrote to its error output.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    /// Reads `stderr` to its end on a thread, keeping the last lines (each also logged at debug
    /// level, prefixed with `label`), with every `hide.0` replaced by `hide.1`.
    fn follow(
        stderr: ChildStderr,
        label: String,
        hide: Option<(String, String)>,
    ) -> (Self, JoinHandle<()>) {
        let tail = Self::default();
        let t = tail.clone();
        let h = std::thread::Builder::new()
            .name("child-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut line = line.trim().to_string();
                    if let Some((secret, shown)) = &hide {
                        line = line.replace(secret.as_str(), shown);
                    }
                    if line.is_empty() {
                        continue;
                    }
                    tracing::debug!("{label}: {line}");
                    let mut q = t.0.lock().unwrap_or_else(|p| p.into_inner());
                    if q.len() == TAIL_LINES {
                        q.pop_front();
                    }
                    q.push_back(line);
                }
            })
            .expect("spawn a thread");
        (tail, h)
    }

    /// The kept lines, joined with " / ".
    pub fn text(&self) -> String {
        self.last(TAIL_LINES)
    }

    /// The last `n` kept lines, joined with " / ".
    pub fn last(&self, n: usize) -> String {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let skip = q.len().saturating_sub(n);
        q.iter().skip(skip).cloned().collect::<Vec<_>>().join(" / ")
    }
}

/// Reads one `width`×`height` RGB frame; `Ok(None)` at the end of the output (a frame cut short
/// by the end counts as the end).
pub fn read_frame(r: &mut impl Read, (w, h): (u32, u32)) -> std::io::Result<Option<RgbImage>> {
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(RgbImage::from_raw(w, h, buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// A running child producing raw RGB frames of `size` on its standard output.
pub struct FrameChild {
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    stderr: StderrTail,
    stderr_thread: Option<JoinHandle<()>>,
    size: (u32, u32),
}

impl FrameChild {
    /// Starts `cmd` with its standard input closed and both outputs piped; `label` prefixes its
    /// logged error lines. The error is the one from starting it (`NotFound`: not installed).
    pub fn spawn(cmd: &mut Command, size: (u32, u32), label: &str) -> std::io::Result<Self> {
        Self::spawn_hiding(cmd, size, label, None)
    }

    /// [`FrameChild::spawn`], with `hide.0` (a URL with its password) replaced by `hide.1` in
    /// everything kept or logged of the child's error output.
    pub fn spawn_hiding(
        cmd: &mut Command,
        size: (u32, u32),
        label: &str,
        hide: Option<(String, String)>,
    ) -> std::io::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take();
        let (stderr, stderr_thread) = match child.stderr.take() {
            Some(e) => {
                let (t, h) = StderrTail::follow(e, label.to_string(), hide);
                (t, Some(h))
            }
            None => (StderrTail::default(), None),
        };
        Ok(Self {
            child: Some(child),
            stdout,
            stderr,
            stderr_thread,
            size,
        })
    }

    pub fn size(&self) -> (u32, u32) {
        self.size
    }

    /// Whether its output is still open (not yet read to the end, finished or killed).
    pub fn running(&self) -> bool {
        self.stdout.is_some()
    }

    /// The next frame; `Ok(None)` at the end of its output.
    pub fn read(&mut self) -> std::io::Result<Option<RgbImage>> {
        match self.stdout.as_mut() {
            Some(out) => read_frame(out, self.size),
            None => Ok(None),
        }
    }

    /// Takes the output away to be read elsewhere (by [`LiveFrames`]' thread).
    fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Waits for the child after the end of its output (killing it if it lingers for more than
    /// two seconds); an error with its exit status and last error lines unless it succeeded.
    pub fn finish(&mut self) -> Result<(), String> {
        self.stdout = None;
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let end = Instant::now() + Duration::from_secs(2);
        let status: std::io::Result<ExitStatus> = loop {
            match c.try_wait() {
                Ok(Some(s)) => break Ok(s),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = c.kill();
                    break c.wait();
                }
                Err(e) => break Err(e),
            }
        };
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => {
                let tail = self.stderr.text();
                Err(if tail.is_empty() {
                    format!("{s}")
                } else {
                    format!("{s}: {tail}")
                })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The child's last error lines.
    pub fn stderr_tail(&self) -> String {
        self.stderr.text()
    }

    /// Stops the child now.
    pub fn kill(&mut self) {
        self.stdout = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
    }
}

impl Drop for FrameChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a frame that arrived `elapsed` after the last one handed on is handed on now, when
/// frames are wanted every `interval` and the child delivers one every `frame_interval`: a frame
/// up to half a delivery early counts as due, so a child delivering at exactly `fps` is not
/// halved by jitter.
pub fn due(elapsed: Option<Duration>, interval: Duration, frame_interval: Duration) -> bool {
    elapsed.is_none_or(|e| e + frame_interval / 2 >= interval)
}

/// Why a live child gave no frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEnd {
    /// It ended (or failed): its exit status and last error lines.
    Exited(String),
    /// It delivered nothing for this long and was stopped.
    Stalled(Duration),
}

/// A live child read continuously on a thread; [`LiveFrames::next_due`] hands on the newest frame at
/// the pace of the moment.
pub struct LiveFrames {
    child: FrameChild,
    frames: Receiver<RgbImage>,
    reader: Option<JoinHandle<()>>,
    /// The longest wait for a frame before the child counts as stalled.
    stall: Duration,
    /// Time between the child's frames.
    frame_interval: Duration,
    rates: Rates,
    pace: Arc<Pace>,
    last: Option<Instant>,
}

impl LiveFrames {
    /// Reads `child` (which delivers about `rates.fps` frames a second) on a thread; it counts as
    /// stalled after `stall` without a frame.
    pub fn start(mut child: FrameChild, rates: Rates, pace: Arc<Pace>, stall: Duration) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<RgbImage>(1);
        let size = child.size();
        let stdout = child.take_stdout();
        let drain = rx.clone();
        let reader = stdout.map(|mut out| {
            std::thread::Builder::new()
                .name("live-frames".into())
                .spawn(move || {
                    while let Ok(Some(mut img)) = read_frame(&mut out, size) {
                        // the newest frame replaces one nobody has taken yet
                        loop {
                            match tx.try_send(img) {
                                Ok(()) => break,
                                Err(TrySendError::Full(i)) => {
                                    img = i;
                                    let _ = drain.try_recv();
                                }
                                Err(TrySendError::Disconnected(_)) => return,
                            }
                        }
                    }
                })
                .expect("spawn a thread")
        });
        Self {
            child,
            frames: rx,
            reader,
            stall,
            frame_interval: Duration::from_secs_f64(1.0 / rates.fps.max(1e-3)),
            rates,
            pace,
            last: None,
        }
    }

    /// Waits up to `limit` for the first frame (and takes it as the first one handed on).
    pub fn first(&mut self, limit: Duration) -> Result<RgbImage, LiveEnd> {
        let img = self.wait(limit)?;
        self.last = Some(Instant::now());
        Ok(img)
    }

    /// The next frame that is due at the pace of the moment (frames in between are dropped).
    pub fn next_due(&mut self) -> Result<RgbImage, LiveEnd> {
        loop {
            let img = self.wait(self.stall)?;
            let interval = self.rates.interval(self.pace.get(), true);
            if due(
                self.last.map(|t| t.elapsed()),
                interval,
                self.frame_interval,
            ) {
                self.last = Some(Instant::now());
                return Ok(img);
            }
        }
    }

    fn wait(&mut self, limit: Duration) -> Result<RgbImage, LiveEnd> {
        match self.frames.recv_timeout(limit) {
            Ok(img) => Ok(img),
            Err(RecvTimeoutError::Timeout) => {
                self.stop();
                Err(LiveEnd::Stalled(limit))
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(h) = self.reader.take() {
                    let _ = h.join();
                }
                Err(LiveEnd::Exited(match self.child.finish() {
                    Ok(()) => "it ended".to_string(),
                    Err(e) => e,
                }))
            }
        }
    }

    /// The child's last error lines.
    pub fn stderr_tail(&self) -> String {
        self.child.stderr_tail()
    }

    /// `e` in words: "`program` stopped (exit status: 1: its last error lines)" with `hint`'s
    /// advice for those lines, or "no picture for N s" with the child's last two error lines.
    pub fn explain(&self, e: &LiveEnd, program: &str, hint: impl Fn(&str) -> String) -> String {
        match e {
            LiveEnd::Exited(msg) => format!("{program} stopped ({msg}){}", hint(msg)),
            LiveEnd::Stalled(d) => {
                let tail = self.child.stderr.last(2);
                format!(
                    "no picture for {} s{}{tail}",
                    d.as_secs(),
                    if tail.is_empty() { "" } else { ": " },
                )
            }
        }
    }

    fn stop(&mut self) {
        self.child.kill();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

impl Drop for LiveFrames {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn frames_are_due_at_the_pace_with_half_a_delivery_of_slack() {
        let ms = Duration::from_millis;
        // the first frame is always due
        assert!(due(None, S, ms(500)));
        // at full pace (2 fps from a 2 fps child) a frame arriving a little early still counts
        assert!(due(Some(ms(480)), ms(500), ms(500)));
        // idle at 1 fps from a 2 fps child: every second frame
        assert!(!due(Some(ms(500)), S, ms(500)));
        assert!(due(Some(ms(1000)), S, ms(500)));
        // a 30 fps child at 2 fps: frames until 0.483 s are skipped
        assert!(!due(Some(ms(450)), ms(500), ms(33)));
        assert!(due(Some(ms(490)), ms(500), ms(33)));
    }

    #[test]
    fn a_frame_cut_short_is_the_end() {
        let data = [7u8; 2 * 2 * 3 + 5];
        let mut r = &data[..];
        let f = read_frame(&mut r, (2, 2)).unwrap().unwrap();
        assert_eq!(f.get_pixel(1, 1).0, [7, 7, 7]);
        assert!(read_frame(&mut r, (2, 2)).unwrap().is_none());
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_failing_child_reports_its_status_and_last_error_lines() {
        let mut c = FrameChild::spawn(
            &mut sh("printf 'abcdefghijkl'; echo first >&2; echo 'bad thing' >&2; exit 3"),
            (2, 2),
            "test",
        )
        .unwrap();
        let f = c.read().unwrap().unwrap();
        assert_eq!(f.get_pixel(0, 0).0, [b'a', b'b', b'c']);
        assert!(c.read().unwrap().is_none());
        let e = c.finish().unwrap_err();
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.ends_with("first / bad thing"), "{e}");
    }

    #[test]
    fn a_live_child_that_stops_delivering_is_noticed_and_stopped() {
        // one frame, then silence with the output still open
        let child = FrameChild::spawn(&mut sh("printf 'abcdefghijkl'; exec sleep 30"), (2, 2), "t")
            .unwrap();
        let mut live = LiveFrames::start(
            child,
            Rates::fixed(10.0),
            Arc::default(),
            Duration::from_millis(300),
        );
        assert!(live.first(Duration::from_secs(5)).is_ok());
        let t = Instant::now();
        assert_eq!(
            live.next_due().unwrap_err(),
            LiveEnd::Stalled(Duration::from_millis(300))
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[test]
    fn a_live_child_hands_on_the_newest_frame() {
        // three frames at once, then the end: the first wait finds the newest one waiting
        let child = FrameChild::spawn(
            &mut sh("printf 'aaaaaaaaaaaabbbbbbbbbbbbcccccccccccc'; sleep 0.3; exit 1"),
            (2, 2),
            "t",
        )
        .unwrap();
        let mut live = LiveFrames::start(child, Rates::fixed(10.0), Arc::default(), S * 5);
        std::thread::sleep(Duration::from_millis(150));
        let f = live.first(S * 5).unwrap();
        assert_eq!(f.get_pixel(0, 0).0, [b'c'; 3]);
        match live.next_due() {
            Err(LiveEnd::Exited(e)) => assert!(e.contains("exit status: 1"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
