//! The `test-pattern` source: generated frames, no files or camera needed. Three patterns (colour
//! bars, a checkerboard, a gridded gradient) are each held for ten seconds in turn (seconds of
//! time, as a camera would show them, however fast frames are taken), so the scene watch sees a
//! scene change every ten seconds.

use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};

use super::{CaptureError, FrameSource};

/// Seconds each pattern stays in view.
pub const HOLD_S: f64 = 10.0;

pub struct TestPattern {
    width: u32,
    height: u32,
    /// When the first frame was taken.
    start: Option<Instant>,
}

impl TestPattern {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            start: None,
        }
    }

    /// The frame in view `t` after the first one.
    pub fn frame_at(&self, t: Duration) -> RgbImage {
        let which = (t.as_secs_f64() / HOLD_S).floor() as u64;
        Self::render(self.width, self.height, which)
    }

    /// Pattern `which` (0, 1, 2).
    pub fn render(width: u32, height: u32, which: u64) -> RgbImage {
        const BARS: [[u8; 3]; 7] = [
            [192, 192, 192],
            [192, 192, 0],
            [0, 192, 192],
            [0, 192, 0],
            [192, 0, 192],
            [192, 0, 0],
            [0, 0, 192],
        ];
        RgbImage::from_fn(width, height, |x, y| match which % 3 {
            0 => Rgb(BARS[(x * 7 / width.max(1)) as usize % 7]),
            1 => {
                let cell = (width.min(height) / 8).max(1);
                if ((x / cell) + (y / cell)).is_multiple_of(2) {
                    Rgb([235, 235, 235])
                } else {
                    Rgb([20, 20, 20])
                }
            }
            _ => {
                // a colour gradient under a thin grid (without edges the view guards would
                // rightly call it blurred)
                let cell = (width.min(height) / 6).max(2);
                if x % cell == 0 || y % cell == 0 {
                    return Rgb([16, 16, 16]);
                }
                let v = (255 * x / width.max(1)) as u8;
                Rgb([v, (255 * y / height.max(1)) as u8, 255 - v])
            }
        })
    }
}

impl FrameSource for TestPattern {
    fn name(&self) -> String {
        format!("test-pattern {}x{}", self.width, self.height)
    }

    fn live(&self) -> bool {
        false
    }

    /// It stands in for a camera: read less often while the view is static.
    fn paceable(&self) -> bool {
        true
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        Ok(Some(self.frame_at(start.elapsed())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_change_every_hold_period() {
        let p = TestPattern::new(64, 48);
        // one frame every 2 s: 5 frames per pattern
        let frames: Vec<RgbImage> = (0..11)
            .map(|i| p.frame_at(Duration::from_secs(2 * i)))
            .collect();
        assert_eq!(frames[0].dimensions(), (64, 48));
        assert_eq!(frames[0], frames[4]);
        assert_ne!(frames[4], frames[5]);
        assert_eq!(frames[5], frames[9]);
        assert_ne!(frames[9], frames[10]);
        assert_eq!(
            frames[0],
            TestPattern::render(64, 48, 3),
            "cycles through three"
        );
    }

    #[test]
    fn every_pattern_passes_the_view_guards() {
        use crate::policy::guard::{classify, view_stats, GuardConfig, ViewState};
        for (w, h) in [(640, 480), (64, 48), (1920, 1080)] {
            for which in 0..3 {
                let s = view_stats(&TestPattern::render(w, h, which));
                assert_eq!(
                    classify(&s, &GuardConfig::default()),
                    ViewState::Clear,
                    "pattern {which} at {w}x{h}: {s:?}"
                );
            }
        }
    }
}
