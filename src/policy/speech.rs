//! The speech queue decision: what to say now, what to cut short, what to queue and what to drop.
//! Pure: events in, actions out; the speech thread carries the actions out on a real backend.
//!
//! Rules:
//! - A user request (detail, answer, repeat) interrupts: the moment it begins, whatever is being
//!   said stops and every queued scene sentence is dropped; queued notices wait behind it.
//! - Scene narrations never pile up: a newer scene supersedes an older one (the older one's current
//!   sentence is finished, the rest dropped), so at most one scene narration is ever queued.
//! - A scene sentence older than `stale_after` (from its frame's capture) is dropped, not spoken;
//!   so is a notice that waited longer than that (from when it was given).
//! - A scene sentence cut short or dropped by other speech (the screen reader has the turn) ends
//!   that scene narration: the rest of it is dropped rather than heard out of context. A notice
//!   dropped before it began waits and is tried again every [`RETRY_AFTER`] until it is said or
//!   stale.
//! - Hush: whatever is being said stops and everything queued is dropped (narration goes on).
//! - Otherwise sentences are spoken in priority order (user > notice > scene), first come first
//!   served within a priority, each narration's sentences in order.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::narration::{NarrationId, Priority};

/// One sentence (or a cue such as "Looking.") to be spoken.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: NarrationId,
    pub priority: Priority,
    pub text: String,
    /// When the narration was triggered (daemon clock).
    pub born: Duration,
    /// A cue is said but is not part of its narration's text (acknowledgements).
    pub cue: bool,
}

/// Why a sentence was not (fully) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Older than `stale_after` when its turn came.
    Stale,
    /// A user request took over.
    Superseded(NarrationId),
    /// A newer scene narration replaced it.
    NewerScene(NarrationId),
    /// Narration was paused (or speech silenced).
    Silenced,
    /// The user hushed speech.
    Hushed,
    /// Other speech (the screen reader) had the turn.
    Yielded,
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::Stale => f.write_str("stale: it was too old when its turn came"),
            DropReason::Superseded(id) => write!(f, "superseded by request {id}"),
            DropReason::NewerScene(id) => write!(f, "replaced by a newer scene ({id})"),
            DropReason::Silenced => f.write_str("narration paused"),
            DropReason::Hushed => f.write_str("hushed"),
            DropReason::Yielded => {
                f.write_str("gave way to other speech (the screen reader) that had the turn")
            }
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A narration starts being generated. `acknowledge`: say the acknowledgement cue first (a
    /// request the model must work on, not a repeat).
    Begin {
        id: NarrationId,
        priority: Priority,
        born: Duration,
        acknowledge: bool,
    },
    /// A sentence of a narration is ready.
    Chunk(Chunk),
    /// No more sentences will come for this narration.
    End { id: NarrationId },
    /// The backend finished the utterance it was saying.
    Finished,
    /// The utterance being said was cut short (`began`) or dropped before it began, by other
    /// speech.
    Interrupted { began: bool },
    /// Stop talking and drop everything queued (pause).
    Silence,
    /// Stop talking and drop everything queued (the user's hush).
    Hush,
    /// Time passed (drops stale sentences).
    Tick,
}

/// What the speech thread must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start saying this (the backend is idle).
    Speak(Chunk),
    /// Stop the backend now: this chunk, being said, is cut short.
    Stop(Chunk, DropReason),
    /// This chunk will never be said.
    Drop(Chunk, DropReason),
}

/// The queue state.
#[derive(Debug, Clone)]
pub struct SpeechQueue {
    stale_after: Duration,
    acknowledge: Option<String>,
    speaking: Option<Chunk>,
    /// Sorted by priority (highest first), FIFO within a priority.
    queue: VecDeque<Chunk>,
    /// Narrations begun and not ended, with their priority.
    open: HashMap<NarrationId, Priority>,
    /// Narrations whose further sentences must be dropped, and why (bounded).
    closed: VecDeque<(NarrationId, DropReason)>,
    /// Nothing is started before this time (a notice waits for other speech to end).
    hold_until: Option<Duration>,
}

/// How long a notice that found other speech speaking waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

const CLOSED_MEMORY: usize = 64;

fn stale(c: &Chunk, now: Duration, after: Duration) -> bool {
    c.priority != Priority::User && now.saturating_sub(c.born) > after
}

impl SpeechQueue {
    /// `acknowledge`: a cue said the moment a user request begins (e.g. "Looking.").
    pub fn new(stale_after: Duration, acknowledge: Option<String>) -> Self {
        Self {
            stale_after,
            acknowledge,
            speaking: None,
            queue: VecDeque::new(),
            open: HashMap::new(),
            closed: VecDeque::new(),
            hold_until: None,
        }
    }

    pub fn speaking(&self) -> Option<&Chunk> {
        self.speaking.as_ref()
    }

    pub fn queued(&self) -> impl Iterator<Item = &Chunk> {
        self.queue.iter()
    }

    pub fn is_idle(&self) -> bool {
        self.speaking.is_none() && self.queue.is_empty()
    }

    fn closed_reason(&self, id: NarrationId) -> Option<DropReason> {
        self.closed
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| r.clone())
    }

    fn close(&mut self, id: NarrationId, reason: DropReason) {
        if self.closed_reason(id).is_none() {
            if self.closed.len() == CLOSED_MEMORY {
                self.closed.pop_front();
            }
            self.closed.push_back((id, reason));
        }
    }

    fn is_stale(&self, c: &Chunk, now: Duration) -> bool {
        stale(c, now, self.stale_after)
    }

    fn enqueue(&mut self, c: Chunk) {
        let pos = self
            .queue
            .iter()
            .position(|q| q.priority < c.priority)
            .unwrap_or(self.queue.len());
        self.queue.insert(pos, c);
    }

    /// Drops queued chunks matching `pred`, closing their narrations with `reason`.
    fn drop_queued(
        &mut self,
        pred: impl Fn(&Chunk) -> bool,
        reason: DropReason,
        out: &mut Vec<Action>,
    ) {
        let (gone, keep): (Vec<Chunk>, Vec<Chunk>) = self.queue.drain(..).partition(|c| pred(c));
        self.queue = keep.into();
        for c in gone {
            self.close(c.id, reason.clone());
            out.push(Action::Drop(c, reason.clone()));
        }
    }

    /// Speaks the next chunk when idle, dropping stale ones on the way.
    fn next(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.hold_until.is_some_and(|t| now < t)
            && self
                .queue
                .front()
                .is_some_and(|c| c.priority != Priority::User)
        {
            return;
        }
        self.hold_until = None;
        while self.speaking.is_none() {
            let Some(c) = self.queue.pop_front() else {
                return;
            };
            if self.is_stale(&c, now) {
                self.close(c.id, DropReason::Stale);
                out.push(Action::Drop(c, DropReason::Stale));
                continue;
            }
            self.speaking = Some(c.clone());
            out.push(Action::Speak(c));
        }
    }

    /// Handles one event at time `now` (daemon clock).
    pub fn on(&mut self, event: Event, now: Duration) -> Vec<Action> {
        let mut out = vec![];
        match event {
            Event::Begin {
                id,
                priority,
                born,
                acknowledge,
            } => {
                self.open.insert(id, priority);
                if priority == Priority::User {
                    let reason = DropReason::Superseded(id);
                    if let Some(s) = self.speaking.take() {
                        if s.id != id {
                            self.close(s.id, reason.clone());
                            out.push(Action::Stop(s, reason.clone()));
                        } else {
                            self.speaking = Some(s);
                        }
                    }
                    self.drop_queued(
                        |c| c.id != id && c.priority != Priority::Notice,
                        reason.clone(),
                        &mut out,
                    );
                    let others: Vec<NarrationId> = self
                        .open
                        .iter()
                        .filter(|(i, p)| **i != id && **p != Priority::Notice)
                        .map(|(i, _)| *i)
                        .collect();
                    for o in others {
                        self.close(o, reason.clone());
                    }
                    if let Some(text) = self.acknowledge.clone().filter(|_| acknowledge) {
                        self.queue.push_front(Chunk {
                            id,
                            priority,
                            text,
                            born,
                            cue: true,
                        });
                    }
                }
            }
            Event::Chunk(c) => {
                if let Some(reason) = self.closed_reason(c.id) {
                    out.push(Action::Drop(c, reason));
                } else if self.is_stale(&c, now) {
                    self.close(c.id, DropReason::Stale);
                    out.push(Action::Drop(c, DropReason::Stale));
                } else {
                    if c.priority == Priority::Scene {
                        // a newer scene replaces older ones, queued or being said
                        let id = c.id;
                        let reason = DropReason::NewerScene(id);
                        self.drop_queued(
                            |q| q.priority == Priority::Scene && q.id < id,
                            reason.clone(),
                            &mut out,
                        );
                        if let Some(s) = &self.speaking {
                            if s.priority == Priority::Scene && s.id < id {
                                let old = s.id;
                                self.close(old, reason);
                            }
                        }
                    }
                    if c.priority == Priority::User
                        && self
                            .speaking
                            .as_ref()
                            .is_some_and(|s| s.priority == Priority::Scene)
                    {
                        // a scene that slipped in while the request was being generated
                        let s = self.speaking.take().expect("checked");
                        let reason = DropReason::Superseded(c.id);
                        self.close(s.id, reason.clone());
                        out.push(Action::Stop(s, reason));
                    }
                    self.enqueue(c);
                }
            }
            Event::End { id } => {
                self.open.remove(&id);
            }
            Event::Finished => {
                self.speaking = None;
            }
            Event::Interrupted { began } => {
                if let Some(s) = self.speaking.take() {
                    match s.priority {
                        Priority::Scene => {
                            let id = s.id;
                            self.close(id, DropReason::Yielded);
                            self.drop_queued(|c| c.id == id, DropReason::Yielded, &mut out);
                        }
                        Priority::Notice if !began => {
                            // not heard at all: again once the other speech is over
                            self.queue.push_front(s);
                            self.hold_until = Some(now + RETRY_AFTER);
                        }
                        _ => {}
                    }
                }
            }
            Event::Silence | Event::Hush => {
                let why = if event == Event::Hush {
                    DropReason::Hushed
                } else {
                    DropReason::Silenced
                };
                if let Some(s) = self.speaking.take() {
                    self.close(s.id, why.clone());
                    out.push(Action::Stop(s, why.clone()));
                }
                self.drop_queued(|_| true, why.clone(), &mut out);
                let open: Vec<NarrationId> = self.open.keys().copied().collect();
                for o in open {
                    self.close(o, why.clone());
                }
            }
            Event::Tick => {
                let after = self.stale_after;
                self.drop_queued(|c| stale(c, now, after), DropReason::Stale, &mut out);
            }
        }
        self.next(now, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Script → transcript simulator. Tokens:
    /// - `scene1` / `detail2` / `notice3` / `answer4` / `repeat5`: narration N begins (born "now")
    /// - `1:text`: a sentence of narration 1 (underscores become spaces)
    /// - `end1`: narration 1 ends
    /// - `done`: the backend finished what it was saying
    /// - `pause`: silence
    /// - `t+5`: five seconds pass (then a tick)
    ///
    /// Transcript: the actions of each step joined by ", ", steps by " | ", steps without actions
    /// left out: `say 1:text`, `stop 1:text`, `drop 1:text (stale|by N|newer N|paused)`.
    fn sim(script: &str) -> String {
        sim_with(script, None)
    }

    fn sim_with(script: &str, ack: Option<&str>) -> String {
        let mut q = SpeechQueue::new(Duration::from_secs(10), ack.map(String::from));
        let mut now = Duration::ZERO;
        let mut kinds: HashMap<u64, (Priority, Duration)> = HashMap::new();
        let mut steps = vec![];
        for tok in script.split_whitespace() {
            let ev = if let Some(n) = tok.strip_prefix("t+") {
                now += Duration::from_secs_f64(n.parse().unwrap());
                Event::Tick
            } else if tok == "done" {
                Event::Finished
            } else if tok == "pause" {
                Event::Silence
            } else if tok == "hush" {
                Event::Hush
            } else if tok == "cut" {
                Event::Interrupted { began: true }
            } else if tok == "skip" {
                Event::Interrupted { began: false }
            } else if let Some(n) = tok.strip_prefix("end") {
                Event::End {
                    id: NarrationId(n.parse().unwrap()),
                }
            } else if let Some((n, text)) = tok.split_once(':') {
                let id: u64 = n.parse().unwrap();
                let (priority, born) = kinds[&id];
                Event::Chunk(Chunk {
                    id: NarrationId(id),
                    priority,
                    text: text.replace('_', " "),
                    born,
                    cue: false,
                })
            } else {
                let split = tok.find(|c: char| c.is_ascii_digit()).unwrap();
                let (kind, n) = tok.split_at(split);
                let priority = match kind {
                    "scene" => Priority::Scene,
                    "notice" => Priority::Notice,
                    "detail" | "answer" | "repeat" => Priority::User,
                    other => panic!("unknown token {other}"),
                };
                let id: u64 = n.parse().unwrap();
                kinds.insert(id, (priority, now));
                Event::Begin {
                    id: NarrationId(id),
                    priority,
                    born: now,
                    acknowledge: kind != "repeat",
                }
            };
            let acts = q.on(ev, now);
            if !acts.is_empty() {
                steps.push(
                    acts.iter()
                        .map(|a| match a {
                            Action::Speak(c) => format!("say {}:{}", c.id, c.text),
                            Action::Stop(c, _) => format!("stop {}:{}", c.id, c.text),
                            Action::Drop(c, r) => format!(
                                "drop {}:{} ({})",
                                c.id,
                                c.text,
                                match r {
                                    DropReason::Stale => "stale".to_string(),
                                    DropReason::Superseded(b) => format!("by {b}"),
                                    DropReason::NewerScene(b) => format!("newer {b}"),
                                    DropReason::Silenced => "paused".to_string(),
                                    DropReason::Hushed => "hushed".to_string(),
                                    DropReason::Yielded => "yielded".to_string(),
                                }
                            ),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
        }
        steps.join(" | ")
    }

    #[test]
    fn a_scene_is_said_sentence_by_sentence() {
        assert_eq!(
            sim("scene1 1:A_desk. 1:A_lamp. end1 done done"),
            "say 1:A desk. | say 1:A lamp."
        );
    }

    #[test]
    fn first_sentence_is_said_before_the_rest_arrives() {
        assert_eq!(
            sim("scene1 1:One. t+1 t+1 1:Two. done end1"),
            "say 1:One. | say 1:Two."
        );
    }

    #[test]
    fn detail_interrupts_a_scene_and_drops_its_rest() {
        assert_eq!(
            sim("scene1 1:One. 1:Two. detail2 2:Detail. 1:Three. end1 done end2"),
            "say 1:One. | stop 1:One., drop 1:Two. (by 2) | say 2:Detail. | drop 1:Three. (by 2)"
        );
    }

    #[test]
    fn detail_goes_before_a_queued_scene() {
        assert_eq!(
            sim("notice1 1:Camera_back. scene2 2:A_kitchen. detail3 3:Detail. done"),
            "say 1:Camera back. | stop 1:Camera back., drop 2:A kitchen. (by 3) | say 3:Detail."
        );
    }

    #[test]
    fn waiting_speech_goes_request_then_notice_then_scene() {
        assert_eq!(
            sim("detail1 1:D. scene2 2:S. notice3 3:N. done done done"),
            "say 1:D. | say 3:N. | say 2:S."
        );
    }

    #[test]
    fn notices_are_said_while_a_detail_is_generated_and_not_cut() {
        assert_eq!(
            sim("detail1 1:D1. notice2 2:Camera_lost. detail3 3:D3. done"),
            "say 1:D1. | stop 1:D1., say 2:Camera lost. | say 3:D3."
        );
    }

    #[test]
    fn acknowledgement_cue_comes_first() {
        assert_eq!(
            sim_with("scene1 1:S. detail2 2:D. done done", Some("Looking.")),
            "say 1:S. | stop 1:S., say 2:Looking. | say 2:D."
        );
    }

    #[test]
    fn a_repeat_interrupts_without_the_cue() {
        assert_eq!(
            sim_with("scene1 1:S. repeat2 2:Again. done", Some("Looking.")),
            "say 1:S. | stop 1:S. | say 2:Again."
        );
    }

    #[test]
    fn scenes_never_pile_up() {
        // scene 1 is speaking; scenes 2 and 3 arrive: 2 is replaced by 3, 1 finishes its sentence only
        assert_eq!(
            sim("scene1 1:S1a. 1:S1b. scene2 2:S2. scene3 3:S3. done done"),
            "say 1:S1a. | drop 1:S1b. (newer 2) | drop 2:S2. (newer 3) | say 3:S3."
        );
    }

    #[test]
    fn late_sentences_of_a_replaced_scene_are_dropped() {
        assert_eq!(
            sim("scene1 1:A. scene2 2:B. 1:A2. done"),
            "say 1:A. | drop 1:A2. (newer 2) | say 2:B."
        );
    }

    #[test]
    fn stale_scenes_are_dropped_not_spoken() {
        assert_eq!(
            sim("detail1 1:Long_detail. scene2 2:Old_scene. t+11 done"),
            "say 1:Long detail. | drop 2:Old scene. (stale)"
        );
        assert_eq!(sim("scene1 t+11 1:Too_late."), "drop 1:Too late. (stale)");
    }

    #[test]
    fn pause_silences_everything() {
        assert_eq!(
            sim("scene1 1:A. 1:B. pause 1:C. notice2 2:Paused. done"),
            "say 1:A. | stop 1:A., drop 1:B. (paused) | drop 1:C. (paused) | say 2:Paused."
        );
    }

    #[test]
    fn a_notice_that_waited_too_long_is_dropped() {
        assert_eq!(
            sim("detail1 1:Long_detail. notice2 2:Camera_back. t+11 done"),
            "say 1:Long detail. | drop 2:Camera back. (stale)"
        );
        assert_eq!(
            sim("detail1 1:D. notice2 2:Camera_back. t+5 done"),
            "say 1:D. | say 2:Camera back."
        );
        // a user's own answer is never stale: it was asked for
        assert_eq!(
            sim("notice1 1:N. detail2 t+30 2:Late_answer."),
            "say 1:N. | stop 1:N. | say 2:Late answer."
        );
    }

    #[test]
    fn a_scene_cut_by_the_screen_reader_is_not_continued() {
        assert_eq!(
            sim("scene1 1:A. 1:B. cut 1:C. end1 scene2 2:D."),
            "say 1:A. | drop 1:B. (yielded) | drop 1:C. (yielded) | say 2:D."
        );
        // a request goes on with its next sentence
        assert_eq!(sim("detail1 1:A. 1:B. cut"), "say 1:A. | say 1:B.");
        assert_eq!(
            sim("scene1 1:A. 1:B. skip"),
            "say 1:A. | drop 1:B. (yielded)"
        );
    }

    #[test]
    fn a_notice_the_screen_reader_left_no_turn_for_is_tried_again_until_stale() {
        // dropped before it began: tried again after half a second, not at once
        assert_eq!(
            sim("notice1 1:Camera_lost. skip t+0.2 t+0.4 skip t+0.6 done"),
            "say 1:Camera lost. | say 1:Camera lost. | say 1:Camera lost."
        );
        // a request does not wait behind the notice's retry
        assert_eq!(sim("notice1 1:N. skip detail2 2:D."), "say 1:N. | say 2:D.");
        // cut short once begun: not said again
        assert_eq!(sim("notice1 1:N. cut t+1"), "say 1:N.");
        // stale after stale_after (10 s)
        assert_eq!(
            sim("notice1 1:N. t+9 skip t+2"),
            "say 1:N. | drop 1:N. (stale)"
        );
    }

    #[test]
    fn hush_stops_now_and_narration_goes_on() {
        assert_eq!(
            sim("detail1 1:A. 1:B. hush 1:C. scene2 2:S."),
            "say 1:A. | stop 1:A., drop 1:B. (hushed) | drop 1:C. (hushed) | say 2:S."
        );
    }

    #[test]
    fn nothing_is_said_twice_and_idle_is_idle() {
        let mut q = SpeechQueue::new(Duration::from_secs(10), None);
        assert!(q.on(Event::Finished, Duration::ZERO).is_empty());
        assert!(q.on(Event::Tick, Duration::from_secs(100)).is_empty());
        assert!(q.is_idle());
    }
}
