//! The camera source: nokhwa over V4L2. The camera is read continuously (raw buffers, cheap) so its
//! queue never holds old frames, and only the frames handed on at `fps` (`idle_fps` while the view
//! is static, see [`super::Pace`]) are decoded to RGB.
//! nokhwa wants a numeric index on Linux, so `/dev/videoN` paths (and stable symlinks such as
//! `/dev/v4l/by-id/…`) are translated here.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
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

pub struct Camera {
    cam: nokhwa::Camera,
    device: String,
    rates: Rates,
    pace: Arc<Pace>,
    last: Option<Instant>,
}

impl Camera {
    /// Opens the configured camera and starts streaming, asking for `width`×`height` at `fps`
    /// (MJPEG first, then YUYV, then whatever it offers).
    pub fn open(cfg: &CaptureConfig, pace: Arc<Pace>) -> Result<Self, CaptureError> {
        let device = cfg.device.to_string();
        let index = device_index(&cfg.device)?;
        let err = |message: String| CaptureError::Camera {
            device: device.clone(),
            message,
        };
        let fps = cfg.fps.ceil().max(1.0) as u32;
        let res = Resolution::new(cfg.width, cfg.height);
        let requests = [
            RequestedFormatType::Closest(CameraFormat::new(res, FrameFormat::MJPEG, fps)),
            RequestedFormatType::Closest(CameraFormat::new(res, FrameFormat::YUYV, fps)),
            RequestedFormatType::HighestResolution(res),
            RequestedFormatType::None,
        ];
        let mut last_err = String::new();
        for r in requests {
            match nokhwa::Camera::new(
                CameraIndex::Index(index),
                RequestedFormat::new::<RgbFormat>(r),
            ) {
                Ok(mut cam) => {
                    cam.open_stream().map_err(|e| {
                        err(format!(
                            "cannot start streaming: {e} (is another program using the camera?)"
                        ))
                    })?;
                    tracing::info!(
                        "camera {device}: {} ({})",
                        cam.info().human_name(),
                        cam.camera_format()
                    );
                    return Ok(Self {
                        cam,
                        device,
                        rates: Rates::from_config(cfg),
                        pace,
                        last: None,
                    });
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        Err(err(format!(
            "{last_err} (no camera there? `ls /dev/video*` lists the cameras; `[capture] source = \"images\"` works without one)"
        )))
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
            let buf = self.cam.frame().map_err(|e| CaptureError::Camera {
                device: self.device.clone(),
                message: format!("cannot read a frame: {e} (unplugged?)"),
            })?;
            let interval = self.rates.interval(self.pace.get(), true);
            let due = self.last.is_none_or(|t| t.elapsed() >= interval);
            if !due {
                continue;
            }
            self.last = Some(Instant::now());
            let img = buf
                .decode_image::<RgbFormat>()
                .map_err(|e| CaptureError::Camera {
                    device: self.device.clone(),
                    message: format!("cannot decode a frame: {e}"),
                })?;
            return Ok(Some(img));
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.cam.stop_stream();
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

    #[test]
    fn opening_a_camera_that_is_not_there_fails_clearly() {
        // index 63 exists on no machine that runs these tests
        let cfg = CaptureConfig {
            device: CameraDevice::Index(63),
            ..Default::default()
        };
        let e = Camera::open(&cfg, Arc::default())
            .err()
            .expect("no camera 63");
        let msg = e.to_string();
        assert!(msg.starts_with("camera /dev/video63: "), "{msg}");
        assert!(msg.contains("ls /dev/video*"), "{msg}");
    }
}
