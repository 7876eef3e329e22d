//! The scene-change decision: a pure state machine over the scene embeddings of successive frames.
//!
//! A frame is *changed* when its cosine distance to the last narrated scene exceeds
//! `change_threshold` (drift is measured against the last *narrated* scene, never the previous
//! frame, so a slow walk down a corridor is narrated once it has moved far enough). A change is
//! narrated once `stable_frames` changed frames *agree* with each other (each within the threshold
//! of the previous one: the view has settled, the camera is not still moving), not sooner than
//! `cooldown` after the previous scene narration, and not more than `max_per_minute` times in any
//! minute. The very first view counts as changed.
//!
//! Hysteresis: once a change is under way, a frame only cancels it by coming clearly back to the
//! narrated scene (within [`RETURN_RATIO`] × the threshold); frames in between hold the count
//! without adding to it. So noise around the threshold neither starts nor starves a narration, and
//! an A→B→A flicker shorter than `stable_frames` is never narrated.
//!
//! Verbosity: when the previous scene was in view for less than `settle` (scenes are changing
//! quickly, e.g. while walking) the next one is described briefly; once a view has stayed the same
//! for `settle` after its narration, one fuller description may follow (`settle_detail`).
//!
//! Time is passed in (`now`, since the daemon started), so tests drive it.

use std::collections::VecDeque;
use std::time::Duration;

/// A change under way is cancelled only by a frame within this fraction of `change_threshold` of
/// the narrated scene (the lower threshold of the hysteresis).
pub const RETURN_RATIO: f32 = 0.5;

const MINUTE: Duration = Duration::from_secs(60);

/// Tunables, from `[scene]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneParams {
    pub change_threshold: f32,
    pub stable_frames: u32,
    pub cooldown: Duration,
    /// Most scene narrations in any 60 seconds (0 = no limit).
    pub max_per_minute: u32,
    /// A view unchanged this long counts as settled.
    pub settle: Duration,
    /// Give one fuller description once the view has settled.
    pub settle_detail: bool,
}

impl SceneParams {
    pub fn from_config(c: &crate::config::SceneConfig) -> Self {
        Self {
            change_threshold: c.change_threshold as f32,
            stable_frames: c.stable_frames,
            cooldown: Duration::from_secs_f64(c.cooldown_s),
            max_per_minute: c.max_per_minute,
            settle: Duration::from_secs_f64(c.settle_s),
            settle_detail: c.settle_detail,
        }
    }
}

/// How much to say about a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Scenes are changing quickly: a few words.
    Brief,
    /// A short description.
    Normal,
    /// The view has settled: one fuller description.
    Full,
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
    /// Changed and settled, but `max_per_minute` scenes were narrated in the last minute.
    Limited { distance: f32 },
    /// Describe this frame now, at this verbosity.
    Narrate { distance: f32, verbosity: Verbosity },
}

/// The scene watch.
#[derive(Debug, Clone)]
pub struct SceneWatch {
    params: SceneParams,
    narrated: Option<Vec<f32>>,
    last_narration_at: Option<Duration>,
    /// Starts of the scene narrations of the last minute.
    recent: VecDeque<Duration>,
    /// When the scene now in view was first narrated (a change, not a fuller description).
    scene_since: Option<Duration>,
    /// Since when every frame has been the same as the narrated scene.
    still_since: Option<Duration>,
    /// The fuller description of the scene in view was given (or is not wanted).
    settled: bool,
    /// The previous counted frame of the change under way, and how many frames it has held.
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
            recent: VecDeque::new(),
            scene_since: None,
            still_since: None,
            settled: true,
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

    fn cooling(&self, now: Duration) -> bool {
        self.last_narration_at
            .is_some_and(|t| now < t + self.params.cooldown)
    }

    fn limited(&mut self, now: Duration) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= MINUTE)
        {
            self.recent.pop_front();
        }
        self.params.max_per_minute > 0 && self.recent.len() >= self.params.max_per_minute as usize
    }

    /// Looks at one frame's embedding.
    pub fn observe(&mut self, embedding: &[f32], now: Duration) -> Verdict {
        let distance = self.distance(embedding);
        let threshold = self.params.change_threshold;
        let under_way = self.held > 0;
        let back = if under_way {
            distance <= threshold * RETURN_RATIO
        } else {
            distance <= threshold
        };
        if back {
            self.previous = None;
            self.held = 0;
            let since = *self.still_since.get_or_insert(now);
            let settled_now = self.params.settle_detail
                && !self.settled
                && self.narrated.is_some()
                && now.saturating_sub(since) >= self.params.settle;
            if settled_now && !self.cooling(now) && !self.limited(now) {
                return Verdict::Narrate {
                    distance,
                    verbosity: Verbosity::Full,
                };
            }
            return Verdict::Same { distance };
        }
        self.still_since = None;
        if distance <= threshold {
            // between the two thresholds: the change under way holds, without adding to it
            return Verdict::Settling {
                distance,
                held: self.held,
            };
        }
        let agrees = self
            .previous
            .as_deref()
            .is_none_or(|p| cosine_distance(p, embedding) <= threshold);
        self.held = if agrees { self.held + 1 } else { 1 };
        self.previous = Some(embedding.to_vec());
        if self.held < self.params.stable_frames {
            return Verdict::Settling {
                distance,
                held: self.held,
            };
        }
        if self.cooling(now) {
            return Verdict::CoolingDown { distance };
        }
        if self.limited(now) {
            return Verdict::Limited { distance };
        }
        let quick = self
            .scene_since
            .is_some_and(|s| now.saturating_sub(s) < self.params.settle);
        Verdict::Narrate {
            distance,
            verbosity: if quick {
                Verbosity::Brief
            } else {
                Verbosity::Normal
            },
        }
    }

    /// A scene narration of `embedding`'s view at `verbosity` started at `started`: it becomes the
    /// scene to compare with, and starts the cooldown.
    pub fn narrated(&mut self, embedding: Vec<f32>, started: Duration, verbosity: Verbosity) {
        self.narrated = Some(embedding);
        self.last_narration_at = Some(started);
        self.recent.push_back(started);
        if verbosity == Verbosity::Full {
            self.settled = true;
        } else {
            self.scene_since = Some(started);
            self.settled = !self.params.settle_detail;
        }
        self.still_since = Some(started);
        self.previous = None;
        self.held = 0;
    }

    /// The user heard a description of this view (detail, answer): compare with it from now on,
    /// without starting the scene cooldown, and without a fuller description of it later.
    pub fn seen(&mut self, embedding: Vec<f32>) {
        self.narrated = Some(embedding);
        self.settled = true;
        self.still_since = None;
        self.previous = None;
        self.held = 0;
    }

    /// A description of this view said nothing new (a repeat, not spoken): compare with it from
    /// now on, as if it had been narrated, but without cooldown or counting it.
    pub fn repeated(&mut self, embedding: Vec<f32>, now: Duration) {
        self.narrated = Some(embedding);
        self.still_since = Some(now);
        self.previous = None;
        self.held = 0;
    }

    /// Forget a change in progress, and the stillness of the view (e.g. after a pause, or while
    /// the view cannot be described).
    pub fn reset_run(&mut self) {
        self.previous = None;
        self.held = 0;
        self.still_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors: `a` and `a2` are close (distance ≈ 0.02), `b`, `c` far from `a` and from each
    /// other (distance 1); `rN` is `a` turned N degrees towards `b` (`r90` = `b`; distance to `a`
    /// is 1 − cos N°: r10 ≈ 0.015, r25 ≈ 0.094, r27 ≈ 0.109, r30 ≈ 0.134).
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
            other => {
                let deg: f32 = other
                    .strip_prefix('r')
                    .and_then(|d| d.parse().ok())
                    .unwrap_or_else(|| panic!("unknown frame {other}"));
                v[0] = deg.to_radians().cos();
                v[2] = deg.to_radians().sin();
            }
        }
        v
    }

    fn params(threshold: f32, stable: u32, cooldown_s: f64) -> SceneParams {
        SceneParams {
            change_threshold: threshold,
            stable_frames: stable,
            cooldown: Duration::from_secs_f64(cooldown_s),
            max_per_minute: 0,
            settle: Duration::ZERO,
            settle_detail: false,
        }
    }

    /// Script: frames `a`, `b`, … optionally timed `b@12.5` (seconds; default: one second after
    /// the previous frame). Transcript: one letter per frame — `.` same, `~` settling, `c` cooling
    /// down, `m` over `max_per_minute`, `N` narrated, `n` narrated briefly, `F` fuller description
    /// of a settled view (the harness then marks it narrated, as the worker does).
    fn sim(p: SceneParams, script: &str) -> String {
        let mut w = SceneWatch::new(p);
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
                Verdict::Limited { .. } => 'm',
                Verdict::Narrate { verbosity, .. } => {
                    w.narrated(e, now, verbosity);
                    match verbosity {
                        Verbosity::Brief => 'n',
                        Verbosity::Normal => 'N',
                        Verbosity::Full => 'F',
                    }
                }
            });
        }
        out
    }

    fn run(threshold: f32, stable: u32, cooldown_s: f64, script: &str) -> String {
        sim(params(threshold, stable, cooldown_s), script)
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
    fn an_a_b_a_flicker_is_not_narrated() {
        assert_eq!(run(0.1, 2, 0.0, "a a b a a b a a"), "~N~..~..");
        // a view flickering between two scenes frame by frame never settles on the other one
        assert_eq!(run(0.1, 2, 0.0, "a a b a b a b a b a"), "~N~.~.~.~.");
    }

    #[test]
    fn a_moving_view_is_not_narrated_until_it_settles() {
        // b, c, b, c: every frame far from `a` but never two alike in a row
        assert_eq!(run(0.1, 2, 0.0, "a a b c b c c c"), "~N~~~~N.");
    }

    #[test]
    fn hysteresis_noise_around_the_threshold_neither_starves_nor_cancels_a_change() {
        // r27 is just over the threshold, r25 just under it: the change holds through r25
        assert_eq!(
            run(0.1, 3, 0.0, "a a a r27 r25 r27 r25 r27 r27"),
            "~~N~~~~N."
        );
        // a frame clearly back at the narrated scene cancels the change under way
        assert_eq!(run(0.1, 2, 0.0, "a a r27 r10 r27 r27"), "~N~.~N");
        // without a change under way, just-under-the-threshold is the same scene
        assert_eq!(run(0.1, 2, 0.0, "a a r25 r25 r25"), "~N...");
    }

    #[test]
    fn a_slow_drift_is_narrated_once_far_enough_from_the_last_narrated_scene() {
        // five degrees per frame: each frame is close to the one before, but the view drifts
        let drift: Vec<String> = (0..=14).map(|i| format!("r{}", i * 5)).collect();
        let script = format!("a a {}", drift.join(" "));
        // narrated at r35 (r30 is the first over the threshold, r35 agrees with it), then at r70
        // once 30° from r35
        assert_eq!(run(0.1, 2, 0.0, &script), "~N......~N.....~N");
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
    fn at_most_max_per_minute_scene_narrations() {
        let p = SceneParams {
            max_per_minute: 2,
            ..params(0.1, 1, 0.0)
        };
        // a new scene every second: two narrations, then silence until the first is a minute old
        assert_eq!(sim(p, "a b c a c@60.9 c@61 a@61.5 a@62"), "NNmmmNmN");
    }

    #[test]
    fn quick_changes_are_brief_and_a_settled_view_gets_one_fuller_description() {
        let p = SceneParams {
            settle: Duration::from_secs(5),
            settle_detail: true,
            ..params(0.1, 2, 0.0)
        };
        // b follows a after 2 s, c follows b after 2 s: brief; c stays for 5 s: one fuller
        // description, then nothing more
        assert_eq!(
            sim(p.clone(), "a a b b c c c c c c c c c c"),
            "~N~n~n....F..."
        );
        // a view that stayed for longer than `settle` is followed by a normal description
        assert_eq!(sim(p.clone(), "a a a a a a a a b b"), "~N....F.~N");
        // without settle_detail, no fuller description
        let off = SceneParams {
            settle_detail: false,
            ..p
        };
        assert_eq!(sim(off, "a a b b c c c c c c c c"), "~N~n~n......");
    }

    #[test]
    fn stillness_is_broken_by_movement() {
        let p = SceneParams {
            settle: Duration::from_secs(4),
            settle_detail: true,
            ..params(0.1, 3, 0.0)
        };
        // a glance away (b, not held) restarts the count of still seconds
        assert_eq!(sim(p, "a a a a a b a a a a a"), "~~N..~....F");
    }

    #[test]
    fn a_user_description_of_the_view_replaces_the_fuller_one() {
        let mut w = SceneWatch::new(SceneParams {
            settle: Duration::from_secs(2),
            settle_detail: true,
            ..params(0.1, 1, 0.0)
        });
        let s = Duration::from_secs;
        assert!(matches!(
            w.observe(&emb("a"), s(0)),
            Verdict::Narrate { .. }
        ));
        w.narrated(emb("a"), s(0), Verbosity::Normal);
        w.seen(emb("a"));
        for t in 1..10 {
            assert!(matches!(w.observe(&emb("a"), s(t)), Verdict::Same { .. }));
        }
    }

    #[test]
    fn seen_resets_the_reference_without_cooldown() {
        let mut w = SceneWatch::new(SceneParams {
            cooldown: Duration::from_secs(100),
            ..params(0.1, 1, 0.0)
        });
        w.seen(emb("b"));
        assert!(matches!(
            w.observe(&emb("b"), Duration::ZERO),
            Verdict::Same { .. }
        ));
        assert!(matches!(
            w.observe(&emb("c"), Duration::ZERO),
            Verdict::Narrate {
                verbosity: Verbosity::Normal,
                ..
            }
        ));
    }

    #[test]
    fn a_repeat_moves_the_reference_without_cooldown_or_count() {
        let mut w = SceneWatch::new(SceneParams {
            cooldown: Duration::from_secs(100),
            max_per_minute: 1,
            ..params(0.1, 1, 0.0)
        });
        w.repeated(emb("b"), Duration::ZERO);
        assert!(matches!(
            w.observe(&emb("b"), Duration::from_secs(1)),
            Verdict::Same { .. }
        ));
        assert!(matches!(
            w.observe(&emb("c"), Duration::from_secs(2)),
            Verdict::Narrate { .. }
        ));
    }

    #[test]
    fn distance_is_cosine() {
        assert!(cosine_distance(&emb("a"), &emb("a")) < 1e-6);
        assert!((cosine_distance(&emb("a"), &emb("b")) - 1.0).abs() < 1e-6);
        assert!((cosine_distance(&emb("a"), &emb("a2")) - 0.02).abs() < 1e-4);
        assert!((cosine_distance(&emb("a"), &emb("r90")) - 1.0).abs() < 1e-6);
        assert!((cosine_distance(&emb("a"), &emb("r27")) - 0.109).abs() < 1e-3);
        assert_eq!(cosine_distance(&[1.0], &[1.0, 0.0]), 2.0);
        assert_eq!(cosine_distance(&[0.0, 0.0], &[1.0, 0.0]), 2.0);
    }
}
