//! The `pipewire` and `gstreamer` sources: a `gst-launch-1.0` child process whose pipeline ends in
//! raw RGB frames on its standard output, handed on live like a camera (see
//! [`super::child::LiveFrames`]).
//!
//! `pipewire` reads a camera through PipeWire (`pipewiresrc`): cameras that only libcamera drives
//! (Raspberry Pi camera modules, Intel IPU6 laptop cameras) reach PipeWire through its libcamera
//! support, as do ordinary webcams. `gstreamer` takes any pipeline that produces video — the
//! escape hatch, e.g. `libcamerasrc` directly. scenesay appends the conversion to
//! `[capture] width`×`height` RGB (letterboxed, the picture's shape kept) at `fps`.
//!
//! Why a child rather than linking GStreamer (gstreamer-rs): the build stays free of the GLib and
//! GStreamer development packages and of their binding crates (a long build on a small machine);
//! a crashing plugin (camera drivers are young code) takes only the child down, and the capture
//! loop restarts it with backoff; and it is the same shape as the ffmpeg sources.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;

use super::child::{FrameChild, LiveFrames};
use super::{CaptureError, FrameSource, Pace, Rates};
use crate::config::{CaptureConfig, SourceKind};

/// The longest wait for the first picture after starting the pipeline.
pub const FIRST_FRAME_LIMIT: Duration = Duration::from_secs(15);
/// A pipeline that delivers nothing for this long (plus three frame intervals) is restarted.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

/// The program that runs the pipelines.
pub const GST_LAUNCH: &str = "gst-launch-1.0";

/// `fps` as a GStreamer fraction ("2/1", "1/2", "2997/100").
pub fn fraction(fps: f64) -> String {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let n = (fps * 1000.0).round().max(1.0) as u64;
    let g = gcd(n, 1000);
    format!("{}/{}", n / g, 1000 / g)
}

/// The part of the pipeline that produces video: the configured pipeline (`gstreamer`) or
/// `pipewiresrc` with the configured target (`pipewire`).
pub fn head(cfg: &CaptureConfig) -> String {
    match cfg.source {
        SourceKind::Gstreamer => cfg.pipeline.trim().trim_end_matches('!').trim().to_string(),
        _ => {
            let t = cfg.pipewire_target.trim();
            if t.is_empty() {
                "pipewiresrc".to_string()
            } else {
                format!("pipewiresrc target-object={}", quote(t))
            }
        }
    }
}

/// A property value quoted for gst-launch when it holds anything but plain characters.
fn quote(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
    {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The whole pipeline: `head`, then the conversion to `width`×`height` RGB at `fps` written to
/// the standard output.
pub fn pipeline(head: &str, (w, h): (u32, u32), fps: f64) -> String {
    format!(
        "{head} ! videorate drop-only=true ! videoconvert ! videoscale add-borders=true \
         ! video/x-raw,format=RGB,width={w},height={h},pixel-aspect-ratio=1/1,framerate={} \
         ! fdsink fd=1 sync=true",
        fraction(fps)
    )
}

/// Splits a pipeline into gst-launch's arguments the way a shell would: words apart at spaces,
/// '…' and "…" keep spaces, a backslash keeps the next character.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    in_word = true;
                }
                None => return Err("the pipeline ends with a lone backslash".into()),
            },
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("a {q} quote in the pipeline is not closed"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The Debian/Ubuntu package that provides a GStreamer element, for the common ones.
pub fn package_of(element: &str) -> Option<&'static str> {
    Some(match element {
        "pipewiresrc" | "pipewiresink" => "gstreamer1.0-pipewire",
        "libcamerasrc" => "gstreamer1.0-libcamera",
        "videotestsrc" | "videoconvert" | "videoscale" | "videorate" | "decodebin"
        | "uridecodebin" | "playbin" | "appsrc" | "appsink" => "gstreamer1.0-plugins-base",
        "v4l2src" | "jpegdec" | "souphttpsrc" | "rtspsrc" | "rtpjpegdepay" | "rtph264depay"
        | "multipartdemux" | "matroskademux" | "qtdemux" => "gstreamer1.0-plugins-good",
        "h264parse" | "v4l2h264dec" => "gstreamer1.0-plugins-bad",
        "avdec_h264" | "avdec_mjpeg" => "gstreamer1.0-libav",
        "openh264dec" => "gstreamer1.0-plugins-bad",
        _ => return None,
    })
}

/// What to do about a pipeline's error output.
fn hint(stderr: &str) -> String {
    if let Some(rest) = stderr.split("no element \"").nth(1) {
        let element = rest.split('"').next().unwrap_or_default();
        return match package_of(element) {
            Some(p) => format!(" (GStreamer has no {element} element: `sudo apt install {p}`)"),
            None => format!(
                " (GStreamer has no {element} element: install the plugin that provides it; `gst-inspect-1.0 {element}` tells when it is there)"
            ),
        };
    }
    if stderr.contains("could not link") {
        return " (the pipeline's video cannot be converted to raw pictures: end it with a decoder such as `decodebin`)".into();
    }
    if stderr.contains("Resource not found") || stderr.contains("busy") {
        return " (is the camera there and not used by another program? `wpctl status` lists PipeWire's cameras)".into();
    }
    String::new()
}

fn what(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Gstreamer => "gstreamer",
        _ => "pipewire",
    }
}

pub struct Pipeline {
    kind: SourceKind,
    head: String,
    live: LiveFrames,
    first: Option<RgbImage>,
}

impl Pipeline {
    /// Starts the pipeline for `[capture]` (`source = "pipewire"` or `"gstreamer"`) and waits for
    /// the first picture.
    pub fn open(cfg: &CaptureConfig, pace: Arc<Pace>) -> Result<Self, CaptureError> {
        let kind = cfg.source;
        let err = |message: String| CaptureError::Pipeline {
            kind: what(kind),
            message,
        };
        let head = head(cfg);
        if head.is_empty() {
            return Err(err(
                "no pipeline: set `[capture] pipeline` to the part that produces video, e.g. \"libcamerasrc\"".into(),
            ));
        }
        let size = (cfg.width, cfg.height);
        let words = split_words(&pipeline(&head, size, cfg.fps)).map_err(err)?;
        let mut cmd = Command::new(GST_LAUNCH);
        cmd.arg("-q").args(&words);
        let child = FrameChild::spawn(&mut cmd, size, GST_LAUNCH).map_err(|e| {
            err(format!(
                "cannot run {GST_LAUNCH} ({e}): `sudo apt install gstreamer1.0-tools gstreamer1.0-plugins-base{}`",
                if kind == SourceKind::Pipewire {
                    " gstreamer1.0-pipewire"
                } else {
                    ""
                }
            ))
        })?;
        let stall = STALL_LIMIT + Duration::from_secs_f64(3.0 / cfg.fps.max(1e-3));
        let mut live = LiveFrames::start(child, Rates::from_config(cfg), pace, stall);
        let first = live
            .first(FIRST_FRAME_LIMIT)
            .map_err(|e| err(live.explain(&e, "the pipeline", hint)))?;
        tracing::info!("{}: {head}", what(kind));
        Ok(Self {
            kind,
            head,
            live,
            first: Some(first),
        })
    }
}

impl FrameSource for Pipeline {
    fn name(&self) -> String {
        match self.kind {
            SourceKind::Gstreamer => format!("gstreamer {}", self.head),
            _ => format!("pipewire camera ({})", self.head),
        }
    }

    fn live(&self) -> bool {
        true
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        if let Some(f) = self.first.take() {
            return Ok(Some(f));
        }
        self.live
            .next_due()
            .map(Some)
            .map_err(|e| CaptureError::Pipeline {
                kind: what(self.kind),
                message: self.live.explain(&e, "the pipeline", hint),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_fractions() {
        assert_eq!(fraction(2.0), "2/1");
        assert_eq!(fraction(0.5), "1/2");
        assert_eq!(fraction(29.97), "2997/100");
        assert_eq!(fraction(60.0), "60/1");
    }

    #[test]
    fn pipewire_pipelines_name_their_target() {
        let mut cfg = CaptureConfig {
            source: SourceKind::Pipewire,
            ..Default::default()
        };
        assert_eq!(head(&cfg), "pipewiresrc");
        cfg.pipewire_target = "libcamera_device.0".into();
        assert_eq!(head(&cfg), "pipewiresrc target-object=libcamera_device.0");
        cfg.pipewire_target = "Integrated Camera".into();
        assert_eq!(
            head(&cfg),
            "pipewiresrc target-object=\"Integrated Camera\""
        );
        let p = pipeline(&head(&cfg), (640, 480), 2.0);
        assert!(
            p.ends_with(
                "width=640,height=480,pixel-aspect-ratio=1/1,framerate=2/1 ! fdsink fd=1 sync=true"
            ),
            "{p}"
        );
        assert_eq!(
            split_words(&p).unwrap()[..2],
            ["pipewiresrc", "target-object=Integrated Camera"]
        );
    }

    #[test]
    fn a_custom_pipeline_keeps_its_words() {
        let cfg = CaptureConfig {
            source: SourceKind::Gstreamer,
            pipeline: "libcamerasrc ! video/x-raw,width=1280 ! ".into(),
            ..Default::default()
        };
        assert_eq!(head(&cfg), "libcamerasrc ! video/x-raw,width=1280");
        assert_eq!(
            split_words(r#"a b='x y' "c d" e\ f 'it"s'"#).unwrap(),
            ["a", "b=x y", "c d", "e f", "it\"s"]
        );
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
        assert!(split_words("a 'b").unwrap_err().contains("not closed"));
    }

    #[test]
    fn missing_elements_name_the_package() {
        let h = hint("WARNING: erroneous pipeline: no element \"pipewiresrc\"");
        assert!(h.contains("sudo apt install gstreamer1.0-pipewire"), "{h}");
        let h = hint("WARNING: erroneous pipeline: no element \"libcamerasrc\"");
        assert!(h.contains("gstreamer1.0-libcamera"), "{h}");
        let h = hint("no element \"frobsrc\"");
        assert!(h.contains("gst-inspect-1.0 frobsrc"), "{h}");
    }
}
