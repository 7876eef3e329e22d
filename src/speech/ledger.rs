//! Bookkeeping of narrations for the narration log: which sentences were said, cut or dropped, and
//! the order lines are written in. Pure (no clock, no I/O): the speech thread feeds it the policy's
//! actions and writes the records it hands back.
//!
//! Lines are written when a narration's fate is final (its generation ended and none of its
//! sentences is waiting or being said), in the order generations ended — except that narrations
//! displaced by a user request are written right after that request's own line, so the log reads
//! "detail …, then the scene it displaced".

use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime};

use crate::describer::Timings;
use crate::narration::{rfc3339, Kind, Latency, NarrationId, Priority, Record, Status};
use crate::policy::speech::{Chunk, DropReason};

/// What is known when a narration begins.
#[derive(Debug, Clone, PartialEq)]
pub struct NarrationMeta {
    pub id: NarrationId,
    pub kind: Kind,
    pub priority: Priority,
    /// The trigger: a scene frame's capture, or the user's request.
    pub trigger: Instant,
    pub wall: SystemTime,
    pub frame: Option<u64>,
    pub resolution: Option<u32>,
    pub question: Option<String>,
    pub repeat: bool,
}

/// What is known when a narration's generation ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NarrationEnd {
    pub id: NarrationId,
    /// The whole generated text (also the parts never said).
    pub text: String,
    pub cancelled: bool,
    /// Why it was cancelled or failed.
    pub reason: Option<String>,
    pub tokens: Option<usize>,
    pub timings: Option<Timings>,
    /// When the first piece of text came out of the model.
    pub first_text: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    meta: NarrationMeta,
    pending: usize,
    spoken: usize,
    cut: bool,
    dropped: usize,
    reason: Option<String>,
    first_speech: Option<Instant>,
    partial: String,
    end: Option<NarrationEnd>,
    superseded_by: Option<NarrationId>,
}

/// The narrations in flight and the order their lines will be written in.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<NarrationId, Entry>,
    order: VecDeque<NarrationId>,
    deferred: HashMap<NarrationId, Vec<NarrationId>>,
}

fn ms(from: Instant, to: Instant) -> f64 {
    (to.saturating_duration_since(from).as_secs_f64() * 1e4).round() / 10.0
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn kind(&self, id: NarrationId) -> Option<Kind> {
        self.entries.get(&id).map(|e| e.meta.kind)
    }

    pub fn meta(&self, id: NarrationId) -> Option<&NarrationMeta> {
        self.entries.get(&id).map(|e| &e.meta)
    }

    pub fn in_flight(&self) -> usize {
        self.entries.len()
    }

    pub fn begin(&mut self, meta: NarrationMeta) {
        let id = meta.id;
        if meta.priority == Priority::User {
            let displaced: Vec<NarrationId> = self
                .entries
                .iter()
                .filter(|(i, e)| **i != id && e.meta.priority != Priority::Notice)
                .filter(|(_, e)| e.superseded_by.is_none())
                .map(|(i, _)| *i)
                .collect();
            for d in displaced {
                if let Some(e) = self.entries.get_mut(&d) {
                    e.superseded_by = Some(id);
                }
                if let Some(pos) = self.order.iter().position(|o| *o == d) {
                    self.order.remove(pos);
                    self.deferred.entry(id).or_default().push(d);
                }
            }
        }
        self.entries.insert(
            id,
            Entry {
                meta,
                pending: 0,
                spoken: 0,
                cut: false,
                dropped: 0,
                reason: None,
                first_speech: None,
                partial: String::new(),
                end: None,
                superseded_by: None,
            },
        );
    }

    /// A sentence of `id` entered the speech queue.
    pub fn chunk(&mut self, id: NarrationId, text: &str) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.pending += 1;
            if !e.partial.is_empty() {
                e.partial.push(' ');
            }
            e.partial.push_str(text);
        }
    }

    fn with(&mut self, c: &Chunk, f: impl FnOnce(&mut Entry)) {
        if c.cue {
            return;
        }
        if let Some(e) = self.entries.get_mut(&c.id) {
            f(e)
        }
    }

    /// The backend started saying `c` at `at`.
    pub fn spoke(&mut self, c: &Chunk, at: Instant) {
        self.with(c, |e| {
            e.first_speech.get_or_insert(at);
        });
    }

    /// The backend finished saying `c`.
    pub fn finished(&mut self, c: &Chunk) {
        self.with(c, |e| {
            e.spoken += 1;
            e.pending = e.pending.saturating_sub(1);
        });
    }

    /// `c` was cut short.
    pub fn stopped(&mut self, c: &Chunk, why: &DropReason) {
        self.with(c, |e| {
            e.cut = true;
            e.pending = e.pending.saturating_sub(1);
            e.reason.get_or_insert_with(|| why.to_string());
        });
    }

    /// `c` was cut short by something else (`why` says what).
    pub fn cut(&mut self, c: &Chunk, why: &str) {
        self.with(c, |e| {
            e.cut = true;
            e.pending = e.pending.saturating_sub(1);
            e.reason.get_or_insert_with(|| why.to_string());
        });
    }

    /// `c` will never be said.
    pub fn dropped(&mut self, c: &Chunk, why: &str) {
        self.with(c, |e| {
            e.dropped += 1;
            e.pending = e.pending.saturating_sub(1);
            e.reason.get_or_insert_with(|| why.to_string());
        });
    }

    /// The narration's generation ended.
    pub fn end(&mut self, end: NarrationEnd) {
        let id = end.id;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.end = Some(end);
        let by = e.superseded_by;
        match by {
            Some(by) if self.entries.contains_key(&by) => {
                self.deferred.entry(by).or_default().push(id)
            }
            _ => self.order.push_back(id),
        }
    }

    fn resolved(&self, id: NarrationId) -> bool {
        self.entries
            .get(&id)
            .is_some_and(|e| e.end.is_some() && e.pending == 0)
    }

    /// Records whose fate is final, in log order.
    pub fn take_ready(&mut self) -> Vec<Record> {
        let mut out = vec![];
        while let Some(&id) = self.order.front() {
            if !self.resolved(id) {
                break;
            }
            self.order.pop_front();
            out.push(self.write(id, None));
        }
        out
    }

    fn write(&mut self, id: NarrationId, forced: Option<&str>) -> Record {
        let e = self.entries.remove(&id).expect("written once");
        if let Some(d) = self.deferred.remove(&id) {
            for (i, x) in d.into_iter().enumerate() {
                self.order.insert(i, x);
            }
        }
        record(e, forced)
    }

    /// Everything still in flight, as final records (at shutdown): unfinished narrations are
    /// marked with `reason`.
    pub fn drain_all(&mut self, reason: &str) -> Vec<Record> {
        let mut out = vec![];
        loop {
            let next = self.order.pop_front().or_else(|| {
                let mut rest: Vec<NarrationId> = self
                    .deferred
                    .values()
                    .flatten()
                    .copied()
                    .chain(self.entries.keys().copied())
                    .filter(|i| self.entries.contains_key(i))
                    .collect();
                rest.sort();
                rest.first().copied()
            });
            let Some(id) = next else { break };
            if !self.entries.contains_key(&id) {
                continue;
            }
            for list in self.deferred.values_mut() {
                list.retain(|x| *x != id);
            }
            out.push(self.write(id, Some(reason)));
        }
        out
    }
}

fn record(e: Entry, forced: Option<&str>) -> Record {
    let unfinished = e.end.is_none() || e.pending > 0;
    let end = e.end.unwrap_or_default();
    let cut = e.cut || (e.pending > 0 && e.first_speech.is_some());
    let status = if e.spoken > 0 && !cut && e.dropped == 0 && !end.cancelled && !unfinished {
        Status::Spoken
    } else if e.spoken > 0 || cut {
        Status::Interrupted
    } else {
        Status::Suppressed
    };
    let mut reason = e.reason.or(end.reason.clone());
    if unfinished {
        reason = reason.or(forced.map(str::to_string));
    }
    if status == Status::Suppressed && reason.is_none() {
        reason = Some("nothing to say: the model produced no speakable text".to_string());
    }
    let text = if end.text.is_empty() && !e.partial.is_empty() {
        e.partial
    } else {
        end.text
    };
    let t = e.meta.trigger;
    let timings = end.timings.as_ref();
    Record {
        time: rfc3339(e.meta.wall),
        id: e.meta.id,
        kind: e.meta.kind,
        status,
        reason: if status == Status::Spoken {
            None
        } else {
            reason
        },
        text: text.trim().to_string(),
        question: e.meta.question,
        resolution: e.meta.resolution,
        frame: e.meta.frame,
        repeat: e.meta.repeat,
        cancelled: end.cancelled || (unfinished && e.meta.kind != Kind::Notice),
        tokens: end.tokens,
        latency_ms: Latency {
            first_text: end.first_text.map(|f| ms(t, f)),
            first_speech: e.first_speech.map(|f| ms(t, f)),
            generation: timings.map(|x| (x.total_ms * 10.0).round() / 10.0),
            vision: timings.map(|x| (x.vision_ms * 10.0).round() / 10.0),
            tokens_per_s: timings
                .filter(|x| x.decode_tokens_per_s > 0.0)
                .map(|x| (x.decode_tokens_per_s * 10.0).round() / 10.0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, kind: Kind) -> NarrationMeta {
        NarrationMeta {
            id: NarrationId(id),
            kind,
            priority: match kind {
                Kind::Scene => Priority::Scene,
                Kind::Notice => Priority::Notice,
                _ => Priority::User,
            },
            trigger: Instant::now(),
            wall: SystemTime::now(),
            frame: Some(id),
            resolution: None,
            question: None,
            repeat: false,
        }
    }

    fn chunk(id: u64, kind: Kind, text: &str) -> Chunk {
        Chunk {
            id: NarrationId(id),
            priority: meta(id, kind).priority,
            text: text.into(),
            born: Default::default(),
            cue: false,
        }
    }

    fn end(id: u64, text: &str) -> NarrationEnd {
        NarrationEnd {
            id: NarrationId(id),
            text: text.into(),
            ..Default::default()
        }
    }

    fn line(r: &Record) -> String {
        format!("{}:{}:{:?}", r.id, r.kind.name(), r.status).to_lowercase()
    }

    #[test]
    fn a_spoken_scene_is_written_once_said() {
        let mut l = Ledger::new();
        l.begin(meta(1, Kind::Scene));
        let c = chunk(1, Kind::Scene, "A desk.");
        l.chunk(NarrationId(1), "A desk.");
        l.spoke(&c, Instant::now());
        l.end(end(1, "A desk."));
        assert!(l.take_ready().is_empty(), "still being said");
        l.finished(&c);
        let r = l.take_ready();
        assert_eq!(r.iter().map(line).collect::<Vec<_>>(), ["1:scene:spoken"]);
        assert!(r[0].latency_ms.first_speech.is_some());
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn displaced_scene_is_written_after_the_detail() {
        let mut l = Ledger::new();
        l.begin(meta(1, Kind::Scene));
        let s = chunk(1, Kind::Scene, "A desk.");
        l.chunk(NarrationId(1), "A desk.");
        l.spoke(&s, Instant::now());
        l.begin(meta(2, Kind::Detail));
        l.stopped(&s, &DropReason::Superseded(NarrationId(2)));
        l.end(NarrationEnd {
            cancelled: true,
            reason: Some("pre-empted".into()),
            ..end(1, "A desk. A lamp")
        });
        assert!(l.take_ready().is_empty(), "waits for the detail");
        let d = chunk(2, Kind::Detail, "Detail.");
        l.chunk(NarrationId(2), "Detail.");
        l.spoke(&d, Instant::now());
        l.finished(&d);
        l.end(end(2, "Detail."));
        let r = l.take_ready();
        assert_eq!(
            r.iter().map(line).collect::<Vec<_>>(),
            ["2:detail:spoken", "1:scene:interrupted"]
        );
        assert_eq!(r[1].text, "A desk. A lamp");
        assert!(r[1].cancelled);
    }

    #[test]
    fn an_already_ended_queued_scene_moves_behind_the_detail() {
        let mut l = Ledger::new();
        l.begin(meta(1, Kind::Notice));
        let n = chunk(1, Kind::Notice, "Camera back.");
        l.chunk(NarrationId(1), "Camera back.");
        l.spoke(&n, Instant::now());
        l.end(end(1, "Camera back."));
        l.begin(meta(2, Kind::Scene));
        l.chunk(NarrationId(2), "A kitchen.");
        l.end(end(2, "A kitchen."));
        l.begin(meta(3, Kind::Detail));
        l.stopped(&n, &DropReason::Superseded(NarrationId(3)));
        l.dropped(
            &chunk(2, Kind::Scene, "A kitchen."),
            "superseded by request 3",
        );
        let r = l.take_ready();
        assert_eq!(
            r.iter().map(line).collect::<Vec<_>>(),
            ["1:notice:interrupted"]
        );
        l.chunk(NarrationId(3), "Detail.");
        let d = chunk(3, Kind::Detail, "Detail.");
        l.spoke(&d, Instant::now());
        l.finished(&d);
        l.end(end(3, "Detail."));
        let r = l.take_ready();
        assert_eq!(
            r.iter().map(line).collect::<Vec<_>>(),
            ["3:detail:spoken", "2:scene:suppressed"]
        );
        assert_eq!(r[1].reason.as_deref(), Some("superseded by request 3"));
    }

    #[test]
    fn cues_do_not_count() {
        let mut l = Ledger::new();
        l.begin(meta(1, Kind::Detail));
        let cue = Chunk {
            cue: true,
            ..chunk(1, Kind::Detail, "Looking.")
        };
        l.spoke(&cue, Instant::now());
        l.finished(&cue);
        l.end(end(1, ""));
        let r = l.take_ready();
        assert_eq!(
            r.iter().map(line).collect::<Vec<_>>(),
            ["1:detail:suppressed"]
        );
        assert!(r[0].reason.as_deref().unwrap().contains("nothing to say"));
        assert!(r[0].latency_ms.first_speech.is_none());
    }

    #[test]
    fn shutdown_writes_everything() {
        let mut l = Ledger::new();
        l.begin(meta(1, Kind::Scene));
        l.chunk(NarrationId(1), "Half");
        let c = chunk(1, Kind::Scene, "Half");
        l.spoke(&c, Instant::now());
        l.begin(meta(2, Kind::Detail));
        l.begin(meta(3, Kind::Notice));
        l.chunk(NarrationId(3), "Bye.");
        l.end(end(3, "Bye."));
        let r = l.drain_all("shutdown");
        assert_eq!(
            r.iter().map(line).collect::<Vec<_>>(),
            [
                "3:notice:suppressed",
                "1:scene:interrupted",
                "2:detail:suppressed"
            ]
        );
        assert_eq!(r[1].reason.as_deref(), Some("shutdown"));
        assert!(r[1].cancelled);
        assert_eq!(r[1].text, "Half");
        assert_eq!(l.in_flight(), 0);
    }
}
