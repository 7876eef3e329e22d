//! The choice of a camera mode, as pure logic over what the camera says it can do.
//!
//! Input: the camera's capability list — every pixel format (`VIDIOC_ENUM_FMT`), its frame sizes
//! (`VIDIOC_ENUM_FRAMESIZES`: discrete sizes or a stepwise range) and, per size, its frame
//! intervals (`VIDIOC_ENUM_FRAMEINTERVALS`: discrete or a stepwise range) — plus what is wanted: a
//! size, a frame rate and a purpose ([`Purpose::Watch`]: the continuous scene watch;
//! [`Purpose::Still`]: one frame for a detailed look or for reading). Output: the mode to set and
//! a one-line reason ([`choose`]), or why no mode can be used.
//!
//! The camera's current format plays no part: a camera left in H264, UYVY or at a 29.97 fps
//! interval by another program is set to the chosen mode (and the mode read back to verify it,
//! in `camera.rs`).
//!
//! Capability lists can also be read from the text `v4l2-ctl --list-formats-ext` prints
//! ([`parse_v4l2_ctl`]) and are printed in the same form ([`describe_caps`]): the tests run the
//! choice over recorded lists of real kinds of cameras.

use std::fmt;

/// A V4L2 pixel format, by its four-character code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    pub const MJPG: FourCc = FourCc(*b"MJPG");
    pub const JPEG: FourCc = FourCc(*b"JPEG");
    pub const YUYV: FourCc = FourCc(*b"YUYV");
    pub const NV12: FourCc = FourCc(*b"NV12");
    pub const GREY: FourCc = FourCc(*b"GREY");
    pub const H264: FourCc = FourCc(*b"H264");
    pub const UYVY: FourCc = FourCc(*b"UYVY");

    /// The code as V4L2 stores it (little-endian).
    pub fn to_u32(self) -> u32 {
        u32::from_le_bytes(self.0)
    }

    pub fn from_u32(v: u32) -> Self {
        FourCc(v.to_le_bytes())
    }

    /// The formats scenesay decodes, best first for the watch: MJPEG (little USB bandwidth at any
    /// size), YUYV, NV12, GREY (an infrared or mono camera). `None`: not decodable (H264, UYVY,
    /// Bayer …).
    pub fn preference(self) -> Option<u8> {
        match self {
            FourCc::MJPG | FourCc::JPEG => Some(0),
            FourCc::YUYV => Some(1),
            FourCc::NV12 => Some(2),
            FourCc::GREY => Some(3),
            _ => None,
        }
    }

    /// The name to print: "MJPEG", "YUYV" … (the code itself for others).
    pub fn name(self) -> String {
        match self {
            FourCc::MJPG => "MJPEG".into(),
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: String = self
            .0
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '?'
                }
            })
            .collect();
        write!(f, "{}", s.trim_end())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{self}'")
    }
}

/// Seconds per frame, as V4L2 keeps it (`numerator / denominator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub num: u32,
    pub den: u32,
}

impl Interval {
    pub fn new(num: u32, den: u32) -> Self {
        Self { num, den }
    }

    /// Frames per second (0 for a malformed interval).
    pub fn fps(self) -> f64 {
        if self.num == 0 {
            0.0
        } else {
            self.den as f64 / self.num as f64
        }
    }

    /// The interval of `fps` frames per second: 1/30 for 30, 1001/30000 for 29.97.
    pub fn from_fps(fps: f64) -> Self {
        if fps <= 0.0 {
            return Self::new(1, 1);
        }
        let whole = fps.round();
        if (fps - whole).abs() < 0.005 && whole >= 1.0 {
            return Self::new(1, whole as u32);
        }
        let ntsc = fps * 1.001;
        if (ntsc - ntsc.round()).abs() < 0.005 {
            return Self::new(1001, (ntsc.round() as u32) * 1000);
        }
        Self::new(1000, (fps * 1000.0).round().max(1.0) as u32)
    }
}

/// `29.97`, `30`, `7.5`.
pub fn fps_text(fps: f64) -> String {
    let s = format!("{fps:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The frame sizes of one entry of `VIDIOC_ENUM_FRAMESIZES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    Discrete {
        width: u32,
        height: u32,
    },
    /// Stepwise or continuous (step 1).
    Stepwise {
        min_width: u32,
        max_width: u32,
        step_width: u32,
        min_height: u32,
        max_height: u32,
        step_height: u32,
    },
}

/// The frame intervals of one entry of `VIDIOC_ENUM_FRAMEINTERVALS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intervals {
    Discrete(Interval),
    /// Stepwise or continuous: `min` is the shortest interval (the highest rate).
    Stepwise {
        min: Interval,
        max: Interval,
    },
}

/// One frame-size entry and the intervals offered at it (for a stepwise range: at every size in
/// it). An empty list: the driver lists no intervals (the rate is then not set).
#[derive(Debug, Clone, PartialEq)]
pub struct SizeCaps {
    pub sizes: Sizes,
    pub intervals: Vec<Intervals>,
}

/// One pixel format and its sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatCaps {
    pub fourcc: FourCc,
    /// The driver's description ("Motion-JPEG").
    pub description: String,
    pub sizes: Vec<SizeCaps>,
}

/// What the mode is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The continuous watch: the smallest size that covers the wanted one, at the wanted rate.
    Watch,
    /// One frame for a detail or read request: the most pixels the camera has.
    Still,
}

/// What is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Want {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub purpose: Purpose,
}

/// A mode to set: format, size and (when the driver lists any) frame interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub fourcc: FourCc,
    pub width: u32,
    pub height: u32,
    pub interval: Option<Interval>,
}

impl Mode {
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{}", self.fourcc.name(), self.width, self.height)?;
        match self.interval {
            Some(i) => write!(f, " at {} fps", fps_text(i.fps())),
            None => write!(f, " (rate not listed)"),
        }
    }
}

/// The chosen mode and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub mode: Mode,
    pub reason: String,
}

/// A rate within 5 % of the wanted one counts as reaching it (29.97 fps for 30).
const FPS_TOLERANCE: f64 = 0.95;
/// A still mode slower than this is taken only when nothing else is larger.
const STILL_MIN_FPS: f64 = 1.0;

/// A size in a stepwise range for the watch: the wanted size, rounded up to the steps (so it
/// still covers it) and kept within the range.
fn fit(want: u32, min: u32, max: u32, step: u32) -> u32 {
    let step = step.max(1);
    if want <= min {
        return min;
    }
    let top = min + (max.saturating_sub(min) / step) * step;
    let up = min + (want - min).div_ceil(step) * step;
    up.min(top)
}

/// The sizes of an entry worth considering for `purpose`.
fn candidate_sizes(s: &Sizes, want: &Want) -> (u32, u32) {
    match *s {
        Sizes::Discrete { width, height } => (width, height),
        Sizes::Stepwise {
            min_width,
            max_width,
            step_width,
            min_height,
            max_height,
            step_height,
        } => match want.purpose {
            Purpose::Watch => (
                fit(want.width, min_width, max_width, step_width),
                fit(want.height, min_height, max_height, step_height),
            ),
            Purpose::Still => (
                fit(max_width, min_width, max_width, step_width),
                fit(max_height, min_height, max_height, step_height),
            ),
        },
    }
}

/// The interval to ask for among `list` when `fps` is wanted: the slowest rate that reaches it
/// (no faster than needed), else the fastest there is. `None` when nothing is listed.
fn pick_interval(list: &[Intervals], fps: f64) -> Option<Interval> {
    let mut options: Vec<Interval> = vec![];
    for i in list {
        match *i {
            Intervals::Discrete(i) if i.fps() > 0.0 => options.push(i),
            Intervals::Discrete(_) => {}
            Intervals::Stepwise { min, max } => {
                let (lo, hi) = (max.fps(), min.fps());
                if hi <= 0.0 {
                    continue;
                }
                if fps >= lo && fps <= hi {
                    options.push(Interval::from_fps(fps));
                } else {
                    options.push(min);
                    if lo > 0.0 {
                        options.push(max);
                    }
                }
            }
        }
    }
    let reaching = options
        .iter()
        .filter(|i| i.fps() >= fps * FPS_TOLERANCE)
        .min_by(|a, b| a.fps().total_cmp(&b.fps()));
    reaching
        .or_else(|| options.iter().max_by(|a, b| a.fps().total_cmp(&b.fps())))
        .copied()
}

/// The fastest rate of `list` (None when nothing is listed).
fn fastest(list: &[Intervals]) -> Option<Interval> {
    list.iter()
        .map(|i| match *i {
            Intervals::Discrete(i) => i,
            Intervals::Stepwise { min, .. } => min,
        })
        .filter(|i| i.fps() > 0.0)
        .max_by(|a, b| a.fps().total_cmp(&b.fps()))
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    mode: Mode,
    preference: u8,
    /// The rate reaches what is wanted (or is not listed: it cannot be known).
    fast_enough: bool,
    covers: bool,
}

fn candidates(caps: &[FormatCaps], want: &Want) -> Vec<Candidate> {
    let mut out = vec![];
    for f in caps {
        let Some(preference) = f.fourcc.preference() else {
            continue;
        };
        for s in &f.sizes {
            let (width, height) = candidate_sizes(&s.sizes, want);
            if width == 0 || height == 0 {
                continue;
            }
            let interval = match want.purpose {
                Purpose::Watch => pick_interval(&s.intervals, want.fps),
                Purpose::Still => fastest(&s.intervals),
            };
            let needed = match want.purpose {
                Purpose::Watch => want.fps * FPS_TOLERANCE,
                Purpose::Still => STILL_MIN_FPS,
            };
            out.push(Candidate {
                mode: Mode {
                    fourcc: f.fourcc,
                    width,
                    height,
                    interval,
                },
                preference,
                fast_enough: interval.is_none_or(|i| i.fps() >= needed),
                covers: width >= want.width && height >= want.height,
            });
        }
    }
    out
}

/// The formats of `caps` scenesay cannot decode ("H264, UYVY"), for reasons and errors.
fn undecodable(caps: &[FormatCaps]) -> Vec<String> {
    let mut v: Vec<String> = caps
        .iter()
        .filter(|f| f.fourcc.preference().is_none())
        .map(|f| f.fourcc.name())
        .collect();
    v.dedup();
    v
}

/// Chooses the mode for `want` among `caps`; `Err` says why none can be used.
///
/// Watch: a rate that reaches `want.fps` first, then the smallest size that covers the wanted
/// size (when none does, the largest), then MJPEG over YUYV over NV12 over GREY, then the rate
/// nearest the wanted one. Still: the most pixels at one frame a second or more, then the same
/// format order, then the fastest rate.
pub fn choose(caps: &[FormatCaps], want: &Want) -> Result<Choice, String> {
    let all = candidates(caps, want);
    let skipped = undecodable(caps);
    let Some(best) = (match want.purpose {
        Purpose::Watch => all.iter().min_by(|a, b| {
            (!a.fast_enough, !a.covers)
                .cmp(&(!b.fast_enough, !b.covers))
                .then_with(|| {
                    if a.covers {
                        a.mode.pixels().cmp(&b.mode.pixels())
                    } else {
                        b.mode.pixels().cmp(&a.mode.pixels())
                    }
                })
                .then(a.preference.cmp(&b.preference))
                .then_with(|| {
                    let d =
                        |c: &Candidate| c.mode.interval.map_or(0.0, |i| (i.fps() - want.fps).abs());
                    d(a).total_cmp(&d(b))
                })
        }),
        Purpose::Still => all.iter().min_by(|a, b| {
            (!a.fast_enough)
                .cmp(&!b.fast_enough)
                .then(b.mode.pixels().cmp(&a.mode.pixels()))
                .then(a.preference.cmp(&b.preference))
                .then_with(|| {
                    let f = |c: &Candidate| c.mode.interval.map_or(0.0, |i| i.fps());
                    f(b).total_cmp(&f(a))
                })
        }),
    }) else {
        return Err(if caps.is_empty() {
            "the camera lists no capture formats".to_string()
        } else if !skipped.is_empty() {
            format!(
                "the camera offers only {}, which scenesay cannot decode (it needs MJPEG, YUYV, NV12 or GREY)",
                skipped.join(", ")
            )
        } else {
            "the camera lists no frame sizes".to_string()
        });
    };
    let m = best.mode;
    let size = format!("{}x{}", want.width, want.height);
    let mut reason = match want.purpose {
        Purpose::Watch => {
            let mut r = if m.width == want.width && m.height == want.height {
                format!("{m}: the size asked for ({size})")
            } else if best.covers {
                format!("{m}: the smallest size that covers {size}")
            } else {
                format!("{m}: the largest size (none covers {size})")
            };
            match m.interval {
                Some(_) if !best.fast_enough => r.push_str(&format!(
                    ", at its fastest rate ({} fps is not offered)",
                    fps_text(want.fps)
                )),
                Some(i) if i.fps() >= want.fps * FPS_TOLERANCE => {
                    r.push_str(&format!(" at {} fps or more", fps_text(want.fps)))
                }
                _ => {}
            }
            r
        }
        Purpose::Still => {
            if best.fast_enough {
                format!("{m}: the most pixels the camera offers")
            } else {
                format!(
                    "{m}: the most pixels the camera offers, though slower than one frame a second"
                )
            }
        }
    };
    // a better-liked format passed over, for the same size
    let passed: Vec<String> = caps
        .iter()
        .filter(|f| {
            f.fourcc.preference().is_some_and(|p| p < best.preference) && f.fourcc != m.fourcc
        })
        .map(|f| f.fourcc.name())
        .collect();
    if !passed.is_empty() {
        reason.push_str(&format!("; {} has no mode as good", passed.join(" or ")));
    }
    if !skipped.is_empty() {
        reason.push_str(&format!("; {} skipped (not decodable)", skipped.join(", ")));
    }
    Ok(Choice { mode: m, reason })
}

/// Whether `mode` is among `caps` (the format, the size within an entry, the interval offered at
/// it; a mode without an interval matches any).
pub fn offers(caps: &[FormatCaps], mode: &Mode) -> bool {
    caps.iter().filter(|f| f.fourcc == mode.fourcc).any(|f| {
        f.sizes.iter().any(|s| {
            let size_ok = match s.sizes {
                Sizes::Discrete { width, height } => width == mode.width && height == mode.height,
                Sizes::Stepwise {
                    min_width,
                    max_width,
                    step_width,
                    min_height,
                    max_height,
                    step_height,
                } => {
                    let on = |v: u32, min: u32, max: u32, step: u32| {
                        v >= min && v <= max && (v - min).is_multiple_of(step.max(1))
                    };
                    on(mode.width, min_width, max_width, step_width)
                        && on(mode.height, min_height, max_height, step_height)
                }
            };
            size_ok
                && match mode.interval {
                    None => true,
                    Some(i) => {
                        s.intervals.is_empty()
                            || s.intervals.iter().any(|iv| match *iv {
                                Intervals::Discrete(d) => (d.fps() - i.fps()).abs() < 0.01,
                                Intervals::Stepwise { min, max } => {
                                    i.fps() <= min.fps() + 0.01 && i.fps() >= max.fps() - 0.01
                                }
                            })
                    }
                }
        })
    })
}

/// How a mode the driver accepted differs from the one asked for (`None`: the same). Drivers
/// adjust what they cannot do instead of refusing it, so a set mode is read back and compared.
pub fn mismatch(asked: &Mode, got: &Mode) -> Option<String> {
    let mut d = vec![];
    if asked.fourcc != got.fourcc {
        d.push(format!(
            "format {} instead of {}",
            got.fourcc.name(),
            asked.fourcc.name()
        ));
    }
    if (asked.width, asked.height) != (got.width, got.height) {
        d.push(format!(
            "size {}x{} instead of {}x{}",
            got.width, got.height, asked.width, asked.height
        ));
    }
    if let (Some(a), Some(g)) = (asked.interval, got.interval) {
        if (a.fps() - g.fps()).abs() > a.fps() * 0.05 {
            d.push(format!(
                "{} fps instead of {}",
                fps_text(g.fps()),
                fps_text(a.fps())
            ));
        }
    }
    (!d.is_empty()).then(|| d.join(", "))
}

/// The list in the form of `v4l2-ctl --list-formats-ext` (what [`parse_v4l2_ctl`] reads).
pub fn describe_caps(caps: &[FormatCaps]) -> String {
    let mut s = String::new();
    for (n, f) in caps.iter().enumerate() {
        s.push_str(&format!("[{n}]: '{}' ({})\n", f.fourcc, f.description));
        for size in &f.sizes {
            match size.sizes {
                Sizes::Discrete { width, height } => {
                    s.push_str(&format!("\tSize: Discrete {width}x{height}\n"))
                }
                Sizes::Stepwise {
                    min_width,
                    max_width,
                    step_width,
                    min_height,
                    max_height,
                    step_height,
                } => s.push_str(&format!(
                    "\tSize: Stepwise {min_width}x{min_height} - {max_width}x{max_height} with step {step_width}/{step_height}\n"
                )),
            }
            for i in &size.intervals {
                match *i {
                    Intervals::Discrete(i) => s.push_str(&format!(
                        "\t\tInterval: Discrete {:.3}s ({:.3} fps)\n",
                        1.0 / i.fps().max(1e-9),
                        i.fps()
                    )),
                    Intervals::Stepwise { min, max } => s.push_str(&format!(
                        "\t\tInterval: Stepwise {:.3}s - {:.3}s ({:.3}-{:.3} fps)\n",
                        1.0 / min.fps().max(1e-9),
                        1.0 / max.fps().max(1e-9),
                        max.fps(),
                        min.fps()
                    )),
                }
            }
        }
    }
    s
}

/// Reads the text `v4l2-ctl --list-formats-ext` prints. Lines it does not know are skipped;
/// a malformed size or interval line is an error naming the line.
pub fn parse_v4l2_ctl(text: &str) -> Result<Vec<FormatCaps>, String> {
    let mut out: Vec<FormatCaps> = vec![];
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        if line.starts_with('[') {
            // [0]: 'MJPG' (Motion-JPEG, compressed)
            let Some(q1) = line.find('\'') else {
                return Err(bad("no pixel format in quotes"));
            };
            let rest = &line[q1 + 1..];
            let Some(q2) = rest.find('\'') else {
                return Err(bad("no closing quote"));
            };
            let code = &rest.as_bytes()[..q2];
            if code.is_empty() || code.len() > 4 {
                return Err(bad("a pixel format has four characters"));
            }
            let mut cc = [b' '; 4];
            cc[..code.len()].copy_from_slice(code);
            let description = rest[q2 + 1..]
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_string();
            out.push(FormatCaps {
                fourcc: FourCc(cc),
                description,
                sizes: vec![],
            });
        } else if let Some(size) = line.strip_prefix("Size:") {
            let Some(f) = out.last_mut() else {
                return Err(bad("a size before any format"));
            };
            let size = size.trim();
            let sizes = if let Some(d) = size.strip_prefix("Discrete") {
                let (width, height) = parse_wxh(d.trim()).ok_or_else(|| bad("expected WxH"))?;
                Sizes::Discrete { width, height }
            } else if let Some(s) = size
                .strip_prefix("Stepwise")
                .or_else(|| size.strip_prefix("Continuous"))
            {
                // 32x32 - 3280x2464 with step 2/2
                let parts: Vec<&str> = s.split_whitespace().collect();
                let (min_width, min_height) = parts
                    .first()
                    .and_then(|p| parse_wxh(p))
                    .ok_or_else(|| bad("expected MINxMIN - MAXxMAX"))?;
                let (max_width, max_height) = parts
                    .get(2)
                    .and_then(|p| parse_wxh(p))
                    .ok_or_else(|| bad("expected MINxMIN - MAXxMAX"))?;
                let (step_width, step_height) = match parts.get(5) {
                    Some(p) => {
                        let (a, b) = p.split_once('/').ok_or_else(|| bad("expected step W/H"))?;
                        (
                            a.parse().map_err(|_| bad("expected step W/H"))?,
                            b.parse().map_err(|_| bad("expected step W/H"))?,
                        )
                    }
                    None => (1, 1),
                };
                Sizes::Stepwise {
                    min_width,
                    max_width,
                    step_width,
                    min_height,
                    max_height,
                    step_height,
                }
            } else {
                return Err(bad("a size is Discrete, Stepwise or Continuous"));
            };
            f.sizes.push(SizeCaps {
                sizes,
                intervals: vec![],
            });
        } else if let Some(iv) = line.strip_prefix("Interval:") {
            let Some(s) = out.last_mut().and_then(|f| f.sizes.last_mut()) else {
                return Err(bad("an interval before any size"));
            };
            // the rates in brackets: "(30.000 fps)" or "(1.000-90.000 fps)"
            let inner = iv
                .rsplit_once('(')
                .and_then(|(_, r)| r.strip_suffix(')'))
                .and_then(|r| r.trim().strip_suffix("fps"))
                .map(str::trim)
                .ok_or_else(|| bad("expected the rate in brackets, (30.000 fps)"))?;
            let rate = |t: &str| t.trim().parse::<f64>().map_err(|_| bad("expected a rate"));
            let entry = if iv.trim_start().starts_with("Discrete") {
                Intervals::Discrete(Interval::from_fps(rate(inner)?))
            } else {
                let (lo, hi) = inner
                    .split_once('-')
                    .ok_or_else(|| bad("expected MIN-MAX fps"))?;
                Intervals::Stepwise {
                    min: Interval::from_fps(rate(hi)?),
                    max: Interval::from_fps(rate(lo)?),
                }
            };
            s.intervals.push(entry);
        }
    }
    Ok(out)
}

fn parse_wxh(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_rates() {
        assert_eq!(Interval::from_fps(30.0), Interval::new(1, 30));
        assert_eq!(Interval::from_fps(29.97), Interval::new(1001, 30000));
        assert_eq!(Interval::from_fps(7.5), Interval::new(1000, 7500));
        assert_eq!(fps_text(Interval::new(1001, 30000).fps()), "29.97");
        assert_eq!(fps_text(30.0), "30");
        assert_eq!(fps_text(7.5), "7.5");
    }

    #[test]
    fn stepwise_sizes_round_up_to_the_steps() {
        assert_eq!(fit(640, 32, 3280, 2), 640);
        assert_eq!(fit(641, 32, 3280, 2), 642);
        assert_eq!(fit(5000, 32, 3280, 2), 3280);
        assert_eq!(fit(10, 32, 3280, 2), 32);
        // a maximum off the steps: the last step below it
        assert_eq!(fit(5000, 16, 1001, 16), 992);
        assert_eq!(fit(100, 0, 200, 0), 100);
    }

    #[test]
    fn fourcc_codes() {
        assert_eq!(FourCc::from_u32(FourCc::MJPG.to_u32()), FourCc::MJPG);
        assert_eq!(FourCc::MJPG.to_u32(), 0x4750_4a4d);
        assert_eq!(FourCc(*b"Y16 ").to_string(), "Y16");
        assert_eq!(FourCc::H264.preference(), None);
    }
}
