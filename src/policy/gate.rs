//! The change gate: a cheap look at every frame that decides whether it could show a different
//! scene, so the scene encoder runs only when it might have something to notice. A static view
//! then costs almost nothing.
//!
//! Each frame is summarised as a [`Thumbnail`]: the mean colour of each cell of a grid of at most
//! 32 × 24 cells (a box blur that averages sensor noise and compression artefacts away), scaled so
//! that the frame's mean brightness is the same in every thumbnail (an auto-exposure step or a
//! flicker that brightens the whole view by a few percent changes nothing). A frame is compared with
//! the thumbnail of the last frame that was *encoded*, never only the previous frame, so a slow
//! drift adds up until it opens the gate. The gate opens when at least `area` of the cells differ by
//! more than `cell_change` levels (0–255) in any colour: an object that appears, moves or goes away,
//! a light that changes the pattern of the view.
//!
//! The first frame is always encoded, and so is a frame when `max_unseen` has passed since the last
//! encoding (the safety net: a change the thumbnail cannot see is still caught by the embedding).
//! While the gate has stayed closed for `idle_after`, [`ChangeGate::pace`] says the view is static,
//! and the capture can slow down; it is busy again the moment the gate opens.
//!
//! Pure: thumbnails and time in, decisions out. Tested as a script → transcript.

use std::time::Duration;

use image::RgbImage;

/// Most cells across and down.
pub const GRID: (u32, u32) = (32, 24);
/// Fewest pixels a cell spans each way (smaller frames get fewer cells, so each cell still
/// averages enough pixels to smooth noise away).
pub const MIN_CELL: u32 = 8;
/// Pixels sampled per cell and direction, at most (every pixel of a small cell, every other or
/// fewer of a large one: the cost stays in microseconds at any frame size).
const SAMPLES: u32 = 8;

/// Tunables, from `[scene]` and `[capture]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateParams {
    /// false: every frame is encoded (the gate is always open).
    pub enabled: bool,
    /// A cell differs when one of its colours moved by more than this (levels of 255, after the
    /// brightness of the whole frame is evened out).
    pub cell_change: f32,
    /// The gate opens when at least this fraction of the cells differ (at least one cell).
    pub area: f32,
    /// Encode at least this often, whatever the gate says.
    pub max_unseen: Duration,
    /// The view counts as static (slower capture) once the gate has stayed closed this long.
    pub idle_after: Duration,
}

impl GateParams {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            enabled: c.scene.gate,
            cell_change: c.scene.gate_cell_change as f32,
            area: c.scene.gate_area as f32,
            max_unseen: Duration::from_secs_f64(c.scene.max_unseen_s),
            idle_after: Duration::from_secs_f64(c.capture.idle_after_s),
        }
    }
}

impl Default for GateParams {
    fn default() -> Self {
        Self {
            enabled: true,
            cell_change: 12.0,
            area: 0.005,
            max_unseen: Duration::from_secs(10),
            idle_after: Duration::from_secs(3),
        }
    }
}

/// A frame's summary: the mean RGB of each cell, brightness-normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    pub cols: u32,
    pub rows: u32,
    /// Row-major, `cols × rows` cells.
    pub cells: Vec<[f32; 3]>,
}

/// The grid for a `w × h` frame.
pub fn grid(w: u32, h: u32) -> (u32, u32) {
    (
        (w / MIN_CELL).clamp(1, GRID.0),
        (h / MIN_CELL).clamp(1, GRID.1),
    )
}

/// Summarises `img` (a few thousand pixels are read, whatever its size).
pub fn thumbnail(img: &RgbImage) -> Thumbnail {
    let (w, h) = img.dimensions();
    let (cols, rows) = grid(w, h);
    let mut cells = vec![[0f32; 3]; (cols * rows) as usize];
    if w == 0 || h == 0 {
        return Thumbnail { cols, rows, cells };
    }
    let raw = img.as_raw();
    for r in 0..rows {
        let (y0, y1) = (r * h / rows, ((r + 1) * h / rows).max(r * h / rows + 1));
        let sy = ((y1 - y0) / SAMPLES).max(1);
        for c in 0..cols {
            let (x0, x1) = (c * w / cols, ((c + 1) * w / cols).max(c * w / cols + 1));
            let sx = ((x1 - x0) / SAMPLES).max(1);
            let mut sum = [0u32; 3];
            let mut n = 0u32;
            let mut y = y0 + sy / 2;
            while y < y1 {
                let row = (y * w) as usize * 3;
                let mut x = x0 + sx / 2;
                while x < x1 {
                    let i = row + x as usize * 3;
                    sum[0] += raw[i] as u32;
                    sum[1] += raw[i + 1] as u32;
                    sum[2] += raw[i + 2] as u32;
                    n += 1;
                    x += sx;
                }
                y += sy;
            }
            let n = n.max(1) as f32;
            cells[(r * cols + c) as usize] =
                [sum[0] as f32 / n, sum[1] as f32 / n, sum[2] as f32 / n];
        }
    }
    // even out the brightness of the whole frame: mean luma → 128
    let luma = cells
        .iter()
        .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
        .sum::<f32>()
        / cells.len() as f32;
    let gain = 128.0 / luma.max(8.0);
    for p in &mut cells {
        for v in p.iter_mut() {
            *v *= gain;
        }
    }
    Thumbnail { cols, rows, cells }
}

/// The fraction of cells of `a` and `b` that differ by more than `cell_change` in any colour
/// (1 when the grids differ: a new frame size is a new view).
pub fn changed_area(a: &Thumbnail, b: &Thumbnail, cell_change: f32) -> f32 {
    if a.cols != b.cols || a.rows != b.rows || a.cells.is_empty() {
        return 1.0;
    }
    let changed = a
        .cells
        .iter()
        .zip(&b.cells)
        .filter(|(p, q)| (0..3).any(|i| (p[i] - q[i]).abs() > cell_change))
        .count();
    changed as f32 / a.cells.len() as f32
}

/// Why a frame goes to the encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Open {
    /// The gate is turned off.
    Off,
    /// Nothing has been encoded yet.
    First,
    /// This fraction of the view differs from the last encoded frame.
    Changed { area: f32 },
    /// `max_unseen` has passed since the last encoding.
    SafetyNet,
}

/// The gate's answer for one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Encode the frame.
    Encode(Open),
    /// The frame shows what the last encoded one showed (`area` differs, below the gate's
    /// `area`): reuse that embedding.
    Skip { area: f32 },
}

/// How fast the capture should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The configured `fps`.
    Full,
    /// The view is static: `[capture] idle_fps`.
    Idle,
}

/// The change gate's state: the last encoded frame's thumbnail and when things happened.
#[derive(Debug, Clone)]
pub struct ChangeGate {
    params: GateParams,
    reference: Option<Thumbnail>,
    encoded_at: Option<Duration>,
    /// The last time the view was seen to change (the gate opened for a change, or an encoding
    /// found the scene changed).
    active_at: Option<Duration>,
}

impl ChangeGate {
    pub fn new(params: GateParams) -> Self {
        Self {
            params,
            reference: None,
            encoded_at: None,
            active_at: None,
        }
    }

    pub fn params(&self) -> &GateParams {
        &self.params
    }

    /// Decides about a frame summarised as `thumb`, seen at `now`.
    pub fn check(&mut self, thumb: &Thumbnail, now: Duration) -> Decision {
        if !self.params.enabled {
            return Decision::Encode(Open::Off);
        }
        let (Some(reference), Some(at)) = (&self.reference, self.encoded_at) else {
            self.active_at = Some(now);
            return Decision::Encode(Open::First);
        };
        let area = changed_area(reference, thumb, self.params.cell_change);
        let needed = self
            .params
            .area
            .max(1.0 / reference.cells.len().max(1) as f32);
        if area >= needed {
            self.active_at = Some(now);
            return Decision::Encode(Open::Changed { area });
        }
        if now.saturating_sub(at) >= self.params.max_unseen {
            return Decision::Encode(Open::SafetyNet);
        }
        Decision::Skip { area }
    }

    /// The frame summarised as `thumb` was encoded at `now`: later frames are compared with it.
    pub fn encoded(&mut self, thumb: Thumbnail, now: Duration) {
        self.reference = Some(thumb);
        self.encoded_at = Some(now);
    }

    /// The view is busy (a change under way in the scene watch, a new view state, a resume): full
    /// pace until it has stayed still for `idle_after`.
    pub fn wake(&mut self, now: Duration) {
        self.active_at = Some(now);
    }

    /// How fast to capture now.
    pub fn pace(&self, now: Duration) -> Pace {
        match (self.params.enabled, self.active_at) {
            (true, Some(t)) if now.saturating_sub(t) >= self.params.idle_after => Pace::Idle,
            _ => Pace::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A small deterministic generator (xorshift) for sensor-like noise.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Roughly Gaussian, within ±`amp`.
        fn level(&mut self, amp: i32) -> i32 {
            let r = self.next();
            let (a, b) = ((r & 0xffff) as i32, ((r >> 16) & 0xffff) as i32);
            (a + b - 0xffff) * amp / 0xffff
        }
    }

    /// A view: a grey room (a wall gradient and a dark doorway at `door`×`door_y`) with an optional
    /// red cup at (`cup_x`, 30), all at brightness `gain`, with noise of ±`noise` levels.
    #[derive(Clone, Copy)]
    struct View {
        w: u32,
        h: u32,
        door: u32,
        /// Levels added to the doorway (light slowly coming through it).
        door_light: f32,
        cup_x: Option<u32>,
        gain: f32,
        noise: i32,
        seed: u64,
    }

    fn base(w: u32, h: u32) -> View {
        View {
            w,
            h,
            door: w / 2,
            door_light: 0.0,
            cup_x: None,
            gain: 1.0,
            noise: 0,
            seed: 1,
        }
    }

    fn render(v: View) -> RgbImage {
        let mut n = Noise(v.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let s = v.w as f32 / 64.0;
        RgbImage::from_fn(v.w, v.h, |x, y| {
            let mut p = [
                90.0 + 60.0 * x as f32 / v.w as f32,
                100.0 + 40.0 * y as f32 / v.h as f32,
                110.0,
            ];
            let door = (x as f32) >= v.door as f32 && (x as f32) < v.door as f32 + 12.0 * s;
            if door && (y as f32) > 8.0 * s {
                p = [40.0, 35.0, 30.0].map(|c| c + v.door_light);
            }
            if let Some(cx) = v.cup_x {
                let (cx, cy) = (cx as f32 * s, 30.0 * s);
                if (x as f32 - cx).abs() < 3.0 * s && (y as f32 - cy).abs() < 3.0 * s {
                    p = [200.0, 30.0, 30.0];
                }
            }
            Rgb(p.map(|c| {
                (c * v.gain + n.level(v.noise) as f32)
                    .round()
                    .clamp(0.0, 255.0) as u8
            }))
        })
    }

    fn params() -> GateParams {
        GateParams {
            enabled: true,
            cell_change: 12.0,
            area: 0.005,
            max_unseen: Duration::from_secs(10),
            idle_after: Duration::from_secs(3),
        }
    }

    /// Script: one frame per token, one second apart (or `name@seconds`). Names: `a` the room,
    /// `n` the room with noise (a new noise each frame), `j` the room with noise after
    /// compression-like rounding, `f` the room with noise 6 % brighter (auto-exposure), `c` the
    /// room with a cup at the left, `m` the cup moved right, `dN` the doorway N × 3 levels lighter. Transcript, one letter per frame: `F` first, `E` encoded (changed), `S` safety-net
    /// encoding, `.` skipped; then, where it changes, the pace: `>` idle, `<` full again. Every
    /// encoded frame becomes the reference.
    fn sim(p: GateParams, w: u32, h: u32, script: &str) -> String {
        let mut g = ChangeGate::new(p);
        let mut t = 0.0f64;
        let mut out = String::new();
        let mut pace = Pace::Full;
        for (i, tok) in script.split_whitespace().enumerate() {
            let (name, at) = match tok.split_once('@') {
                Some((n, s)) => (n, s.parse::<f64>().unwrap()),
                None => (tok, t + 1.0),
            };
            t = at;
            let now = Duration::from_secs_f64(t);
            let mut v = View {
                seed: i as u64 + 7,
                ..base(w, h)
            };
            match name {
                "a" => {}
                "n" => v.noise = 16,
                "j" => v.noise = 16,
                "f" => {
                    v.noise = 16;
                    v.gain = 1.06
                }
                "c" => {
                    v.noise = 16;
                    v.cup_x = Some(12)
                }
                "m" => {
                    v.noise = 16;
                    v.cup_x = Some(44)
                }
                d if d.starts_with('d') => {
                    let k: u32 = d[1..].parse().unwrap();
                    v.noise = 16;
                    v.door_light = 3.0 * k as f32;
                }
                other => panic!("unknown frame {other}"),
            }
            let mut img = render(v);
            if name == "j" {
                // coarse quantisation, as a strong JPEG leaves in flat areas
                for px in img.pixels_mut() {
                    for c in px.0.iter_mut() {
                        *c = (*c / 8) * 8 + 4;
                    }
                }
            }
            let thumb = thumbnail(&img);
            match g.check(&thumb, now) {
                Decision::Encode(why) => {
                    out.push(match why {
                        Open::Off => 'O',
                        Open::First => 'F',
                        Open::Changed { .. } => 'E',
                        Open::SafetyNet => 'S',
                    });
                    g.encoded(thumb, now);
                }
                Decision::Skip { .. } => out.push('.'),
            }
            let p = g.pace(now);
            if p != pace {
                out.push(if p == Pace::Idle { '>' } else { '<' });
                pace = p;
            }
        }
        out
    }

    fn run(script: &str) -> String {
        sim(params(), 640, 480, script)
    }

    #[test]
    fn a_noisy_static_view_is_encoded_once_then_only_by_the_safety_net() {
        // idle after 3 s, the safety net after 10 s
        assert_eq!(run("a n n n n n n n n n n n n"), "F...>......S..");
        // every frame size: a small frame has fewer, larger cells
        assert_eq!(
            sim(params(), 64, 48, "a n n n n n n n n n n n n"),
            "F...>......S.."
        );
        assert_eq!(sim(params(), 1920, 1080, "n n n n n"), "F...>.");
    }

    #[test]
    fn compression_artefacts_and_auto_exposure_keep_it_closed() {
        assert_eq!(run("n j j f f n f j"), "F...>....");
    }

    #[test]
    fn an_object_that_appears_or_moves_opens_it_at_once() {
        assert_eq!(run("n n n n c c c m m n n"), "F...>E<..E.E.");
        assert_eq!(sim(params(), 64, 48, "n c m n"), "FEEE");
    }

    #[test]
    fn a_slow_drift_adds_up_against_the_last_encoded_frame() {
        // the doorway gets 3 levels lighter a frame: no frame differs much from the one before, but
        // within a few frames one differs enough from the last encoded one
        // every third frame differs enough from the last encoded one, where comparing with the
        // previous frame would never open
        assert_eq!(run("n d1 d2 d3 d4 d5 d6 d7 d8"), "F..E..E..");
        let p = GateParams {
            idle_after: Duration::from_secs(100),
            ..params()
        };
        let mut g = ChangeGate::new(p);
        let frame = |k: u32| {
            let mut v = base(640, 480);
            v.noise = 16;
            v.seed = k as u64 + 1;
            v.door_light = 3.0 * k as f32;
            thumbnail(&render(v))
        };
        let first = frame(0);
        g.check(&first, Duration::ZERO);
        g.encoded(first, Duration::ZERO);
        // against the previous frame alone, no step is large enough
        for k in 1..8 {
            let a = changed_area(&frame(k - 1), &frame(k), p.cell_change);
            assert!(a < p.area, "step {k}: {a}");
        }
    }

    #[test]
    fn the_safety_net_follows_max_unseen() {
        let p = GateParams {
            max_unseen: Duration::from_secs(3),
            idle_after: Duration::from_secs(100),
            ..params()
        };
        assert_eq!(sim(p, 640, 480, "n n n n n n n n n n"), "F..S..S..S");
        // time, not frames: 2 fps
        let p = GateParams {
            max_unseen: Duration::from_secs(2),
            idle_after: Duration::from_secs(100),
            ..params()
        };
        assert_eq!(
            sim(p, 640, 480, "n@0 n@0.5 n@1 n@1.5 n@2 n@2.5 n@3 n@3.5 n@4"),
            "F...S...S"
        );
    }

    #[test]
    fn a_changed_scene_keeps_the_pace_full_and_idle_follows_stillness() {
        let p = GateParams {
            idle_after: Duration::from_secs(2),
            ..params()
        };
        assert_eq!(sim(p, 640, 480, "n n n c c c c"), "F..>E<..>.");
        let mut g = ChangeGate::new(p);
        let th = thumbnail(&render(base(64, 48)));
        let s = Duration::from_secs;
        assert!(matches!(g.check(&th, s(0)), Decision::Encode(Open::First)));
        g.encoded(th.clone(), s(0));
        assert_eq!(g.pace(s(5)), Pace::Idle);
        // a safety-net encoding alone does not wake it
        assert!(matches!(
            g.check(&th, s(10)),
            Decision::Encode(Open::SafetyNet)
        ));
        g.encoded(th, s(10));
        assert_eq!(g.pace(s(11)), Pace::Idle);
        // the scene watch found a change under way: full pace again
        g.wake(s(20));
        assert_eq!(g.pace(s(21)), Pace::Full);
        assert_eq!(g.pace(s(22)), Pace::Idle);
    }

    #[test]
    fn turned_off_it_encodes_every_frame_at_full_pace() {
        let p = GateParams {
            enabled: false,
            ..params()
        };
        assert_eq!(sim(p, 640, 480, "n n n n n n"), "OOOOOO");
    }

    #[test]
    fn the_area_and_cell_change_come_from_the_configuration() {
        // a cup covers about 1 % of the view: a gate that wants 5 % stays closed
        let p = GateParams {
            area: 0.05,
            ..params()
        };
        assert_eq!(sim(p, 640, 480, "n c c"), "F..");
        // a very coarse cell threshold misses it too
        let p = GateParams {
            cell_change: 200.0,
            ..params()
        };
        assert_eq!(sim(p, 640, 480, "n c c"), "F..");
    }

    #[test]
    fn thumbnails_are_small_and_brightness_invariant() {
        let a = thumbnail(&render(base(640, 480)));
        assert_eq!((a.cols, a.rows), GRID);
        let b = thumbnail(&render(View {
            gain: 0.8,
            ..base(640, 480)
        }));
        assert!(changed_area(&a, &b, 3.0) < 0.01);
        assert_eq!(grid(64, 48), (8, 6));
        assert_eq!(grid(16, 16), (2, 2));
        assert_eq!(grid(8, 8), (1, 1));
        assert_eq!(grid(1, 1), (1, 1));
        let tiny = thumbnail(&RgbImage::new(1, 1));
        assert_eq!(tiny.cells.len(), 1);
        // a new frame size is a new view
        assert_eq!(changed_area(&a, &tiny, 12.0), 1.0);
    }
}
