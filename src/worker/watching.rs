//! The worker's watches (`scenesay ctl watch`: yes/no checks of the view after scene changes,
//! [`crate::policy::watch`]) and visual memory (`recall`, `forget`: [`crate::memory`]).

use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;

use super::{reply, Reply, Trigger, Worker, WorkerSettings};
use crate::capture::Frame;
use crate::control::protocol::{ErrorCode, Response};
use crate::memory::{self, Entry, Memory, Search};
use crate::narration::{Kind, NarrationId, Priority};
use crate::policy::guard::{classify, view_stats, ViewState};
use crate::policy::watch;
use crate::speech::ledger::{NarrationEnd, NarrationMeta};

/// The visual memory the settings name (off when they name none, or it cannot be opened).
pub(super) fn open_memory(settings: &WorkerSettings) -> Memory {
    let Some(p) = &settings.memory_path else {
        return Memory::disabled();
    };
    match Memory::open(p, settings.memory_limits) {
        Ok(m) => {
            tracing::info!("memory: {} ({} views)", p.display(), m.len());
            m
        }
        Err(e) => {
            tracing::warn!(
                "memory {}: cannot open ({e}); running without it (`ctl recall` remembers nothing)",
                p.display()
            );
            Memory::disabled()
        }
    }
}

/// Watches and visual memory (`scenesay ctl watch`, `recall`, `forget`).
impl Worker {
    /// Keeps a finished description of the whole view, with its frame's scene embedding.
    pub(super) fn remember(&mut self, kind: Kind, text: &str, frame: &Frame, embedding: &[f32]) {
        let seen = SystemTime::now() - frame.captured.elapsed();
        self.memory.remember(Entry::new(
            seen,
            kind,
            text,
            Some(frame.number),
            Some(embedding),
        ));
    }

    /// Checks every watch on `frame` when due ([`watch::due`]): one yes/no prefill each; a watch
    /// that turns true is announced. A request arriving meanwhile stops the checks (a pre-empting
    /// one is returned, to be served at once).
    pub(super) fn check_watches(
        &mut self,
        frame: &Frame,
        changed: bool,
        moving: bool,
        now: Duration,
        triggers: &Receiver<Trigger>,
    ) -> Option<Trigger> {
        if self.watches.is_empty() || self.paused {
            return None;
        }
        let interval = Duration::from_secs_f64(self.settings.watch.interval_s);
        let since = self.last_watch_check.map(|t| now.saturating_sub(t));
        if !watch::due(changed, moving, since, interval) {
            return None;
        }
        // a check runs the model over another prompt, which would overwrite the conversation the
        // model keeps for follow-up questions: on a still view it waits until that is over
        if !changed && self.conversation.is_open(now) {
            return None;
        }
        self.conversation
            .end(crate::policy::conversation::Why::Overwritten);
        self.last_watch_check = Some(now);
        let template = self.settings.watch.question.clone();
        let resolution = self.settings.watch.resolution;
        self.stats.set_state("checking watches");
        let mut next = None;
        for (id, condition) in self.watches.conditions() {
            if self.stop.is_set() {
                break;
            }
            while let Ok(t) = triggers.try_recv() {
                if t.preempts(self.paused) {
                    next = Some(t);
                    break;
                }
                self.deferred.push(t);
            }
            if next.is_some() {
                break;
            }
            self.stats.beat();
            let q = watch::question(&template, &condition);
            match self.describer.yes_no(&frame.image, &q, resolution) {
                Ok(a) => {
                    tracing::debug!(
                        "frame {}: watch {id} \"{condition}\": yes {:.3}",
                        frame.number,
                        a.score
                    );
                    self.watch_warned.retain(|w| *w != id);
                    if let Some(say) = self.watches.observe(id, a.score) {
                        tracing::info!("frame {}: {say}", frame.number);
                        self.speaker.notice(&say);
                    }
                }
                Err(e) => {
                    if !self.watch_warned.contains(&id) {
                        self.watch_warned.push(id);
                        tracing::warn!("watch {id}: the check failed: {e:#}");
                    }
                }
            }
        }
        self.idle_state();
        next
    }

    pub(super) fn watch(&mut self, condition: &str, r: Option<Reply>) {
        match self.watches.add(condition) {
            Ok(id) => {
                let w = &self.watches.list()[self.watches.list().len() - 1];
                let message = format!("watch {id}: {}", w.condition);
                self.speaker
                    .notice(&format!("Watch {id} set: {}.", w.condition));
                // checked at the next frame
                self.last_watch_check = None;
                reply(r, Response::accepted(message));
            }
            Err(e) => reply(r, Response::error(ErrorCode::BadRequest, e.to_string())),
        }
    }

    pub(super) fn list_watches(&mut self, speak: bool, r: Option<Reply>) {
        let list = self.watches.list();
        if speak {
            let text = if list.is_empty() {
                "No watches are set.".to_string()
            } else {
                list.iter()
                    .map(|w| format!("Watch {}: {}.", w.id, w.condition))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            self.say_now(Kind::Answer, &text, None);
        }
        let watches = self
            .watches
            .list()
            .iter()
            .map(|w| crate::control::protocol::WatchInfo {
                id: w.id,
                condition: w.condition.clone(),
                state: w.state_name().to_string(),
                last_score: w.last_score,
                checks: w.checks,
                fired: w.fired,
            })
            .collect();
        reply(r, Response::Watches { watches });
    }

    pub(super) fn unwatch(&mut self, id: u32, r: Option<Reply>) {
        match self.watches.remove(id) {
            Ok(w) => {
                self.speaker.notice(&format!("Watch {id} removed."));
                reply(
                    r,
                    Response::accepted(format!("removed watch {id}: {}", w.condition)),
                );
            }
            Err(e) => reply(r, Response::error(ErrorCode::BadRequest, e.to_string())),
        }
    }

    /// Says `text` now as the answer to a request (it interrupts like any request).
    fn say_now(&mut self, kind: Kind, text: &str, question: Option<String>) {
        let id = NarrationId::next();
        self.speaker.begin(NarrationMeta {
            id,
            kind,
            priority: Priority::User,
            trigger: Instant::now(),
            wall: SystemTime::now(),
            frame: None,
            resolution: None,
            question,
            repeat: false,
        });
        self.flush_pending_ends();
        self.speaker.text(id, text);
        self.speaker.end(NarrationEnd {
            id,
            text: text.to_string(),
            ..Default::default()
        });
    }

    /// `recall`: the best-matching remembered views, said (the best one) and listed.
    pub(super) fn recall(
        &mut self,
        query: Option<String>,
        limit: usize,
        r: Option<Reply>,
        frames: &Receiver<Frame>,
    ) {
        let now = SystemTime::now();
        let (search, found, asked) = match query {
            Some(q) => {
                let entries = self.memory.entries();
                let lang = &self.settings.policy.language;
                let found = memory::recall_text(&entries, lang, &q, limit, now);
                (Search::Text, found, format!("recall: {}", q.trim()))
            }
            None => {
                let Some(frame) = self.freshest(frames) else {
                    self.no_frame(r);
                    return;
                };
                let state = classify(&view_stats(&frame.image), &self.settings.policy.guards);
                if state != ViewState::Clear {
                    self.answer_now(Kind::Answer, state.notice(), Some(frame.number), r);
                    return;
                }
                let Some(e) = self.embedding_of(&frame) else {
                    self.speaker.notice("Sorry, the view could not be encoded.");
                    reply(
                        r,
                        Response::error(ErrorCode::Failed, "the view could not be encoded"),
                    );
                    return;
                };
                let entries = self.memory.entries();
                let near = self.settings.policy.scene.change_threshold;
                let found = memory::recall_view(&entries, &e, near, limit, now);
                (Search::Embedding, found, "recall: this view".to_string())
            }
        };
        let answer = if self.memory.is_enabled() {
            memory::answer(&found, search, self.memory.is_empty())
        } else {
            "The memory is switched off.".to_string()
        };
        self.say_now(Kind::Answer, &answer, Some(asked));
        reply(
            r,
            Response::Recall {
                search,
                answer,
                found,
            },
        );
    }

    /// `forget`: deletes the visual memory, or its part older than `older_than`.
    pub(super) fn forget(&mut self, older_than: Option<Duration>, r: Option<Reply>) {
        if !self.memory.is_enabled() {
            reply(
                r,
                Response::accepted("the memory is switched off: nothing is kept"),
            );
            return;
        }
        let (gone, kept) = self.memory.forget(older_than, SystemTime::now());
        let views = |n: usize| if n == 1 { "view" } else { "views" };
        self.speaker.notice(&match older_than {
            None => "Memory deleted.".to_string(),
            Some(_) => format!("Forgot {gone} older {}.", views(gone)),
        });
        reply(
            r,
            Response::accepted(format!("forgot {gone} {}; {kept} kept", views(gone))),
        );
    }
}
