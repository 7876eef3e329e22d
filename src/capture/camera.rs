//! The camera source, over V4L2.
//!
//! Who does what: scenesay negotiates the mode itself, through the `v4l` crate (the V4L2 layer
//! nokhwa is built on): it enumerates every format, frame size (discrete and stepwise) and frame
//! interval (`VIDIOC_ENUM_FMT`, `_FRAMESIZES`, `_FRAMEINTERVALS`), chooses a mode with the pure
//! logic of [`super::negotiate`], sets it (`VIDIOC_S_FMT`, `VIDIOC_S_PARM`) and reads it back
//! (`VIDIOC_G_FMT`, `VIDIOC_G_PARM`) to verify what the driver really did. The camera's current
//! format is never read as a starting point, so a camera another program left in H264, UYVY or at
//! 29.97 fps opens like any other. Frames are read through the `v4l` memory-mapped stream; MJPEG
//! is decoded by nokhwa (libjpeg-turbo), YUYV, NV12 and GREY by [`super::decode`].
//!
//! The camera is read continuously (raw buffers, cheap) so its queue never holds old frames, and
//! only the frames handed on at `fps` (`idle_fps` while the view is static, see [`super::Pace`])
//! are decoded. A buffer that cannot be decoded is skipped and counted
//! ([`super::health::BadFrames`]); only `bad_frames` in a row count as a failure.
//!
//! Still frames: when the camera has a mode with more pixels than the watch's, a detail, read or
//! ask request makes it switch to that mode for one frame and back ([`Camera::still_frame`]), so
//! small print is read from real pixels.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use v4l::buffer::Type;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC, Fraction};

use super::decode::{self, Layout};
use super::health::{BadFrames, BadStep};
use super::negotiate::{
    self, Choice, FormatCaps, FourCc, Interval, Intervals, Mode, Purpose, SizeCaps, Sizes, Want,
};
use super::{CaptureError, FrameSource, Pace, Rates};
use crate::config::{CameraDevice, CaptureConfig};

/// The V4L2 index of a configured device: `2` → 2, `/dev/video2` → 2, a symlink → its target's
/// number.
pub fn device_index(device: &CameraDevice) -> Result<u32, CaptureError> {
    let path = match device {
        CameraDevice::Index(i) => return Ok(*i),
        CameraDevice::Path(p) => p,
    };
    let err = |message: String| CaptureError::Camera {
        device: path.clone(),
        message,
    };
    let real = std::fs::canonicalize(path).map_err(|e| {
        err(format!(
            "{e} (is the camera plugged in? `ls /dev/video*` lists the cameras)"
        ))
    })?;
    index_from_name(&real).ok_or_else(|| {
        err(format!(
            "{} is not a V4L2 camera device (expected /dev/videoN)",
            real.display()
        ))
    })
}

fn index_from_name(p: &Path) -> Option<u32> {
    p.file_name()?.to_str()?.strip_prefix("video")?.parse().ok()
}

/// The device node of a configured camera: `2` → `/dev/video2`; a path as given (a stable
/// `/dev/v4l/by-id/…` link is followed when opened).
pub fn device_path(device: &CameraDevice) -> PathBuf {
    match device {
        CameraDevice::Index(i) => PathBuf::from(format!("/dev/video{i}")),
        CameraDevice::Path(p) => PathBuf::from(p),
    }
}

/// The camera runs at this rate or more during the watch, whatever `fps` is, so a frame handed on
/// is never older than a fraction of a second (only the frames handed on are decoded).
pub const WATCH_CAMERA_FPS: f64 = 15.0;

/// What the watch asks of the camera: `[capture] width`×`height` at `fps` (at least
/// [`WATCH_CAMERA_FPS`]).
pub fn watch_want(cfg: &CaptureConfig) -> Want {
    Want {
        width: cfg.width,
        height: cfg.height,
        fps: cfg.fps.max(WATCH_CAMERA_FPS),
        purpose: Purpose::Watch,
    }
}

/// What a still frame asks: the most pixels.
pub fn still_want(cfg: &CaptureConfig) -> Want {
    Want {
        width: cfg.width,
        height: cfg.height,
        fps: 1.0,
        purpose: Purpose::Still,
    }
}

/// The modes a camera will be used in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub watch: Choice,
    /// `None`: still frames are off (`[capture] still = false`), or no mode has more pixels than
    /// the watch's.
    pub still: Option<Choice>,
}

/// The watch mode and the still mode for `caps` under `cfg`.
pub fn plan(caps: &[FormatCaps], cfg: &CaptureConfig) -> Result<Plan, String> {
    let watch = negotiate::choose(caps, &watch_want(cfg))?;
    let still = if cfg.still {
        negotiate::choose(caps, &still_want(cfg))
            .ok()
            .filter(|s| s.mode.pixels() > watch.mode.pixels())
    } else {
        None
    };
    Ok(Plan { watch, still })
}

/// One line about a format's sizes: "MJPEG: 160x90 … 1920x1080 (17 sizes), up to 30 fps".
pub fn summarize_format(f: &FormatCaps) -> String {
    let mut discrete: Vec<(u32, u32)> = vec![];
    let mut ranges: Vec<String> = vec![];
    let mut top: f64 = 0.0;
    for s in &f.sizes {
        match s.sizes {
            Sizes::Discrete { width, height } => discrete.push((width, height)),
            Sizes::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => ranges.push(format!(
                "{min_width}x{min_height} to {max_width}x{max_height} in steps of {step_width}/{step_height}"
            )),
        }
        for i in &s.intervals {
            let fps = match *i {
                Intervals::Discrete(i) => i.fps(),
                Intervals::Stepwise { min, .. } => min.fps(),
            };
            top = top.max(fps);
        }
    }
    discrete.sort_by_key(|&(w, h)| w as u64 * h as u64);
    let mut parts: Vec<String> = ranges;
    if !discrete.is_empty() {
        let list: Vec<String> = discrete.iter().map(|(w, h)| format!("{w}x{h}")).collect();
        parts.push(if list.len() > 6 {
            format!(
                "{} … {} ({} sizes)",
                list[..3].join(", "),
                list[list.len() - 2..].join(", "),
                list.len()
            )
        } else {
            list.join(", ")
        });
    }
    let mut line = format!(
        "{} ({}): {}",
        f.fourcc.name(),
        f.description,
        if parts.is_empty() {
            "no sizes listed".to_string()
        } else {
            parts.join("; ")
        }
    );
    if top > 0.0 {
        line.push_str(&format!(", up to {} fps", negotiate::fps_text(top)));
    }
    if f.fourcc.preference().is_none() {
        line.push_str(" — not decodable, not used");
    }
    line
}

/// What is known of one camera device.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraInfo {
    pub path: PathBuf,
    /// The driver's name for the camera ("HD Pro Webcam C920").
    pub card: String,
    pub driver: String,
    pub bus: String,
    pub caps: Vec<FormatCaps>,
}

/// The lines `scenesay check` prints for one camera: its name, every format with its sizes, and
/// the modes it would be used in, with why.
pub fn report_lines(info: &CameraInfo, cfg: &CaptureConfig) -> Vec<String> {
    let mut out = vec![format!(
        "{}: {} ({}, {})",
        info.path.display(),
        info.card,
        info.driver,
        info.bus
    )];
    if info.caps.is_empty() {
        out[0].push_str(": no picture formats (a camera's metadata node), not used");
        return out;
    }
    for f in &info.caps {
        out.push(format!("  {}", summarize_format(f)));
    }
    match plan(&info.caps, cfg) {
        Ok(p) => {
            out.push(format!("  watch: {}", p.watch.reason));
            match p.still {
                Some(s) => out.push(format!("  still (detail, read): {}", s.reason)),
                None if cfg.still => out.push(
                    "  still (detail, read): the watch's mode (no mode has more pixels)".into(),
                ),
                None => out.push("  still (detail, read): off (`[capture] still = false`)".into()),
            }
        }
        Err(e) => out.push(format!("  cannot be used: {e}")),
    }
    out
}

/// The V4L2 device nodes of this machine (`/dev/video0` …), in number order.
pub fn device_nodes(dev: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dev)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            index_from_name(&p).map(|n| (n, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// An `io::Error` of opening or asking a camera, with what to do about it.
fn explain(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            format!("{e} (is the camera plugged in? `ls /dev/video*` lists the cameras)")
        }
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "{e} (you need to be in the `video` group: `sudo usermod -aG video $USER`, then log in again)"
        ),
        Some(libc::EBUSY) => format!("{e} (another program is using the camera)"),
        Some(libc::ENOTTY) | Some(libc::EINVAL) => {
            format!("not a V4L2 camera device ({e}); `ls /dev/video*` lists the cameras")
        }
        _ => e.to_string(),
    }
}

fn open_device(path: &Path) -> Result<Device, String> {
    Device::with_path(path).map_err(|e| explain(&e))
}

/// The driver's description of the device (`VIDIOC_QUERYCAP`).
fn query(dev: &Device) -> Result<v4l::Capabilities, String> {
    // the crate unwraps the driver's strings as UTF-8: a malformed one must not crash the daemon
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dev.query_caps()))
        .map_err(|_| "the driver's description is malformed".to_string())?
        .map_err(|e| explain(&e))
}

fn fourcc_in(c: FourCc) -> FourCC {
    FourCC::new(&c.0)
}

fn fourcc_out(c: FourCC) -> FourCc {
    FourCc(c.repr)
}

fn interval_out(f: Fraction) -> Interval {
    Interval::new(f.numerator, f.denominator)
}

fn intervals_at(dev: &Device, fourcc: FourCC, width: u32, height: u32) -> Vec<Intervals> {
    dev.enum_frameintervals(fourcc, width, height)
        .unwrap_or_default()
        .into_iter()
        .map(|i| match i.interval {
            v4l::frameinterval::FrameIntervalEnum::Discrete(f) => {
                Intervals::Discrete(interval_out(f))
            }
            v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => Intervals::Stepwise {
                min: interval_out(s.min),
                max: interval_out(s.max),
            },
        })
        .collect()
}

/// Every capture format of the device, its sizes and their intervals (for a stepwise range, the
/// intervals at its largest size, the slowest there usually is).
pub fn enumerate(dev: &Device) -> Result<Vec<FormatCaps>, String> {
    let formats = dev.enum_formats().map_err(|e| explain(&e))?;
    let mut out = vec![];
    for f in formats {
        let sizes = dev.enum_framesizes(f.fourcc).unwrap_or_default();
        let mut caps = vec![];
        for s in sizes {
            let sizes = match s.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => Sizes::Discrete {
                    width: d.width,
                    height: d.height,
                },
                v4l::framesize::FrameSizeEnum::Stepwise(s) => Sizes::Stepwise {
                    min_width: s.min_width,
                    max_width: s.max_width,
                    step_width: s.step_width,
                    min_height: s.min_height,
                    max_height: s.max_height,
                    step_height: s.step_height,
                },
            };
            let (w, h) = match sizes {
                Sizes::Discrete { width, height } => (width, height),
                Sizes::Stepwise {
                    max_width,
                    max_height,
                    ..
                } => (max_width, max_height),
            };
            caps.push(SizeCaps {
                sizes,
                intervals: intervals_at(dev, f.fourcc, w, h),
            });
        }
        out.push(FormatCaps {
            fourcc: fourcc_out(f.fourcc),
            description: f.description,
            sizes: caps,
        });
    }
    Ok(out)
}

/// Opens `path` and reads what it is and what it can do.
pub fn probe(path: &Path) -> Result<CameraInfo, String> {
    let dev = open_device(path)?;
    let c = query(&dev)?;
    let caps = enumerate(&dev)?;
    Ok(CameraInfo {
        path: path.to_path_buf(),
        card: c.card,
        driver: c.driver,
        bus: c.bus,
        caps,
    })
}

/// Sets `mode` and reads back what the driver made of it; the layout to decode is the one read
/// back. A driver that adjusts the mode to one scenesay decodes is accepted (with a warning); one
/// that switches to a format it cannot decode is an error.
fn set_mode(dev: &Device, mode: &Mode) -> Result<Layout, String> {
    let asked = Format::new(mode.width, mode.height, fourcc_in(mode.fourcc));
    dev.set_format(&asked)
        .map_err(|e| format!("cannot set {mode}: {}", explain(&e)))?;
    let got = dev
        .format()
        .map_err(|e| format!("cannot read the format back: {}", explain(&e)))?;
    let mut interval = None;
    if let Some(i) = mode.interval {
        let p = v4l::video::capture::Parameters::new(Fraction::new(i.num, i.den));
        match dev.set_params(&p).and_then(|_| dev.params()) {
            Ok(p) => interval = Some(interval_out(p.interval)),
            Err(e) => tracing::debug!("cannot set the frame rate {i:?}: {e}"),
        }
    }
    let got_mode = Mode {
        fourcc: fourcc_out(got.fourcc),
        width: got.width,
        height: got.height,
        interval,
    };
    if let Some(d) = negotiate::mismatch(mode, &got_mode) {
        if got_mode.fourcc.preference().is_none() {
            return Err(format!("asked for {mode}, the driver set {d}"));
        }
        tracing::warn!("asked for {mode}, the driver set {d}: using what it set");
    }
    Ok(Layout {
        fourcc: got_mode.fourcc,
        width: got.width,
        height: got.height,
        stride: got.stride,
    })
}

/// Buffers the stream keeps: a few, so the camera never waits, and few enough that the freshest
/// one is never far behind.
const BUFFERS: u32 = 4;
/// A read that takes longer is a camera failure (a stalled camera, an unplugged one).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffers thrown away after switching to the still mode (the first ones after a switch can be
/// dark or half-written).
const STILL_SKIP: u32 = 2;
/// Buffers tried for one good still frame after those.
const STILL_TRIES: u32 = 5;

fn start_stream(dev: &Device) -> Result<MmapStream<'static>, String> {
    let mut s = MmapStream::with_buffers(dev, Type::VideoCapture, BUFFERS).map_err(|e| {
        format!(
            "cannot start streaming: {} (is another program using the camera?)",
            explain(&e)
        )
    })?;
    s.set_timeout(READ_TIMEOUT);
    Ok(s)
}

/// Stops a stream; the crate panics on an unusual error there, which must not end the daemon.
fn stop_stream(s: MmapStream<'static>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(s)));
}

/// One buffer read: decoded, or why not.
enum Read {
    Frame(RgbImage),
    Bad(String),
    /// Not due yet: not decoded.
    Skipped,
}

pub struct Camera {
    dev: Device,
    stream: Option<MmapStream<'static>>,
    device: String,
    plan: Plan,
    layout: Layout,
    rates: Rates,
    pace: Arc<Pace>,
    last: Option<Instant>,
    bad: BadFrames,
}

impl Camera {
    /// Opens the configured camera, negotiates its watch mode (and notes its still mode) and
    /// starts streaming.
    pub fn open(cfg: &CaptureConfig, pace: Arc<Pace>) -> Result<Self, CaptureError> {
        let device = cfg.device.to_string();
        let err = |message: String| CaptureError::Camera {
            device: device.clone(),
            message,
        };
        let path = device_path(&cfg.device);
        let dev = open_device(&path).map_err(|e| {
            err(format!(
                "{e}; `[capture] source = \"images\"` works without a camera"
            ))
        })?;
        let info = query(&dev).map_err(&err)?;
        let caps = enumerate(&dev).map_err(&err)?;
        if caps.is_empty() {
            return Err(err(format!(
                "{} lists no capture formats (a camera's second node carries metadata only: try the one before it; `scenesay check` lists the cameras)",
                path.display()
            )));
        }
        let plan = plan(&caps, cfg).map_err(&err)?;
        let layout = set_mode(&dev, &plan.watch.mode).map_err(&err)?;
        let stream = start_stream(&dev).map_err(&err)?;
        tracing::info!("camera {device}: {} — {}", info.card, plan.watch.reason);
        if let Some(s) = &plan.still {
            tracing::info!("camera {device}: still frames {}", s.reason);
        }
        Ok(Self {
            dev,
            stream: Some(stream),
            device,
            plan,
            layout,
            rates: Rates::from_config(cfg),
            pace,
            last: None,
            bad: BadFrames::new(cfg.bad_frames),
        })
    }

    fn err(&self, message: String) -> CaptureError {
        CaptureError::Camera {
            device: self.device.clone(),
            message,
        }
    }

    /// Reads one buffer; decodes it when `decode_now` says so.
    fn read(
        &mut self,
        layout: Layout,
        decode_now: impl FnOnce() -> bool,
    ) -> Result<Read, CaptureError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.err("the stream is not running".into()));
        };
        let (buf, meta) = match CaptureStream::next(stream) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let secs = READ_TIMEOUT.as_secs();
                return Err(self.err(format!("no frame for {secs} s (unplugged or stalled?)")));
            }
            Err(e) => {
                let e = explain(&e);
                return Err(self.err(format!("cannot read a frame: {e} (unplugged?)")));
            }
        };
        if meta.flags.contains(v4l::buffer::Flags::ERROR) {
            return Ok(Read::Bad("the driver marked the buffer as corrupt".into()));
        }
        if !decode_now() {
            return Ok(Read::Skipped);
        }
        let used = (meta.bytesused as usize).min(buf.len());
        Ok(match decode::decode(&buf[..used], &layout) {
            Ok(img) => Read::Frame(img),
            Err(e) => Read::Bad(e.to_string()),
        })
    }

    /// A bad buffer: counted and skipped, or, `bad_frames` in a row, a failure.
    fn on_bad(&mut self, why: &str) -> Result<(), CaptureError> {
        tracing::debug!("camera {}: skipped a frame: {why}", self.device);
        match self.bad.bad(why) {
            BadStep::Skip => Ok(()),
            BadStep::Fail(m) => Err(self.err(m)),
        }
    }

    /// Switches to `mode` with a fresh stream.
    fn switch(&mut self, mode: &Mode) -> Result<Layout, CaptureError> {
        if let Some(s) = self.stream.take() {
            stop_stream(s);
        }
        let layout = set_mode(&self.dev, mode).map_err(|e| self.err(e))?;
        self.stream = Some(start_stream(&self.dev).map_err(|e| self.err(e))?);
        Ok(layout)
    }

    fn grab_still(&mut self, layout: Layout) -> Result<Option<RgbImage>, CaptureError> {
        for n in 0..STILL_SKIP + STILL_TRIES {
            match self.read(layout, || n >= STILL_SKIP)? {
                Read::Frame(img) => return Ok(Some(img)),
                Read::Bad(why) => self.on_bad(&why)?,
                Read::Skipped => {}
            }
        }
        Ok(None)
    }
}

impl FrameSource for Camera {
    fn name(&self) -> String {
        format!("camera {}", self.device)
    }

    fn live(&self) -> bool {
        true
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        loop {
            let interval = self.rates.interval(self.pace.get(), true);
            let last = self.last;
            let due = || last.is_none_or(|t| t.elapsed() >= interval);
            match self.read(self.layout, due)? {
                Read::Skipped => continue,
                Read::Bad(why) => self.on_bad(&why)?,
                Read::Frame(img) => {
                    self.bad.good();
                    self.last = Some(Instant::now());
                    return Ok(Some(img));
                }
            }
        }
    }

    fn has_still(&self) -> bool {
        self.plan.still.is_some()
    }

    /// Switches to the still mode, takes one good frame, and switches back to the watch mode. A
    /// still that cannot be had is `Ok(None)` (the watch's frame is used); failing to get back to
    /// the watch mode is a camera failure.
    fn still_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        let Some(still) = self.plan.still.clone() else {
            return Ok(None);
        };
        let started = Instant::now();
        let got = match self.switch(&still.mode) {
            Ok(layout) => self.grab_still(layout),
            Err(e) => Err(e),
        };
        let watch = self.plan.watch.mode;
        self.layout = self.switch(&watch)?;
        match got {
            Ok(Some(img)) => {
                tracing::info!(
                    "camera {}: still frame {}x{} in {} ms",
                    self.device,
                    img.width(),
                    img.height(),
                    started.elapsed().as_millis()
                );
                Ok(Some(img))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!("{e}: the watch's frame is used");
                Ok(None)
            }
        }
    }

    fn take_bad_frames(&mut self) -> u64 {
        self.bad.take_new()
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            stop_stream(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_and_paths() {
        assert_eq!(device_index(&CameraDevice::Index(3)), Ok(3));
        assert_eq!(index_from_name(Path::new("/dev/video12")), Some(12));
        assert_eq!(index_from_name(Path::new("/dev/videoX")), None);
        assert_eq!(index_from_name(Path::new("/dev/null")), None);
        assert_eq!(
            device_path(&CameraDevice::Index(3)),
            PathBuf::from("/dev/video3")
        );
    }

    #[test]
    fn missing_device_path_is_a_clear_error() {
        let e = device_index(&CameraDevice::Path("/dev/video987".into())).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("camera /dev/video987: "), "{msg}");
        assert!(msg.contains("plugged in"), "{msg}");
    }

    #[test]
    fn a_path_that_is_not_a_camera_is_refused() {
        let e = device_index(&CameraDevice::Path("/dev/null".into())).unwrap_err();
        assert!(e.to_string().contains("not a V4L2 camera"), "{e}");
    }
}
