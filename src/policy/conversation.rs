//! Follow-up questions: whether `ctl ask` goes on with the conversation about the view (the model
//! keeps the picture and the earlier turns, so a follow-up costs only its own tokens) or starts
//! afresh. A pure state machine: the worker tells it what happened (a description or answer about
//! a view finished, a follow-up was answered, the scene changed, another request ran the model,
//! the user asked for a new conversation) and asks it, before each question, what to do.
//!
//! A conversation is begun by a description the user asked for (`describe`, `read`, a fresh
//! `ask`) and goes on while all of these hold:
//! - the next question comes within `follow_up` of the last answer (`[describe] followup_s`);
//! - the view is the same: no scene change was narrated since, and the view now is within the
//!   scene watch's `change_threshold` of the view the conversation is about;
//! - nothing else ran the model in between (a scene narration, `changed`, a new `describe`: each
//!   replaces what the model holds), and the last answer was not cut short;
//! - the conversation leaves room in the model's context for another answer.
//!
//! Time is passed in (the daemon clock), so tests drive it.

use std::time::Duration;

use super::scene::cosine_distance;

/// Tunables.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationParams {
    /// How long after an answer a question still follows it up; zero turns follow-ups off.
    pub follow_up: Duration,
    /// A view further than this (cosine distance) from the conversation's is another view.
    pub change_threshold: f32,
    /// Tokens that must be left in the model's context for another turn (question and answer).
    pub reserve_tokens: usize,
}

/// Why a question is asked afresh, or why a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// There was no conversation (none yet, or it had already ended).
    NoConversation,
    /// Follow-ups are switched off (`followup_s = 0`).
    Off,
    /// More than `follow_up` since the last answer.
    Timeout,
    /// The view now is not the view the conversation is about.
    ViewChanged,
    /// A scene change was narrated (or, in periodic mode, seen).
    NewScene,
    /// The user asked for a detailed description: it begins a new conversation.
    Describe,
    /// `ctl new` (or its hotkey).
    New,
    /// Another request or narration ran the model (its memory of the conversation is gone).
    Overwritten,
    /// The last answer was cut short (pre-empted, failed).
    Interrupted,
    /// Another turn would not fit in the model's context.
    ContextFull,
}

impl Why {
    pub fn describe(self) -> &'static str {
        match self {
            Why::NoConversation => "no conversation",
            Why::Off => "follow-ups are off",
            Why::Timeout => "too long since the last answer",
            Why::ViewChanged => "the view changed",
            Why::NewScene => "a new scene",
            Why::Describe => "a new description",
            Why::New => "a new conversation was asked for",
            Why::Overwritten => "the model was asked something else",
            Why::Interrupted => "the last answer was cut short",
            Why::ContextFull => "the conversation is as long as the model allows",
        }
    }
}

/// What to do with a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Go on with the conversation; this will be its `turn`-th question (2 for the first
    /// follow-up).
    FollowUp { turn: usize },
    /// Ask about the view afresh.
    Fresh(Why),
}

#[derive(Debug, Clone, PartialEq)]
struct Open {
    /// The scene embedding of the view the conversation is about (`None`: not known).
    view: Option<Vec<f32>>,
    answered_at: Duration,
    turns: usize,
}

/// The conversation state.
#[derive(Debug, Clone)]
pub struct Conversation {
    params: ConversationParams,
    open: Option<Open>,
}

impl Conversation {
    pub fn new(params: ConversationParams) -> Self {
        Self { params, open: None }
    }

    pub fn params(&self) -> &ConversationParams {
        &self.params
    }

    /// Questions answered in the open conversation (0: none).
    pub fn turns(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.turns)
    }

    /// Is a conversation open at `now` (an answer less than `follow_up` ago)?
    pub fn is_open(&self, now: Duration) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| now <= o.answered_at + self.params.follow_up)
    }

    /// A description or an answer about `view` that begins a conversation was given at `at` (any
    /// conversation before it is over).
    pub fn started(&mut self, view: Option<Vec<f32>>, at: Duration) {
        self.open = (!self.params.follow_up.is_zero()).then_some(Open {
            view,
            answered_at: at,
            turns: 1,
        });
    }

    /// A follow-up was answered at `at`.
    pub fn continued(&mut self, at: Duration) {
        if let Some(o) = self.open.as_mut() {
            o.answered_at = at;
            o.turns += 1;
        }
    }

    /// The conversation ends; `true` if one was open.
    pub fn end(&mut self, why: Why) -> bool {
        let was = self.open.take().is_some();
        if was {
            tracing::debug!("conversation ended: {}", why.describe());
        }
        was
    }

    /// A question at `now`, about a view whose embedding is `view` (if known), with the model
    /// holding `room` = (tokens used, most allowed) for the conversation (if it says).
    pub fn ask(
        &mut self,
        now: Duration,
        view: Option<&[f32]>,
        room: Option<(usize, usize)>,
    ) -> Ask {
        if self.params.follow_up.is_zero() {
            self.open = None;
            return Ask::Fresh(Why::Off);
        }
        let Some(o) = &self.open else {
            return Ask::Fresh(Why::NoConversation);
        };
        let why = if now > o.answered_at + self.params.follow_up {
            Some(Why::Timeout)
        } else if let (Some(a), Some(b)) = (o.view.as_deref(), view) {
            (cosine_distance(a, b) > self.params.change_threshold).then_some(Why::ViewChanged)
        } else {
            None
        }
        .or_else(|| {
            room.filter(|(used, limit)| used + self.params.reserve_tokens > *limit)
                .map(|_| Why::ContextFull)
        });
        match why {
            Some(w) => {
                self.end(w);
                Ask::Fresh(w)
            }
            None => Ask::FollowUp { turn: o.turns + 1 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(name: &str) -> Vec<f32> {
        match name {
            "a" => vec![1.0, 0.0, 0.0],
            // `a` seen slightly differently (distance ≈ 0.02)
            "a2" => vec![0.98, (1.0f32 - 0.98 * 0.98).sqrt(), 0.0],
            "b" => vec![0.0, 0.0, 1.0],
            other => panic!("unknown view {other}"),
        }
    }

    fn params() -> ConversationParams {
        ConversationParams {
            follow_up: Duration::from_secs(60),
            change_threshold: 0.1,
            reserve_tokens: 300,
        }
    }

    /// Script of events, each optionally timed `@seconds` (default: one second after the one
    /// before):
    /// - `describe:V` — a description of view V was given (begins a conversation);
    /// - `ask:V` — a question about view V: the transcript gets `F2` (follow-up, turn 2…) or
    ///   `-reason` (fresh; the answer then begins a new conversation);
    /// - `ask:V:N` — the same with the model holding N tokens of its 1000;
    /// - `cut:V` — a question about V whose answer is cut short;
    /// - `scene`, `new`, `other` — a scene change narrated, `ctl new`, another request.
    fn sim(p: ConversationParams, script: &str) -> String {
        let mut c = Conversation::new(p);
        let mut t = 0.0f64;
        let mut out = vec![];
        for tok in script.split_whitespace() {
            let (ev, at) = match tok.split_once('@') {
                Some((e, s)) => (e, s.parse::<f64>().unwrap()),
                None => (tok, t + 1.0),
            };
            t = at;
            let now = Duration::from_secs_f64(t);
            let parts: Vec<&str> = ev.split(':').collect();
            match parts[0] {
                "describe" => {
                    c.end(Why::Describe);
                    c.started(Some(emb(parts[1])), now);
                }
                "ask" | "cut" => {
                    let room = parts.get(2).map(|n| (n.parse().unwrap(), 1000));
                    let view = emb(parts[1]);
                    let d = c.ask(now, Some(&view), room);
                    out.push(match d {
                        Ask::FollowUp { turn } => format!("F{turn}"),
                        Ask::Fresh(w) => format!("-{w:?}"),
                    });
                    if parts[0] == "cut" {
                        c.end(Why::Interrupted);
                    } else {
                        match d {
                            Ask::FollowUp { .. } => c.continued(now),
                            Ask::Fresh(_) => c.started(Some(view), now),
                        }
                    }
                }
                "scene" => {
                    c.end(Why::NewScene);
                }
                "new" => {
                    c.end(Why::New);
                }
                "other" => {
                    c.end(Why::Overwritten);
                }
                other => panic!("unknown event {other}"),
            }
        }
        out.join(" ")
    }

    #[test]
    fn questions_about_the_same_view_follow_each_other_up() {
        assert_eq!(
            sim(params(), "ask:a ask:a ask:a2 ask:a"),
            "-NoConversation F2 F3 F4"
        );
        // a description begins the conversation the questions go on with
        assert_eq!(sim(params(), "describe:a ask:a ask:a"), "F2 F3");
    }

    #[test]
    fn too_long_after_the_last_answer_is_a_new_conversation() {
        // 60 s after the answer still follows it up; later does not; each answer restarts the
        // time
        assert_eq!(
            sim(params(), "ask:a@0 ask:a@60 ask:a@119 ask:a@180 ask:a@181"),
            "-NoConversation F2 F3 -Timeout F2"
        );
    }

    #[test]
    fn a_changed_view_or_a_narrated_scene_change_starts_afresh() {
        assert_eq!(
            sim(params(), "ask:a ask:a ask:b ask:b"),
            "-NoConversation F2 -ViewChanged F2"
        );
        assert_eq!(
            sim(params(), "ask:a ask:a scene ask:a ask:a"),
            "-NoConversation F2 -NoConversation F2"
        );
    }

    #[test]
    fn describe_new_and_other_requests_end_the_conversation() {
        assert_eq!(
            sim(params(), "ask:a ask:a new ask:a ask:a"),
            "-NoConversation F2 -NoConversation F2"
        );
        assert_eq!(
            sim(params(), "ask:a ask:a other ask:a"),
            "-NoConversation F2 -NoConversation"
        );
        // a new description: the next question follows it up, not the older answers
        assert_eq!(
            sim(params(), "ask:a ask:a describe:a ask:a"),
            "-NoConversation F2 F2"
        );
    }

    #[test]
    fn an_answer_cut_short_ends_the_conversation() {
        assert_eq!(
            sim(params(), "ask:a cut:a ask:a ask:a"),
            "-NoConversation F2 -NoConversation F2"
        );
    }

    #[test]
    fn a_conversation_near_the_context_limit_starts_afresh() {
        // 1000 tokens allowed, 300 kept free for the next turn
        assert_eq!(
            sim(params(), "ask:a ask:a:500 ask:a:700 ask:a:701 ask:a:400"),
            "-NoConversation F2 F3 -ContextFull F2"
        );
    }

    #[test]
    fn followups_can_be_switched_off() {
        let off = ConversationParams {
            follow_up: Duration::ZERO,
            ..params()
        };
        assert_eq!(sim(off, "describe:a ask:a ask:a"), "-Off -Off");
    }

    #[test]
    fn open_while_within_the_follow_up_time() {
        let mut c = Conversation::new(params());
        let s = Duration::from_secs;
        assert!(!c.is_open(s(0)));
        c.started(None, s(10));
        assert!(c.is_open(s(10)) && c.is_open(s(70)) && !c.is_open(s(71)));
        assert_eq!(c.turns(), 1);
        // a view that is not known is not held against the conversation
        assert_eq!(c.ask(s(20), None, None), Ask::FollowUp { turn: 2 });
        c.continued(s(20));
        assert_eq!(c.turns(), 2);
        assert!(c.end(Why::New));
        assert!(!c.end(Why::New));
        assert!(!c.is_open(s(21)));
    }
}
