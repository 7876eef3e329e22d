//! Cheap checks on a frame before the model is asked about it: a dark view, a covered lens, an
//! overexposed view or a badly blurred one gets one short spoken notice instead of a description
//! (a model asked about a black frame invents a scene). Pure: statistics in, state and notices out.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Luma statistics of a frame (computed on a copy at most 160 pixels wide).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewStats {
    /// Mean luma, 0–255.
    pub mean: f32,
    /// Standard deviation of luma (contrast), 0–255.
    pub std: f32,
    /// Fraction of pixels with luma ≥ 250.
    pub bright_fraction: f32,
    /// Variance of the 3×3 Laplacian of luma: low means no edges (blur or a featureless view).
    pub sharpness: f32,
}

/// Computes [`ViewStats`] of an RGB frame.
pub fn view_stats(img: &RgbImage) -> ViewStats {
    let (w, h) = img.dimensions();
    let small;
    let img = if w > 160 {
        let nh = ((h as f32) * 160.0 / w as f32).round().max(1.0) as u32;
        small = image::imageops::resize(img, 160, nh, image::imageops::FilterType::Triangle);
        &small
    } else {
        img
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let luma: Vec<f32> = img
        .pixels()
        .map(|p| 0.299 * p.0[0] as f32 + 0.587 * p.0[1] as f32 + 0.114 * p.0[2] as f32)
        .collect();
    let n = luma.len().max(1) as f32;
    let mean = luma.iter().sum::<f32>() / n;
    let std = (luma.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
    let bright_fraction = luma.iter().filter(|v| **v >= 250.0).count() as f32 / n;
    let mut lap = Vec::with_capacity(w.saturating_sub(2) * h.saturating_sub(2));
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let c = luma[y * w + x];
            lap.push(
                luma[(y - 1) * w + x]
                    + luma[(y + 1) * w + x]
                    + luma[y * w + x - 1]
                    + luma[y * w + x + 1]
                    - 4.0 * c,
            );
        }
    }
    let sharpness = if lap.is_empty() {
        0.0
    } else {
        let m = lap.iter().sum::<f32>() / lap.len() as f32;
        lap.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / lap.len() as f32
    };
    ViewStats {
        mean,
        std,
        bright_fraction,
        sharpness,
    }
}

/// Thresholds of the view checks (`[guards]` in config.toml).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Turn the checks off entirely.
    pub enabled: bool,
    /// Mean luma below this is "dark" (a black frame, a dark room, a lens cap).
    pub dark_mean: f32,
    /// Luma contrast below this, with mean below `covered_max_mean` (and not dark), is "covered":
    /// a dim, even view, as through a finger or a pocket.
    pub covered_std: f32,
    pub covered_max_mean: f32,
    /// This fraction of pixels at luma ≥ 250 or more is "overexposed". 0 disables.
    pub overexposed_fraction: f32,
    /// Laplacian variance below this is "blurred" (or featureless). 0 disables.
    pub blur_sharpness: f32,
    /// A new view state is announced (and a bad view described again) only once this many frames
    /// in a row show it, so a view at the edge of a threshold does not chatter.
    pub hold_frames: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dark_mean: 35.0,
            covered_std: 6.0,
            covered_max_mean: 90.0,
            overexposed_fraction: 0.6,
            blur_sharpness: 4.0,
            hold_frames: 2,
        }
    }
}

/// What the camera can see, as far as cheap statistics tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewState {
    Clear,
    Covered,
    Dark,
    Overexposed,
    Blurred,
}

impl ViewState {
    /// The short notice spoken when the view enters this state.
    pub fn notice(self) -> &'static str {
        match self {
            ViewState::Clear => "Camera view is clear again.",
            ViewState::Covered => "The camera seems covered.",
            ViewState::Dark => "Camera view is dark.",
            ViewState::Overexposed => "Camera view is too bright.",
            ViewState::Blurred => "Camera view is blurred.",
        }
    }
}

/// Classifies a frame's statistics (first matching rule wins: dark, covered, overexposed, blurred).
pub fn classify(s: &ViewStats, c: &GuardConfig) -> ViewState {
    if !c.enabled {
        ViewState::Clear
    } else if s.mean < c.dark_mean {
        ViewState::Dark
    } else if s.std < c.covered_std && s.mean < c.covered_max_mean {
        ViewState::Covered
    } else if c.overexposed_fraction > 0.0 && s.bright_fraction >= c.overexposed_fraction {
        ViewState::Overexposed
    } else if c.blur_sharpness > 0.0 && s.sharpness < c.blur_sharpness {
        ViewState::Blurred
    } else {
        ViewState::Clear
    }
}

/// Remembers the announced view state so each notice is said once per change, and only once the
/// new state has held for `hold_frames` frames.
#[derive(Debug, Clone)]
pub struct ViewGuard {
    hold_frames: u32,
    announced: ViewState,
    /// A different state seen lately, and for how many frames in a row.
    candidate: Option<(ViewState, u32)>,
}

impl Default for ViewGuard {
    fn default() -> Self {
        Self::new(1)
    }
}

impl ViewGuard {
    pub fn new(hold_frames: u32) -> Self {
        Self {
            hold_frames: hold_frames.max(1),
            announced: ViewState::Clear,
            candidate: None,
        }
    }

    /// Feeds the state of the latest frame. Returns the notice to speak, if the state changed and
    /// held (returning to clear from a bad state is announced too, so the user knows descriptions
    /// resume).
    pub fn observe(&mut self, state: ViewState) -> Option<&'static str> {
        if state == self.announced {
            self.candidate = None;
            return None;
        }
        let n = match self.candidate {
            Some((s, n)) if s == state => n + 1,
            _ => 1,
        };
        if n < self.hold_frames {
            self.candidate = Some((state, n));
            return None;
        }
        self.candidate = None;
        self.announced = state;
        Some(state.notice())
    }

    /// The state last announced (Clear at start).
    pub fn state(&self) -> ViewState {
        self.announced
    }

    /// Whether a frame in `state` (just observed) must not be described: it is not clear, or the
    /// view has not yet been announced clear again.
    pub fn blocks(&self, state: ViewState) -> bool {
        state != ViewState::Clear || self.announced != ViewState::Clear
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn checker(w: u32, h: u32, a: u8, b: u8, cell: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if (x / cell + y / cell).is_multiple_of(2) {
                Rgb([a; 3])
            } else {
                Rgb([b; 3])
            }
        })
    }

    fn state(img: &RgbImage) -> ViewState {
        classify(&view_stats(img), &GuardConfig::default())
    }

    #[test]
    fn black_is_dark_dim_and_even_is_covered_white_is_overexposed() {
        assert_eq!(
            state(&RgbImage::from_pixel(320, 240, Rgb([3, 2, 4]))),
            ViewState::Dark
        );
        assert_eq!(state(&RgbImage::new(64, 64)), ViewState::Dark);
        // a dim textured room is dark too
        assert_eq!(state(&checker(320, 240, 5, 45, 8)), ViewState::Dark);
        // a finger over the lens: dim, even, reddish
        assert_eq!(
            state(&RgbImage::from_pixel(320, 240, Rgb([110, 50, 40]))),
            ViewState::Covered
        );
        assert_eq!(state(&checker(320, 240, 60, 66, 8)), ViewState::Covered);
        assert_eq!(
            state(&RgbImage::from_pixel(320, 240, Rgb([255, 255, 255]))),
            ViewState::Overexposed
        );
        assert_eq!(state(&checker(320, 240, 30, 220, 8)), ViewState::Clear);
    }

    #[test]
    fn thresholds_come_from_the_configuration() {
        let dim = view_stats(&checker(320, 240, 20, 60, 8)); // mean 40
        let c = GuardConfig::default();
        assert_eq!(classify(&dim, &c), ViewState::Clear);
        let stricter = GuardConfig {
            dark_mean: 50.0,
            ..c
        };
        assert_eq!(classify(&dim, &stricter), ViewState::Dark);
        let no_blur = GuardConfig {
            blur_sharpness: 0.0,
            ..c
        };
        let smooth = view_stats(&RgbImage::from_fn(320, 240, |x, _| {
            Rgb([(60 + x / 3) as u8; 3])
        }));
        assert_eq!(classify(&smooth, &no_blur), ViewState::Clear);
    }

    #[test]
    fn a_smooth_gradient_is_blurred_and_a_sharp_pattern_is_not() {
        let smooth = RgbImage::from_fn(320, 240, |x, _| Rgb([(60 + x / 3) as u8; 3]));
        assert_eq!(state(&smooth), ViewState::Blurred);
        assert_eq!(state(&checker(320, 240, 60, 190, 4)), ViewState::Clear);
    }

    #[test]
    fn ordinary_photos_are_clear() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
        for f in [
            "landscape_640x480.png",
            "portrait_300x500.png",
            "text_1024x1024.png",
        ] {
            let img = image::open(dir.join(f)).unwrap().to_rgb8();
            let s = view_stats(&img);
            assert_eq!(
                classify(&s, &GuardConfig::default()),
                ViewState::Clear,
                "{f}: {s:?}"
            );
        }
    }

    #[test]
    fn disabled_guards_always_say_clear() {
        let c = GuardConfig {
            enabled: false,
            ..Default::default()
        };
        let black = view_stats(&RgbImage::new(64, 64));
        assert_eq!(classify(&black, &c), ViewState::Clear);
    }

    #[test]
    fn notices_are_said_once_per_change() {
        let mut g = ViewGuard::default();
        let seq = [
            ViewState::Clear,
            ViewState::Dark,
            ViewState::Dark,
            ViewState::Dark,
            ViewState::Clear,
            ViewState::Clear,
            ViewState::Covered,
            ViewState::Dark,
        ];
        let said: Vec<Option<&str>> = seq.iter().map(|s| g.observe(*s)).collect();
        assert_eq!(
            said,
            vec![
                None,
                Some("Camera view is dark."),
                None,
                None,
                Some("Camera view is clear again."),
                None,
                Some("The camera seems covered."),
                Some("Camera view is dark."),
            ]
        );
    }

    #[test]
    fn a_new_state_is_announced_once_it_holds() {
        use ViewState::*;
        let mut g = ViewGuard::new(2);
        // per frame: the notice said (if any), then `+` described or `-` not described
        let said: Vec<String> = [
            Clear, Dark, Clear, Dark, Dark, Dark, Clear, Dark, Clear, Clear, Clear,
        ]
        .iter()
        .map(|s| {
            let notice = g.observe(*s).map(|n| format!("[{n}]")).unwrap_or_default();
            format!("{notice}{}", if g.blocks(*s) { '-' } else { '+' })
        })
        .collect();
        assert_eq!(
            said.join(" "),
            "+ - + - [Camera view is dark.]- - - - - [Camera view is clear again.]+ +"
        );
    }
}
