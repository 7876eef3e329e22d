//! The `video` source: a video file decoded by an `ffmpeg` child process into raw RGB frames at
//! `fps`, read from a pipe; `ffprobe` gives the size, frame rate and duration first.
//!
//! Why a child process rather than linking FFmpeg (ffmpeg-next): no build-time dependency on the
//! FFmpeg development headers, libclang and one FFmpeg major version (the bindings break across
//! them); a crash or hang in a decoder on a corrupt file cannot take the daemon down with it (the
//! child is killed, the error reported, the source retried); and the cost — copying a few raw
//! frames a second through a pipe — is nothing next to running the model. Debian's `ffmpeg`
//! package provides both programs. The pipe also paces the decoder: ffmpeg blocks when we do not
//! read, so it uses no CPU between frames.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image::RgbImage;

use super::child::FrameChild;
use super::{CaptureError, FrameSource};

/// Longest side of the decoded frames (larger videos are scaled down; the model looks at 1024 px at
/// most).
pub const MAX_SIDE: u32 = 1280;

/// What ffprobe says about a video's first video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    pub fps: Option<f64>,
    pub duration_s: Option<f64>,
}

fn not_installed(program: &str, e: &std::io::Error) -> CaptureError {
    CaptureError::Video(format!(
        "cannot run {program} ({e}): the video source needs FFmpeg (`sudo apt install ffmpeg`)"
    ))
}

fn parse_rate(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (d != 0.0 && n > 0.0).then(|| n / d)
}

/// Runs ffprobe on `path`.
pub fn probe(path: &Path) -> Result<VideoInfo, CaptureError> {
    if !path.is_file() {
        return Err(CaptureError::Video(format!(
            "{}: no such video file (set `[capture] path`)",
            path.display()
        )));
    }
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,avg_frame_rate,r_frame_rate:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| not_installed("ffprobe", &e))?;
    if !out.status.success() {
        return Err(CaptureError::Video(format!(
            "{}: not a readable video: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        CaptureError::Video(format!(
            "{}: unexpected ffprobe output: {e}",
            path.display()
        ))
    })?;
    let stream = v["streams"]
        .get(0)
        .ok_or_else(|| CaptureError::Video(format!("{}: has no video stream", path.display())))?;
    let dim = |k: &str| stream[k].as_u64().filter(|x| *x > 0).map(|x| x as u32);
    let (Some(width), Some(height)) = (dim("width"), dim("height")) else {
        return Err(CaptureError::Video(format!(
            "{}: the video stream has no size",
            path.display()
        )));
    };
    let fps = stream["avg_frame_rate"]
        .as_str()
        .and_then(parse_rate)
        .or_else(|| stream["r_frame_rate"].as_str().and_then(parse_rate));
    let duration_s = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok());
    Ok(VideoInfo {
        width,
        height,
        fps,
        duration_s,
    })
}

/// Output frame size: the video's, scaled down to [`MAX_SIDE`] if larger, even numbers.
pub fn output_size(width: u32, height: u32) -> (u32, u32) {
    let scale = (MAX_SIDE as f64 / width.max(height) as f64).min(1.0);
    let even = |x: f64| ((x.round() as u32) / 2 * 2).max(2);
    (even(width as f64 * scale), even(height as f64 * scale))
}

pub struct Video {
    path: PathBuf,
    fps: f64,
    looping: bool,
    pub info: VideoInfo,
    size: (u32, u32),
    child: Option<FrameChild>,
    frames_this_pass: u64,
}

impl Video {
    pub fn open(path: &str, fps: f64, looping: bool) -> Result<Self, CaptureError> {
        let path = PathBuf::from(path);
        let info = probe(&path)?;
        let size = output_size(info.width, info.height);
        let mut v = Self {
            path,
            fps,
            looping,
            info,
            size,
            child: None,
            frames_this_pass: 0,
        };
        v.spawn()?;
        Ok(v)
    }

    fn spawn(&mut self) -> Result<(), CaptureError> {
        let (w, h) = self.size;
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
            .arg(&self.path)
            .args([
                "-map",
                "0:v:0",
                "-vf",
                &format!("fps={},scale={w}:{h}", self.fps),
                "-pix_fmt",
                "rgb24",
                "-f",
                "rawvideo",
                "pipe:1",
            ]);
        let child = FrameChild::spawn(&mut cmd, self.size, "ffmpeg")
            .map_err(|e| not_installed("ffmpeg", &e))?;
        self.child = Some(child);
        self.frames_this_pass = 0;
        Ok(())
    }

    /// The media time of the frame [`FrameSource::next_frame`] returned last (in the current
    /// pass), counted from the start of the video: ffmpeg's `fps` filter delivers the frame nearest
    /// to every 1/`fps` seconds from the start, so the n-th frame is at (n − 1) / `fps`. `None`
    /// before the first frame.
    pub fn position(&self) -> Option<std::time::Duration> {
        self.frames_this_pass
            .checked_sub(1)
            .map(|n| std::time::Duration::from_secs_f64(n as f64 / self.fps))
    }

    /// Waits for the decoder after the end of its output; an error if it failed.
    fn reap(&mut self) -> Result<(), CaptureError> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        c.finish().map_err(|e| {
            CaptureError::Video(format!("{}: ffmpeg failed ({e})", self.path.display()))
        })
    }
}

impl FrameSource for Video {
    fn name(&self) -> String {
        format!("video {}", self.path.display())
    }

    fn live(&self) -> bool {
        false
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        for _attempt in 0..2 {
            if self.child.as_ref().is_none_or(|c| !c.running()) {
                if !self.looping {
                    return Ok(None);
                }
                self.spawn()?;
            }
            let child = self.child.as_mut().expect("spawned");
            match child.read() {
                Ok(Some(img)) => {
                    self.frames_this_pass += 1;
                    return Ok(Some(img));
                }
                Ok(None) => {
                    let frames = self.frames_this_pass;
                    self.reap()?;
                    if frames == 0 {
                        return Err(CaptureError::Video(format!(
                            "{}: ffmpeg decoded no frames",
                            self.path.display()
                        )));
                    }
                    if !self.looping {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    self.child = None;
                    return Err(CaptureError::Video(format!(
                        "{}: reading decoded frames: {e}",
                        self.path.display()
                    )));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes() {
        assert_eq!(
            parse_rate("30000/1001").map(|r| (r * 100.0).round()),
            Some(2997.0)
        );
        assert_eq!(parse_rate("25"), Some(25.0));
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(output_size(640, 480), (640, 480));
        assert_eq!(output_size(1920, 1080), (1280, 720));
        assert_eq!(output_size(3, 5), (2, 4));
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = Video::open("/nonexistent/clip.mp4", 2.0, true)
            .err()
            .unwrap();
        assert!(e.to_string().contains("no such video file"), "{e}");
    }
}
