//! The scene-change decision: a pure state machine over the scene embeddings of successive frames.
//!
//! A frame is *changed* when its cosine distance to the last narrated scene exceeds
//! `change_threshold`. A change is narrated once `stable_frames` consecutive frames are changed
//! *and* agree with each other (each within the threshold of the previous one: the view has
//! settled, the camera is not still moving), and not sooner than `cooldown` after the previous scene
//! narration. The very first view counts as changed.
//!
//! Time is passed in (`now`, since the daemon started), so tests drive it.

use std::time::Duration;

/// Tunables, from `[scene]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneParams {
    pub change_threshold: f32,
    pub stable_frames: u32,
    pub cooldown: Duration,
}

impl SceneParams {
    pub fn from_config(c: &crate::config::SceneConfig) -> Self {
        Self {
            change_threshold: c.change_threshold as f32,
            stable_frames: c.stable_frames,
            cooldown: Duration::from_secs_f64(c.cooldown_s),
        }
    }
}

/// What to do about one observed frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Same scene as the one last narrated.
    Same { distance: f32 },
    /// Changed, but not yet held for `stable_frames` frames (or still moving).
    Settling { distance: f32, held: u32 },
    /// Changed and settled, but a scene was narrated less than `cooldown` ago.
    CoolingDown { distance: f32 },
    /// Describe this frame now.
    Narrate { distance: f32 },
}

/// The scene watch.
#[derive(Debug, Clone)]
pub struct SceneWatch {
    params: SceneParams,
    narrated: Option<Vec<f32>>,
    last_narration_at: Option<Duration>,
    /// The previous changed frame of the current run, and the run's length.
    previous: Option<Vec<f32>>,
    held: u32,
}

/// `1 − cos(a, b)`: 0 for the same direction, up to 2 for opposite ones. Embeddings of different
/// lengths, or a zero vector, are maximally distant.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 2.0;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += *x as f64 * *y as f64;
        na += *x as f64 * *x as f64;
        nb += *y as f64 * *y as f64;
    }
    if na == 0.0 || nb == 0.0 {
        return 2.0;
    }
    (1.0 - dot / (na.sqrt() * nb.sqrt())).clamp(0.0, 2.0) as f32
}

impl SceneWatch {
    pub fn new(params: SceneParams) -> Self {
        Self {
            params,
            narrated: None,
            last_narration_at: None,
            previous: None,
            held: 0,
        }
    }

    pub fn params(&self) -> &SceneParams {
        &self.params
    }

    /// Distance of `embedding` to the last narrated scene (2 when none yet).
    pub fn distance(&self, embedding: &[f32]) -> f32 {
        self.narrated
            .as_deref()
            .map(|n| cosine_distance(n, embedding))
            .unwrap_or(2.0)
    }

    /// Looks at one frame's embedding.
    pub fn observe(&mut self, embedding: &[f32], now: Duration) -> Verdict {
        let distance = self.distance(embedding);
        if distance <= self.params.change_threshold {
            self.previous = None;
            self.held = 0;
            return Verdict::Same { distance };
        }
        let agrees = self
            .previous
            .as_deref()
            .is_none_or(|p| cosine_distance(p, embedding) <= self.params.change_threshold);
        self.held = if agrees { self.held + 1 } else { 1 };
        self.previous = Some(embedding.to_vec());
        if self.held < self.params.stable_frames {
            return Verdict::Settling {
                distance,
                held: self.held,
            };
        }
        let cooling = self
            .last_narration_at
            .is_some_and(|t| now < t + self.params.cooldown);
        if cooling {
            Verdict::CoolingDown { distance }
        } else {
            Verdict::Narrate { distance }
        }
    }

    /// A scene narration of `embedding`'s view started at `started`: it becomes the scene to
    /// compare with, and starts the cooldown.
    pub fn narrated(&mut self, embedding: Vec<f32>, started: Duration) {
        self.narrated = Some(embedding);
        self.last_narration_at = Some(started);
        self.previous = None;
        self.held = 0;
    }

    /// The user heard a description of this view (detail, answer): compare with it from now on,
    /// without starting the scene cooldown.
    pub fn seen(&mut self, embedding: Vec<f32>) {
        self.narrated = Some(embedding);
        self.previous = None;
        self.held = 0;
    }

    /// Forget a change in progress (e.g. after a pause).
    pub fn reset_run(&mut self) {
        self.previous = None;
        self.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors: `a` and `a2` are close (distance ≈ 0.02), `b`, `c` far from `a` and from each
    /// other (distance 1).
    fn emb(name: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; 4];
        match name {
            "a" => v[0] = 1.0,
            "a2" => {
                v[0] = 0.98;
                v[1] = (1.0f32 - 0.98 * 0.98).sqrt();
            }
            "b" => v[2] = 1.0,
            "c" => v[3] = 1.0,
            other => panic!("unknown frame {other}"),
        }
        v
    }

    /// Script: frames `a`, `b`, … optionally timed `b@12.5` (seconds; default: one second after
    /// the previous frame). Transcript: one letter per frame — `.` same, `~` settling, `c` cooling
    /// down, `N` narrated (the harness then marks it narrated, as the worker does).
    fn run(threshold: f32, stable: u32, cooldown_s: f64, script: &str) -> String {
        let mut w = SceneWatch::new(SceneParams {
            change_threshold: threshold,
            stable_frames: stable,
            cooldown: Duration::from_secs_f64(cooldown_s),
        });
        let mut t = 0.0f64;
        let mut out = String::new();
        for tok in script.split_whitespace() {
            let (name, at) = match tok.split_once('@') {
                Some((n, s)) => (n, s.parse::<f64>().unwrap()),
                None => (tok, t + 1.0),
            };
            t = at;
            let now = Duration::from_secs_f64(t);
            let e = emb(name);
            out.push(match w.observe(&e, now) {
                Verdict::Same { .. } => '.',
                Verdict::Settling { .. } => '~',
                Verdict::CoolingDown { .. } => 'c',
                Verdict::Narrate { .. } => {
                    w.narrated(e, now);
                    'N'
                }
            });
        }
        out
    }

    #[test]
    fn first_view_is_narrated_once_settled() {
        assert_eq!(run(0.1, 2, 0.0, "a a a a"), "~N..");
        assert_eq!(run(0.1, 1, 0.0, "a a a"), "N..");
    }

    #[test]
    fn repeats_of_the_same_frame_say_nothing() {
        assert_eq!(run(0.1, 2, 0.0, "a a a a a a a a"), "~N......");
    }

    #[test]
    fn small_changes_stay_below_the_threshold() {
        assert_eq!(run(0.1, 2, 0.0, "a a a2 a a2 a2"), "~N....");
    }

    #[test]
    fn a_change_is_narrated_exactly_once() {
        assert_eq!(run(0.1, 2, 0.0, "a a b b b b"), "~N~N..");
    }

    #[test]
    fn a_change_must_hold() {
        assert_eq!(run(0.1, 3, 0.0, "a a a b b a b b b b"), "~~N~~.~~N.");
    }

    #[test]
    fn a_moving_view_is_not_narrated_until_it_settles() {
        // b, c, b, c: every frame far from `a` but never two alike in a row
        assert_eq!(run(0.1, 2, 0.0, "a a b c b c c c"), "~N~~~~N.");
    }

    #[test]
    fn cooldown_delays_the_next_narration() {
        // narrated at t=2; b settles at t=4 but cooldown lasts until t=12
        assert_eq!(run(0.1, 2, 10.0, "a a b b b@11.9 b@12 b@13"), "~N~ccN.");
    }

    #[test]
    fn going_back_during_cooldown_is_silent() {
        assert_eq!(run(0.1, 2, 10.0, "a a b b a a a@20"), "~N~c...");
    }

    #[test]
    fn seen_resets_the_reference_without_cooldown() {
        let mut w = SceneWatch::new(SceneParams {
            change_threshold: 0.1,
            stable_frames: 1,
            cooldown: Duration::from_secs(100),
        });
        w.seen(emb("b"));
        assert!(matches!(
            w.observe(&emb("b"), Duration::ZERO),
            Verdict::Same { .. }
        ));
        assert!(matches!(
            w.observe(&emb("c"), Duration::ZERO),
            Verdict::Narrate { .. }
        ));
    }

    #[test]
    fn distance_is_cosine() {
        assert!(cosine_distance(&emb("a"), &emb("a")) < 1e-6);
        assert!((cosine_distance(&emb("a"), &emb("b")) - 1.0).abs() < 1e-6);
        assert!((cosine_distance(&emb("a"), &emb("a2")) - 0.02).abs() < 1e-4);
        assert_eq!(cosine_distance(&[1.0], &[1.0, 0.0]), 2.0);
        assert_eq!(cosine_distance(&[0.0, 0.0], &[1.0, 0.0]), 2.0);
    }
}
