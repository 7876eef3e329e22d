//! The `stream` source: a network camera — a phone running an IP-camera app (MJPEG over HTTP), an
//! IP camera (RTSP, H.264 or MJPEG) — read by an `ffmpeg` child process, the same way as the
//! `video` source (see there for why a child rather than linked FFmpeg), and handed on live like
//! a camera (see [`super::child::LiveFrames`]).
//!
//! The child is given network timeouts so that a stream that dies (the phone's Wi-Fi drops, the
//! camera reboots) is noticed within seconds; the capture loop then announces the outage once and
//! reconnects with backoff, and says when the stream works again. Frames are scaled to
//! `[capture] width`×`height` (letterboxed, the picture's shape kept) at `fps`. A password in the
//! URL never appears in messages.

use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use image::RgbImage;

use super::child::{FrameChild, LiveFrames};
use super::{CaptureError, FrameSource, Pace, Rates};
use crate::config::CaptureConfig;

/// Network timeout given to ffmpeg: a connection or read that stays silent this long fails.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for the first picture after connecting (an H.264 stream starts at its next
/// key frame, seconds apart on some cameras).
pub const FIRST_FRAME_LIMIT: Duration = Duration::from_secs(15);

/// The URL schemes the stream source takes.
pub const SCHEMES: &[&str] = &[
    "rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp", "srt",
];

/// The URL's scheme, lower case, if it is one of [`SCHEMES`].
pub fn scheme(url: &str) -> Option<String> {
    let (s, rest) = url.trim().split_once("://")?;
    let s = s.to_ascii_lowercase();
    (SCHEMES.contains(&s.as_str()) && !rest.is_empty()).then_some(s)
}

/// `url` with the password (the part between `:` and `@` before the host) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(auth_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The major version of the installed ffmpeg (`None` when it does not say), asked once.
fn ffmpeg_major() -> Option<u32> {
    static MAJOR: OnceLock<Option<u32>> = OnceLock::new();
    *MAJOR.get_or_init(|| {
        let out = Command::new("ffmpeg")
            .arg("-version")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        parse_major(&String::from_utf8_lossy(&out.stdout))
    })
}

/// "ffmpeg version 5.1.4-0+deb12u1 …" → 5; "ffmpeg version n6.0 …" → 6.
fn parse_major(version_text: &str) -> Option<u32> {
    let v = version_text.split_whitespace().nth(2)?;
    let v = v.trim_start_matches(|c: char| !c.is_ascii_digit());
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// ffmpeg's arguments for reading `url` into `width`×`height` RGB frames at `fps`.
/// `ffmpeg_major` chooses the RTSP timeout option (renamed in FFmpeg 5).
pub fn ffmpeg_args(
    url: &str,
    (w, h): (u32, u32),
    fps: f64,
    ffmpeg_major: Option<u32>,
) -> Vec<String> {
    let us = NETWORK_TIMEOUT.as_micros().to_string();
    let mut a: Vec<String> = ["-nostdin", "-hide_banner", "-loglevel", "error"]
        .map(String::from)
        .to_vec();
    let scheme = scheme(url).unwrap_or_default();
    match scheme.as_str() {
        "rtsp" | "rtsps" => {
            // TCP: no lost packets (smeared pictures) on Wi-Fi, and it passes NAT and firewalls
            let timeout = if ffmpeg_major.is_some_and(|m| m < 5) {
                "-stimeout"
            } else {
                "-timeout"
            };
            a.extend(["-rtsp_transport", "tcp", timeout, &us].map(String::from));
        }
        "http" | "https" => {
            // an MJPEG stream has no timestamps of its own: the arrival time gives them, so the
            // first picture is handed on at once
            a.extend(["-rw_timeout", &us, "-use_wallclock_as_timestamps", "1"].map(String::from));
        }
        _ => a.extend(["-rw_timeout", &us].map(String::from)),
    }
    a.extend(["-fflags", "nobuffer", "-i", url.trim()].map(String::from));
    a.extend(
        [
            "-map".to_string(),
            "0:v:0".to_string(),
            "-an".to_string(),
            "-vf".to_string(),
            format!(
                "fps={fps},scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:-1:-1,setsar=1"
            ),
            "-pix_fmt".to_string(),
            "rgb24".to_string(),
            "-f".to_string(),
            "rawvideo".to_string(),
            "pipe:1".to_string(),
        ],
    );
    a
}

/// Hints added to an ffmpeg failure, from its error lines.
fn hint(stderr: &str) -> &'static str {
    let s = stderr.to_ascii_lowercase();
    if s.contains("address family not supported") {
        " (network sockets are not allowed here: the systemd unit allows only local sockets unless \
         a drop-in allows AF_INET and AF_INET6; `scenesay service install` adds it for a stream \
         source, see README)"
    } else if s.contains("401") || s.contains("unauthorized") {
        " (the camera wants a user name and password: rtsp://USER:PASSWORD@HOST/…)"
    } else if s.contains("protocol not found") {
        " (this ffmpeg cannot read that kind of URL: `ffmpeg -protocols` lists what it can)"
    } else if s.contains("404") {
        " (the address is right but the path is not: check the stream path in the camera's or app's manual)"
    } else if s.contains("connection refused") {
        " (nothing is serving there: is the camera app running, and is the port right?)"
    } else if s.contains("timed out") || s.contains("timeout") || s.contains("no route") {
        " (no answer: is the phone or camera on and on the same network?)"
    } else {
        ""
    }
}

pub struct Stream {
    /// The URL without its password, for messages.
    shown: String,
    live: LiveFrames,
    first: Option<RgbImage>,
}

impl Stream {
    /// Connects to `[capture] url` and waits for the first picture: an open stream delivers.
    pub fn open(cfg: &CaptureConfig, pace: Arc<Pace>) -> Result<Self, CaptureError> {
        let url = cfg.url.trim();
        let shown = redact(url);
        let err = |message: String| CaptureError::Stream {
            url: shown.clone(),
            message,
        };
        if scheme(url).is_none() {
            return Err(err(format!(
                "not a stream URL: use one starting with {} (`[capture] url`)",
                SCHEMES
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let size = (cfg.width, cfg.height);
        let mut cmd = Command::new("ffmpeg");
        cmd.args(ffmpeg_args(url, size, cfg.fps, ffmpeg_major()));
        let hide = (shown != url).then(|| (url.to_string(), shown.clone()));
        let label = format!("ffmpeg {shown}");
        let child = FrameChild::spawn_hiding(&mut cmd, size, &label, hide).map_err(|e| {
            err(format!(
                "cannot run ffmpeg ({e}): the stream source needs FFmpeg (`sudo apt install ffmpeg`)"
            ))
        })?;
        let stall = NETWORK_TIMEOUT + Duration::from_secs_f64(3.0 / cfg.fps.max(1e-3));
        let mut live = LiveFrames::start(child, Rates::from_config(cfg), pace, stall);
        let first = live
            .first(FIRST_FRAME_LIMIT)
            .map_err(|e| err(live.explain(&e, "ffmpeg", |m| hint(m).to_string())))?;
        Ok(Self {
            shown,
            live,
            first: Some(first),
        })
    }
}

impl FrameSource for Stream {
    fn name(&self) -> String {
        format!("stream {}", self.shown)
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
            .map_err(|e| CaptureError::Stream {
                url: self.shown.clone(),
                message: self.live.explain(&e, "ffmpeg", |m| hint(m).to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised() {
        assert_eq!(scheme("rtsp://cam/stream1").as_deref(), Some("rtsp"));
        assert_eq!(
            scheme(" HTTP://192.168.1.5:8080/video").as_deref(),
            Some("http")
        );
        assert_eq!(scheme("/dev/video0"), None);
        assert_eq!(scheme("file:///tmp/a.mp4"), None);
        assert_eq!(scheme("rtsp://"), None);
    }

    #[test]
    fn passwords_are_taken_out_of_urls() {
        assert_eq!(
            redact("rtsp://admin:s3cret@192.168.1.20:554/stream1"),
            "rtsp://admin:***@192.168.1.20:554/stream1"
        );
        assert_eq!(
            redact("http://192.168.1.5:8080/video"),
            "http://192.168.1.5:8080/video"
        );
        // an @ in the path is not a password
        assert_eq!(redact("http://host/a@b:c"), "http://host/a@b:c");
        assert_eq!(redact("rtsp://user@host/x"), "rtsp://user@host/x");
    }

    #[test]
    fn ffmpeg_versions_are_read() {
        assert_eq!(
            parse_major("ffmpeg version 5.1.4-0+deb12u1 Copyright (c) 2000-2023"),
            Some(5)
        );
        assert_eq!(parse_major("ffmpeg version n6.1.1 Copyright"), Some(6));
        assert_eq!(
            parse_major("ffmpeg version 4.4.2-0ubuntu0.22.04.1"),
            Some(4)
        );
        assert_eq!(parse_major("nonsense"), None);
    }

    #[test]
    fn arguments_set_timeouts_transport_size_and_rate() {
        let a = ffmpeg_args("rtsp://cam/s", (640, 480), 2.0, Some(6)).join(" ");
        assert!(a.contains("-rtsp_transport tcp -timeout 5000000"), "{a}");
        assert!(a.contains("-i rtsp://cam/s"), "{a}");
        assert!(a.contains("fps=2,scale=640:480:"), "{a}");
        assert!(a.ends_with("-pix_fmt rgb24 -f rawvideo pipe:1"), "{a}");
        let old = ffmpeg_args("rtsp://cam/s", (640, 480), 2.0, Some(4)).join(" ");
        assert!(old.contains("-stimeout 5000000"), "{old}");
        let h = ffmpeg_args("http://phone:8080/video", (320, 240), 0.5, None).join(" ");
        assert!(h.contains("-rw_timeout 5000000"), "{h}");
        assert!(h.contains("-use_wallclock_as_timestamps 1"), "{h}");
        assert!(h.contains("fps=0.5,scale=320:240:"), "{h}");
    }

    #[test]
    fn failures_get_a_hint() {
        assert!(
            hint("Connection to tcp://127.0.0.1:9 failed: Connection refused")
                .contains("nothing is serving")
        );
        assert!(hint("method DESCRIBE failed: 401 Unauthorized").contains("PASSWORD"));
        assert!(hint("Address family not supported by protocol").contains("drop-in"));
        assert_eq!(hint("something else"), "");
    }

    #[test]
    fn a_url_that_is_not_a_stream_is_refused_clearly() {
        let cfg = CaptureConfig {
            url: "/home/me/clip.mp4".into(),
            ..Default::default()
        };
        let e = Stream::open(&cfg, Arc::default()).err().unwrap();
        let msg = e.to_string();
        assert!(msg.starts_with("stream /home/me/clip.mp4: "), "{msg}");
        assert!(msg.contains("rtsp://"), "{msg}");
    }
}
