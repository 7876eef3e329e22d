//! Watches: "tell me when the kettle light goes off". Each watch is a yes/no question the model
//! answers about the view from its next-token logits (as `scenesay search` does), and a pure state
//! machine over those scores with hysteresis: it turns true after `confirm` checks in a row score
//! at least `on`, is announced once, and is armed again only after a check scores at most `off`.
//! A score between the two changes nothing, so a view at the edge of the model's judgement does
//! not chatter.
//!
//! When to check is decided here too ([`due`]): after the scene watch saw the view change, and at
//! most every `interval` on a view that does not change; never while the view is moving.

use std::time::Duration;

/// Most watches at once: every one costs a prefill per check.
pub const MAX_WATCHES: usize = 8;

/// Longest condition, in characters.
pub const MAX_CONDITION: usize = 200;

/// Where the condition goes in the question.
pub const CONDITION: &str = "{condition}";

/// Hysteresis thresholds (`[watch] on`, `off`, `confirm`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchParams {
    /// A check scoring at least this counts as "true" (P(yes) / (P(yes) + P(no))).
    pub on: f64,
    /// A watch that turned true is armed again by a check scoring at most this.
    pub off: f64,
    /// Checks in a row scoring at least `on` before the watch turns true.
    pub confirm: u32,
}

impl Default for WatchParams {
    fn default() -> Self {
        Self {
            on: 0.7,
            off: 0.3,
            confirm: 2,
        }
    }
}

/// Where a watch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the condition: `streak` checks in a row have scored at least `on`.
    Armed { streak: u32 },
    /// Turned true and announced; waits for a score at most `off` to be armed again.
    True,
}

/// One watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// Its number, as the user names it (`scenesay ctl unwatch 2`); never reused until restart.
    pub id: u32,
    /// The condition in the user's words.
    pub condition: String,
    pub phase: Phase,
    /// The last check's score.
    pub last_score: Option<f64>,
    pub checks: u64,
    /// How many times it turned true.
    pub fired: u64,
}

impl Watch {
    fn new(id: u32, condition: String) -> Self {
        Self {
            id,
            condition,
            phase: Phase::Armed { streak: 0 },
            last_score: None,
            checks: 0,
            fired: 0,
        }
    }

    /// Takes one check's score; true when the watch turns true now (announce it).
    pub fn observe(&mut self, score: f64, p: &WatchParams) -> bool {
        self.checks += 1;
        self.last_score = Some(score);
        match self.phase {
            Phase::Armed { streak } if score >= p.on => {
                let streak = streak + 1;
                if streak >= p.confirm.max(1) {
                    self.phase = Phase::True;
                    self.fired += 1;
                    return true;
                }
                self.phase = Phase::Armed { streak };
            }
            Phase::Armed { .. } => self.phase = Phase::Armed { streak: 0 },
            Phase::True if score <= p.off => self.phase = Phase::Armed { streak: 0 },
            Phase::True => {}
        }
        false
    }

    /// "waiting" or "true".
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Armed { .. } => "waiting",
            Phase::True => "true",
        }
    }
}

/// Why a watch cannot be added or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("the condition is empty: say what to watch for, e.g. \"the kettle light is off\"")]
    Empty,
    #[error("the condition is longer than {MAX_CONDITION} characters")]
    TooLong,
    #[error("{MAX_WATCHES} watches are set already (each costs a model pass per check); remove one with `scenesay ctl unwatch N`")]
    TooMany,
    #[error("watch {id} already watches for \"{condition}\"")]
    Duplicate { id: u32, condition: String },
    #[error("there is no watch {0} ({1})")]
    NoSuch(u32, String),
}

/// The watches set, in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Watches {
    list: Vec<Watch>,
    next_id: u32,
    params: WatchParams,
}

impl Watches {
    pub fn new(params: WatchParams) -> Self {
        Self {
            list: vec![],
            next_id: 1,
            params,
        }
    }

    /// Adds a watch; returns its number.
    pub fn add(&mut self, condition: &str) -> Result<u32, WatchError> {
        let condition = tidy(condition);
        if condition.is_empty() {
            return Err(WatchError::Empty);
        }
        if condition.chars().count() > MAX_CONDITION {
            return Err(WatchError::TooLong);
        }
        if let Some(w) = self
            .list
            .iter()
            .find(|w| w.condition.to_lowercase() == condition.to_lowercase())
        {
            return Err(WatchError::Duplicate {
                id: w.id,
                condition: w.condition.clone(),
            });
        }
        if self.list.len() >= MAX_WATCHES {
            return Err(WatchError::TooMany);
        }
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        self.list.push(Watch::new(id, condition));
        Ok(id)
    }

    /// Removes watch `id`.
    pub fn remove(&mut self, id: u32) -> Result<Watch, WatchError> {
        match self.list.iter().position(|w| w.id == id) {
            Some(i) => Ok(self.list.remove(i)),
            None => Err(WatchError::NoSuch(id, self.numbers())),
        }
    }

    /// "watches: 1, 3" or "no watches are set".
    fn numbers(&self) -> String {
        if self.list.is_empty() {
            "no watches are set".into()
        } else {
            let n: Vec<String> = self.list.iter().map(|w| w.id.to_string()).collect();
            format!("watches: {}", n.join(", "))
        }
    }

    pub fn list(&self) -> &[Watch] {
        &self.list
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The numbers and conditions, in order (to check each without holding `self`).
    pub fn conditions(&self) -> Vec<(u32, String)> {
        self.list
            .iter()
            .map(|w| (w.id, w.condition.clone()))
            .collect()
    }

    /// One check's score for watch `id` (gone meanwhile: nothing); the announcement when it turns
    /// true now.
    pub fn observe(&mut self, id: u32, score: f64) -> Option<String> {
        let p = self.params;
        let w = self.list.iter_mut().find(|w| w.id == id)?;
        w.observe(score, &p)
            .then(|| announcement(w.id, &w.condition))
    }
}

/// Whitespace collapsed, trailing sentence punctuation removed.
fn tidy(condition: &str) -> String {
    let s = condition.split_whitespace().collect::<Vec<_>>().join(" ");
    s.trim_end_matches(['.', '!', '?', '。', '！', '？'])
        .trim()
        .to_string()
}

/// What is said when a watch turns true: the user's own words and the watch's number, e.g.
/// "Watch 1: the kettle light goes off — now true." The condition is not rephrased into a
/// statement ("The kettle light is off."): rules cannot do that reliably for every wording and
/// language, and asking the model for the sentence would add a generation that could contradict
/// the yes/no answer it rests on.
pub fn announcement(id: u32, condition: &str) -> String {
    format!("Watch {id}: {condition} — now true.")
}

/// The yes/no question for `condition`: `template` with [`CONDITION`] replaced.
pub fn question(template: &str, condition: &str) -> String {
    template.replace(CONDITION, condition)
}

/// Whether the watches are checked on this frame: right after the scene watch saw the view change
/// (`changed`: a scene was narrated, or its repeat suppressed), else on a view that is not moving
/// once `interval` has passed since the last check (or there was none). Never while the view is
/// moving (a change under way is checked once it has settled).
pub fn due(changed: bool, moving: bool, since_last: Option<Duration>, interval: Duration) -> bool {
    if changed {
        return true;
    }
    !moving && since_last.is_none_or(|d| d >= interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a script of scores ("0.9 0.2 …") through one watch; the transcript marks each check
    /// `.` (nothing), `!` (turned true: announced).
    fn transcript(params: WatchParams, scores: &str) -> String {
        let mut w = Watch::new(1, "x".into());
        scores
            .split_whitespace()
            .map(|s| {
                if w.observe(s.parse().unwrap(), &params) {
                    '!'
                } else {
                    '.'
                }
            })
            .collect()
    }

    const P: WatchParams = WatchParams {
        on: 0.7,
        off: 0.3,
        confirm: 2,
    };

    #[test]
    fn turns_true_after_confirm_checks_in_a_row_and_is_said_once() {
        assert_eq!(transcript(P, "0.1 0.8 0.9 0.9 0.95 0.8"), "..!...");
        // one high check is not enough; an interruption restarts the count
        assert_eq!(transcript(P, "0.8 0.5 0.8 0.2 0.8 0.8"), ".....!");
        // true from the start: announced once it is confirmed
        assert_eq!(transcript(P, "0.9 0.9"), ".!");
    }

    #[test]
    fn re_arms_only_after_a_score_at_most_off() {
        // hovering between off and on after turning true never re-announces
        assert_eq!(
            transcript(P, "0.9 0.9 0.5 0.6 0.9 0.9 0.4 0.9 0.9"),
            ".!......."
        );
        // a clear "no" re-arms; the next confirmed "yes" is announced again
        assert_eq!(transcript(P, "0.9 0.9 0.3 0.9 0.9 0.1 0.8 0.8"), ".!..!..!");
        // a single stray "no" between two "yes" runs re-arms: the next run counts from zero
        assert_eq!(transcript(P, "0.9 0.9 0.0 0.9 0.0 0.9 0.9"), ".!....!");
    }

    #[test]
    fn confirm_one_fires_on_the_first_high_score() {
        let p = WatchParams { confirm: 1, ..P };
        assert_eq!(transcript(p, "0.7 0.69 0.31 0.3 0.7"), "!...!");
        let p = WatchParams { confirm: 0, ..P };
        assert_eq!(transcript(p, "0.9"), "!", "0 behaves as 1");
    }

    #[test]
    fn watches_are_numbered_listed_and_removed() {
        let mut ws = Watches::new(P);
        assert_eq!(ws.add("  the kettle light   is off. "), Ok(1));
        assert_eq!(ws.add("the front door is open"), Ok(2));
        assert_eq!(ws.list()[0].condition, "the kettle light is off");
        assert_eq!(
            ws.add("The kettle light is off"),
            Err(WatchError::Duplicate {
                id: 1,
                condition: "the kettle light is off".into()
            })
        );
        assert_eq!(ws.add(" ?"), Err(WatchError::Empty));
        assert_eq!(
            ws.add(&"x".repeat(MAX_CONDITION + 1)),
            Err(WatchError::TooLong)
        );
        assert_eq!(ws.remove(1).unwrap().condition, "the kettle light is off");
        let e = ws.remove(1).unwrap_err();
        assert_eq!(e.to_string(), "there is no watch 1 (watches: 2)");
        // numbers are not reused
        assert_eq!(ws.add("the kettle light is off"), Ok(3));
        for i in 0..MAX_WATCHES - 2 {
            ws.add(&format!("condition {i}")).unwrap();
        }
        assert_eq!(ws.add("one too many"), Err(WatchError::TooMany));
        assert_eq!(ws.conditions().len(), MAX_WATCHES);
        ws.remove(2).unwrap();
        assert!(ws
            .remove(99)
            .unwrap_err()
            .to_string()
            .contains("watches: 3, 4"));
    }

    #[test]
    fn the_announcement_names_the_watch_and_the_users_words() {
        let mut ws = Watches::new(P);
        let id = ws.add("the kettle light goes off").unwrap();
        assert_eq!(ws.observe(id, 0.9), None);
        assert_eq!(
            ws.observe(id, 0.9).as_deref(),
            Some("Watch 1: the kettle light goes off — now true.")
        );
        assert_eq!(ws.observe(id, 0.9), None);
        assert_eq!(ws.observe(42, 0.9), None, "a removed watch is ignored");
        let w = &ws.list()[0];
        assert_eq!((w.checks, w.fired, w.state_name()), (3, 1, "true"));
        assert_eq!(
            question(
                "Is this true: {condition}? Answer yes or no.",
                "the door is open"
            ),
            "Is this true: the door is open? Answer yes or no."
        );
    }

    #[test]
    fn checks_come_after_a_change_and_at_most_every_interval_on_a_still_view() {
        let i = Duration::from_secs(5);
        let s = Duration::from_secs;
        assert!(
            due(true, false, Some(s(0)), i),
            "a change is checked at once"
        );
        assert!(due(false, false, None, i), "a first check");
        assert!(!due(false, false, Some(s(4)), i));
        assert!(due(false, false, Some(s(5)), i));
        assert!(!due(false, true, Some(s(60)), i), "not while moving");
        assert!(!due(false, true, None, i));
    }
}
