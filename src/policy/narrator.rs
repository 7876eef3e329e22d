//! The scene narration policy as one pure state machine, composed of the view guard
//! ([`super::guard`]), the scene watch ([`super::scene`]) and text de-duplication
//! ([`super::dedup`]). The worker feeds it each frame's view state, then (for a clear view) the
//! frame's embedding, then the first sentence the model says; it answers what to say, what to skip
//! and what to suppress. Tested as a script of frames → a transcript of what was said.
//!
//! Order of the checks for one frame:
//! 1. The view: dark, covered, overexposed or blurred frames are never described; a state that
//!    holds is announced once ("Camera view is dark."), and the return to a clear view too.
//! 2. The scene watch decides whether the clear view is a new scene, and how fully to describe it.
//! 3. The first sentence of a brief or normal scene description is compared with the last scene
//!    description said: one that says essentially the same is suppressed (the generation is
//!    stopped, nothing is spoken, the log says why).

use std::time::Duration;

use super::dedup;
use super::guard::{GuardConfig, ViewGuard, ViewState};
use super::scene::{SceneParams, SceneWatch, Verbosity, Verdict};
use crate::speech::sentences::SentenceSplitter;

/// Tunables, from `[scene]` and `[guards]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NarratorParams {
    pub scene: SceneParams,
    pub guards: GuardConfig,
    /// A scene description this similar (content-word Dice, 0–1) to the last one said is not
    /// spoken; 0 turns the check off.
    pub repeat_similarity: f32,
    /// The narration language (`[speech] language`; empty = English), for comparing words.
    pub language: String,
}

impl NarratorParams {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            scene: SceneParams::from_config(&c.scene),
            guards: c.guards,
            repeat_similarity: c.scene.repeat_similarity as f32,
            language: c.speech.language.clone(),
        }
    }
}

/// What to do with a frame, once its view has been checked: say `notice` first, if any; then, if
/// `describe`, go on with the frame's embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewStep {
    pub notice: Option<&'static str>,
    pub describe: bool,
}

/// A scene description said last, for de-duplication.
#[derive(Debug, Clone, PartialEq)]
struct Said {
    first: String,
    whole: String,
}

/// The narration policy.
#[derive(Debug, Clone)]
pub struct Narrator {
    params: NarratorParams,
    guard: ViewGuard,
    watch: SceneWatch,
    last_scene: Option<Said>,
}

fn first_sentence(text: &str) -> String {
    let mut s = SentenceSplitter::default();
    s.push(text)
        .into_iter()
        .next()
        .or_else(|| s.finish())
        .unwrap_or_default()
}

impl Narrator {
    pub fn new(params: NarratorParams) -> Self {
        Self {
            guard: ViewGuard::new(params.guards.hold_frames),
            watch: SceneWatch::new(params.scene.clone()),
            params,
            last_scene: None,
        }
    }

    pub fn watch(&self) -> &SceneWatch {
        &self.watch
    }

    /// The view state last announced.
    pub fn view_state(&self) -> ViewState {
        self.guard.state()
    }

    /// Step 1: the view state of the latest frame.
    pub fn view(&mut self, state: ViewState) -> ViewStep {
        let notice = self.guard.observe(state);
        let describe = !self.guard.blocks(state);
        if !describe {
            self.watch.reset_run();
        }
        ViewStep { notice, describe }
    }

    /// Step 2: the embedding of a clear frame.
    pub fn observe(&mut self, embedding: &[f32], now: Duration) -> Verdict {
        self.watch.observe(embedding, now)
    }

    /// Step 3: the first sentence of a scene description at `verbosity`. `Some(similarity)` when it
    /// repeats the last scene description said: suppress the narration and call
    /// [`Narrator::repeated`].
    pub fn repeats(&self, verbosity: Verbosity, sentence: &str) -> Option<f32> {
        let t = self.params.repeat_similarity;
        if t <= 0.0 || verbosity == Verbosity::Full {
            return None;
        }
        let last = self.last_scene.as_ref()?;
        let lang = &self.params.language;
        let sim = dedup::similarity_in(lang, &last.first, sentence).max(dedup::similarity_in(
            lang,
            &last.whole,
            sentence,
        ));
        (sim >= t).then_some(sim)
    }

    /// A scene description of this view was said (`text`, started at `started`).
    pub fn narrated(
        &mut self,
        embedding: Vec<f32>,
        started: Duration,
        verbosity: Verbosity,
        text: &str,
    ) {
        self.watch.narrated(embedding, started, verbosity);
        if verbosity != Verbosity::Full {
            self.last_scene = Some(Said {
                first: first_sentence(text),
                whole: text.to_string(),
            });
        }
    }

    /// A scene description of this view was suppressed as a repeat.
    pub fn repeated(&mut self, embedding: Vec<f32>, now: Duration) {
        self.watch.repeated(embedding, now);
    }

    /// The user heard a description of this view (a request).
    pub fn seen(&mut self, embedding: Vec<f32>) {
        self.watch.seen(embedding);
    }

    /// Forget a change in progress (after a pause).
    pub fn reset_run(&mut self) {
        self.watch.reset_run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame names: `a`, `b`, `c`, `d` are far-apart views; `a2` is `a` seen slightly differently.
    /// `dark`, `covered`, `bright`, `blurred` are frames the view guard rejects.
    fn emb(name: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; 5];
        match name {
            "a" => v[0] = 1.0,
            "a2" => {
                v[0] = 0.98;
                v[4] = (1.0f32 - 0.98 * 0.98).sqrt();
            }
            "b" => v[1] = 1.0,
            "c" => v[2] = 1.0,
            "d" => v[3] = 1.0,
            other => panic!("unknown frame {other}"),
        }
        v
    }

    /// What the model says about each view: `d` is `a` again in other words.
    fn says(name: &str) -> &'static str {
        match name {
            "a" | "a2" => "A man sits at a desk with a laptop. A lamp on the left.",
            "b" => "A kitchen with a red kettle on the stove.",
            "c" => "A door ahead, slightly open.",
            "d" => "There is a man sitting at a desk, using his laptop.",
            _ => unreachable!(),
        }
    }

    fn state(name: &str) -> ViewState {
        match name {
            "dark" => ViewState::Dark,
            "covered" => ViewState::Covered,
            "bright" => ViewState::Overexposed,
            "blurred" => ViewState::Blurred,
            _ => ViewState::Clear,
        }
    }

    fn params() -> NarratorParams {
        NarratorParams {
            scene: SceneParams {
                change_threshold: 0.1,
                stable_frames: 2,
                cooldown: Duration::ZERO,
                max_per_minute: 0,
                settle: Duration::from_secs(30),
                settle_detail: false,
            },
            guards: GuardConfig::default(),
            repeat_similarity: 0.7,
            language: String::new(),
        }
    }

    /// Script: one frame per token (`name` or `name@seconds`; default one second after the previous
    /// one). Transcript, one token per frame: `[notice]` for a notice said, then `-` not described
    /// (bad view), `.` same scene, `~` settling, `c` cooling down, `m` over the per-minute limit,
    /// `N(x)` / `n(x)` / `F(x)` a normal / brief / fuller description of `x` spoken, `R(x)` a
    /// description of `x` suppressed as a repeat.
    fn sim(p: NarratorParams, script: &str) -> String {
        let mut n = Narrator::new(p);
        let mut t = 0.0f64;
        let mut out = vec![];
        for tok in script.split_whitespace() {
            let (name, at) = match tok.split_once('@') {
                Some((n, s)) => (n, s.parse::<f64>().unwrap()),
                None => (tok, t + 1.0),
            };
            t = at;
            let now = Duration::from_secs_f64(t);
            let ViewStep { notice, describe } = n.view(state(name));
            let mut said = notice.map(|n| format!("[{n}]")).unwrap_or_default();
            if !describe {
                said.push('-');
                out.push(said);
                continue;
            }
            let e = emb(name);
            said.push_str(&match n.observe(&e, now) {
                Verdict::Same { .. } => ".".into(),
                Verdict::Settling { .. } => "~".into(),
                Verdict::CoolingDown { .. } => "c".into(),
                Verdict::Limited { .. } => "m".into(),
                Verdict::Narrate { verbosity, .. } => {
                    let text = says(name);
                    if n.repeats(verbosity, &first_sentence(text)).is_some() {
                        n.repeated(e, now);
                        format!("R({name})")
                    } else {
                        n.narrated(e, now, verbosity, text);
                        let v = match verbosity {
                            Verbosity::Brief => 'n',
                            Verbosity::Normal => 'N',
                            Verbosity::Full => 'F',
                        };
                        format!("{v}({name})")
                    }
                }
            });
            out.push(said);
        }
        out.join(" ")
    }

    #[test]
    fn a_scene_change_is_said_once() {
        assert_eq!(sim(params(), "a a a a2 a"), "~ N(a) . . .");
        assert_eq!(sim(params(), "a a b b b"), "~ N(a) ~ n(b) .");
    }

    #[test]
    fn flicker_is_not_narrated() {
        assert_eq!(sim(params(), "a a b a b a a"), "~ N(a) ~ . ~ . .");
    }

    #[test]
    fn dark_then_light_is_one_notice_each_and_the_same_scene_is_not_said_again() {
        assert_eq!(
            sim(params(), "a a dark dark dark a a a"),
            "~ N(a) - [Camera view is dark.]- - - [Camera view is clear again.]. ."
        );
        // a new scene after the dark is narrated, once the view is announced clear again
        assert_eq!(
            sim(params(), "a a dark dark b b b"),
            "~ N(a) - [Camera view is dark.]- - [Camera view is clear again.]~ n(b)"
        );
    }

    #[test]
    fn a_dark_start_is_announced_and_the_first_view_after_it_described() {
        assert_eq!(
            sim(params(), "dark dark dark a a a"),
            "- [Camera view is dark.]- - - [Camera view is clear again.]~ N(a)"
        );
    }

    #[test]
    fn a_single_bad_frame_says_nothing_and_breaks_the_change_under_way() {
        assert_eq!(sim(params(), "a a b blurred b b"), "~ N(a) ~ - ~ n(b)");
    }

    #[test]
    fn bad_views_change_notice_only_when_their_state_changes() {
        assert_eq!(
            sim(params(), "dark dark covered covered covered bright bright"),
            "- [Camera view is dark.]- - [The camera seems covered.]- - - [Camera view is too bright.]-"
        );
    }

    #[test]
    fn a_repeated_scene_in_other_words_is_suppressed() {
        // d looks different (embedding) but the model says the same as it said for a
        assert_eq!(sim(params(), "a a d d d"), "~ N(a) ~ R(d) .");
        // and the next real change is said at once: a repeat starts no cooldown
        let p = NarratorParams {
            scene: SceneParams {
                cooldown: Duration::from_secs(10),
                ..params().scene
            },
            ..params()
        };
        assert_eq!(sim(p, "a a d@13 d@14 b@15 b@16"), "~ N(a) ~ R(d) ~ n(b)");
        let off = NarratorParams {
            repeat_similarity: 0.0,
            ..params()
        };
        assert_eq!(sim(off, "a a d d d"), "~ N(a) ~ n(d) .");
    }

    #[test]
    fn a_settled_view_gets_one_fuller_description_which_is_never_a_repeat() {
        let p = NarratorParams {
            scene: SceneParams {
                settle: Duration::from_secs(3),
                settle_detail: true,
                ..params().scene
            },
            ..params()
        };
        assert_eq!(sim(p, "a a a a a a a"), "~ N(a) . . F(a) . .");
    }

    #[test]
    fn at_most_max_per_minute() {
        let p = NarratorParams {
            scene: SceneParams {
                max_per_minute: 2,
                stable_frames: 1,
                ..params().scene
            },
            ..params()
        };
        assert_eq!(sim(p, "a b c a c@61.5 b@61.8"), "N(a) n(b) m m N(c) m");
    }

    #[test]
    fn disabled_guards_let_every_view_through() {
        let p = NarratorParams {
            guards: GuardConfig {
                enabled: false,
                ..GuardConfig::default()
            },
            ..params()
        };
        // the states come from classify(), which the disabled guards make always clear
        let mut n = Narrator::new(p.clone());
        let s = crate::policy::guard::classify(
            &crate::policy::guard::view_stats(&image::RgbImage::new(8, 8)),
            &p.guards,
        );
        assert_eq!(
            n.view(s),
            ViewStep {
                notice: None,
                describe: true
            }
        );
    }
}
