//! The inference worker: one OS thread that owns the model and selects over frames, triggers and
//! shutdown. Every frame it can take goes through the narration policy
//! ([`crate::policy::narrator`]): cheap view checks first (a dark, covered, overexposed or blurred
//! view gets one notice, never a description), then the change gate ([`crate::policy::gate`]): a
//! frame that shows what the last encoded frame showed is not encoded again, the scene watch sees
//! that frame's embedding once more (at least every `[scene] max_unseen_s` a frame is encoded
//! anyway); then the scene watch over its embedding at `[scene] resolution`; a change is described (briefly while scenes change quickly, in full once a
//! view has settled, if asked for) and streamed sentence by sentence to the speech thread, unless
//! its first sentence repeats the last scene said. A user request (hotkey, SIGUSR1, control
//! socket: detail, ask, changed, read) pre-empts: the running generation is cancelled at the next
//! encoder block or token, the freshest frame is described, and the pre-empted narration's end is reported after
//! the request's begin so speech and log put the request first.
//!
//! A question within `[describe] followup_s` of an answer about the same view goes on with the
//! model's conversation ([`crate::policy::conversation`] decides; the model keeps its KV cache),
//! and with `[scene] mode = "periodic"` the view is described every `period_s` of frame time
//! ([`crate::policy::periodic`]) instead of on a change.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver};

use crate::capture::{Frame, PaceState};
use crate::config::Config;
use crate::config::SceneMode;
use crate::control::protocol::{ErrorCode, Response};
use crate::describer::{DescribeRequest, Describer};
use crate::memory::{Memory, MemoryLimits};
use crate::narration::{Kind, Latency, NarrationId, Priority};
use crate::policy::conversation::{Ask, Conversation, ConversationParams, Why};
use crate::policy::gate::{thumbnail, ChangeGate, Decision, GateParams, Pace};
use crate::policy::guard::{classify, view_stats, ViewState};
use crate::policy::narrator::{Narrator, NarratorParams};
use crate::policy::periodic::Periodic;
use crate::policy::phrasing::strip_preamble;
use crate::policy::scene::{cosine_distance, Verbosity, Verdict};
use crate::policy::session::{Change, SessionEvent, SessionPolicy, Step};
use crate::policy::watch::Watches;
use crate::signals::Flag;
use crate::speech::ledger::{NarrationEnd, NarrationMeta};
use crate::speech::sentences::{speakable, SentenceSplitter};
use crate::speech::service::Speaker;
use crate::status::Stats;

mod watching;
use watching::open_memory;
/// Tokens kept free in the model's context for the question of a follow-up.
const FOLLOW_UP_QUESTION_TOKENS: usize = 128;

/// How long a request while paused waits for the capture to deliver a new frame.
const FRESH_WHILE_PAUSED: Duration = Duration::from_secs(3);

/// Where a request's answer goes (the control socket waits on it).
pub type Reply = tokio::sync::oneshot::Sender<Response>;

/// A request to the worker.
#[derive(Debug)]
pub enum Trigger {
    /// Describe the freshest frame in detail.
    Detail {
        reply: Option<Reply>,
    },
    /// Answer a question about the freshest frame.
    Ask {
        question: String,
        reply: Option<Reply>,
    },
    /// Say the last narration again.
    Repeat {
        reply: Option<Reply>,
    },
    /// Say what is different from the last description.
    Changed {
        reply: Option<Reply>,
    },
    /// Read out the text in view.
    Read {
        reply: Option<Reply>,
    },
    Pause {
        reply: Option<Reply>,
    },
    Resume {
        reply: Option<Reply>,
    },
    /// Pause when narrating, resume when paused (a hotkey).
    TogglePause,
    /// Watch for a condition: say once when the model's yes/no answer about the view turns yes.
    Watch {
        condition: String,
        reply: Option<Reply>,
    },
    /// The watches that are set (said aloud with `speak`: the hotkey).
    Watches {
        speak: bool,
        reply: Option<Reply>,
    },
    Unwatch {
        id: u32,
        reply: Option<Reply>,
    },
    /// Recall past views: by words (`query`) or, without one, by the current view's embedding.
    Recall {
        query: Option<String>,
        limit: usize,
        reply: Option<Reply>,
    },
    /// Delete the visual memory (all, or what is older than `older_than`).
    Forget {
        older_than: Option<Duration>,
        reply: Option<Reply>,
    },
    /// End the conversation: the next question is asked afresh.
    NewConversation {
        reply: Option<Reply>,
    },
    /// Narrate scenes in this mode from now on (`None`: the other one).
    Mode {
        mode: Option<SceneMode>,
        reply: Option<Reply>,
    },
    /// The login session changed (screen lock, lid, sleep: [`crate::session`]).
    Session(SessionEvent),
}

impl Trigger {
    fn preempts(&self, paused: bool) -> bool {
        match self {
            Trigger::Detail { .. }
            | Trigger::Ask { .. }
            | Trigger::Repeat { .. }
            | Trigger::Changed { .. }
            | Trigger::Read { .. }
            | Trigger::Pause { .. }
            | Trigger::Recall { .. } => true,
            Trigger::TogglePause => !paused,
            Trigger::Resume { .. } | Trigger::NewConversation { .. } | Trigger::Mode { .. } => {
                false
            }
            Trigger::Watch { .. }
            | Trigger::Watches { .. }
            | Trigger::Unwatch { .. }
            | Trigger::Forget { .. } => false,
            // a lock or a sleep cuts the narration short: the camera is let go at once
            Trigger::Session(e) => !paused && e.reason().1,
        }
    }
}

fn reply(r: Option<Reply>, resp: Response) {
    if let Some(r) = r {
        let _ = r.send(resp);
    }
}

/// What the worker asks the model.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub policy: NarratorParams,
    pub gate: GateParams,
    pub scene_resolution: u32,
    pub scene_prompt: String,
    pub scene_max_tokens: usize,
    pub brief_prompt: String,
    pub brief_max_tokens: usize,
    pub detail_resolution: u32,
    pub detail_prompt: String,
    pub detail_max_tokens: usize,
    /// Contains [`crate::config::PREVIOUS`].
    pub changed_prompt: String,
    pub read_prompt: String,
    pub read_resolution: u32,
    /// `[watch]`.
    pub watch: crate::config::WatchConfig,
    /// The visual memory's file (`None`: off) and limits.
    pub memory_path: Option<std::path::PathBuf>,
    pub memory_limits: MemoryLimits,
    /// Follow-up questions (`[describe] followup_s`).
    pub conversation: ConversationParams,
    /// `[scene] mode`.
    pub mode: SceneMode,
    /// `[scene] period_s`.
    pub period: Duration,
}

impl WorkerSettings {
    pub fn from_config(c: &Config) -> Self {
        let d = &c.describe;
        Self {
            policy: NarratorParams::from_config(c),
            gate: GateParams::from_config(c),
            scene_resolution: c.scene.resolution,
            scene_prompt: d.scene_prompt.clone(),
            scene_max_tokens: d.scene_max_tokens,
            brief_prompt: d.brief_prompt.clone(),
            // brief is never longer than usual
            brief_max_tokens: d.brief_max_tokens.min(d.scene_max_tokens),
            detail_resolution: d.detail_resolution,
            detail_prompt: d.detail_prompt.clone(),
            detail_max_tokens: d.detail_max_tokens,
            changed_prompt: d.changed_prompt.clone(),
            read_prompt: d.read_prompt.clone(),
            read_resolution: d.read_resolution,
            watch: c.watch.clone(),
            memory_path: c.memory_path(),
            memory_limits: c.memory.limits(),
            conversation: ConversationParams {
                follow_up: Duration::from_secs_f64(d.followup_s),
                change_threshold: c.scene.change_threshold as f32,
                // a question and an answer of the longest kind
                reserve_tokens: d.detail_max_tokens + FOLLOW_UP_QUESTION_TOKENS,
            },
            mode: c.scene.mode,
            period: Duration::from_secs_f64(c.scene.period_s),
        }
    }
}

/// The last narration, for `repeat`.
#[derive(Debug, Clone)]
struct Said {
    kind: Kind,
    text: String,
    frame: Option<u64>,
    resolution: Option<u32>,
}

/// The last description of the whole view the user heard (scene or detail), for `changed`.
#[derive(Debug, Clone)]
struct Described {
    embedding: Vec<f32>,
    text: String,
}

/// One description to generate.
struct Job {
    kind: Kind,
    /// Scene narrations: how fully (and so whether a repeat is suppressed).
    verbosity: Option<Verbosity>,
    priority: Priority,
    frame: Frame,
    prompt: String,
    question: Option<String>,
    resolution: u32,
    max_tokens: usize,
    trigger: Instant,
    wall: SystemTime,
    /// Ask `question` as the next turn of the model's conversation (if it still has one).
    follow_up: bool,
}

/// How a generation ended.
struct Outcome {
    text: String,
    latency: Latency,
    /// `None`: finished; `Some(reason)`: cancelled or failed.
    stopped: Option<(ErrorCode, String)>,
    /// A request that arrived during generation and pre-empted it.
    preempted_by: Option<Trigger>,
    /// The first sentence repeated the last scene said (similarity): nothing was spoken.
    repeat: Option<f32>,
    /// The answer went on with the model's conversation (a follow-up).
    followed_up: bool,
}

pub struct Worker {
    describer: Box<dyn Describer>,
    settings: WorkerSettings,
    narrator: Narrator,
    gate: ChangeGate,
    /// The embedding of the frame the gate compares with (the last one encoded).
    gate_embedding: Option<Vec<f32>>,
    /// The view state of the previous frame (a change wakes the capture up).
    view_state: Option<ViewState>,
    speaker: Speaker,
    stats: Arc<Stats>,
    stop: Flag,
    latest: Option<(Frame, Option<Vec<f32>>)>,
    paused: bool,
    /// Why narration is paused: by hand, or by the login session (locked, lid, sleep).
    session: SessionPolicy,
    last_said: Option<Said>,
    described: Option<Described>,
    /// Ends of pre-empted narrations, sent after the pre-empting narration begins.
    pending_ends: Vec<NarrationEnd>,
    /// Non-pre-empting requests that arrived during a generation.
    deferred: Vec<Trigger>,
    embed_failures: u32,
    /// `scenesay ctl watch`: conditions checked after scene changes.
    watches: Watches,
    /// When the watches were last checked (the frames' clock).
    last_watch_check: Option<Duration>,
    /// Watches whose check failed (reported once each).
    watch_warned: Vec<u32>,
    /// What was seen, for `recall`.
    memory: Memory,
    /// Follow-up questions: the conversation about the view.
    conversation: Conversation,
    /// `[scene] mode = "periodic"`: when the next description is due.
    periodic: Periodic,
}

impl Worker {
    pub fn new(
        describer: Box<dyn Describer>,
        settings: WorkerSettings,
        speaker: Speaker,
        stats: Arc<Stats>,
        stop: Flag,
    ) -> Self {
        Self {
            narrator: Narrator::new(settings.policy.clone()),
            conversation: Conversation::new(settings.conversation.clone()),
            periodic: Periodic::new(settings.period),
            gate: ChangeGate::new(settings.gate),
            gate_embedding: None,
            view_state: None,
            describer,
            speaker,
            stats,
            stop,
            latest: None,
            paused: false,
            session: SessionPolicy::new(),
            last_said: None,
            described: None,
            pending_ends: vec![],
            deferred: vec![],
            embed_failures: 0,
            watches: Watches::new(settings.watch.params()),
            last_watch_check: None,
            watch_warned: vec![],
            memory: open_memory(&settings),
            settings,
        }
    }

    /// Runs until `stop` closes (or the stop flag is raised).
    pub fn run(mut self, frames: Receiver<Frame>, triggers: Receiver<Trigger>, stop: Receiver<()>) {
        self.stats.set_state("watching");
        self.stats.pace.set(PaceState::Full);
        let mut frames = frames;
        let mut next: Option<Trigger> = None;
        loop {
            self.stats.beat();
            if self.stop.is_set() {
                break;
            }
            if let Some(t) = next
                .take()
                .or_else(|| (!self.deferred.is_empty()).then(|| self.deferred.remove(0)))
            {
                next = self.on_trigger(t, &frames, &triggers);
                continue;
            }
            select! {
                recv(stop) -> _ => break,
                recv(triggers) -> t => match t {
                    Ok(t) => next = self.on_trigger(t, &frames, &triggers),
                    Err(_) => break,
                },
                recv(frames) -> f => match f {
                    Ok(f) => next = self.on_frame(f, &triggers),
                    Err(_) => frames = crossbeam_channel::never(),
                },
                default(Duration::from_secs(1)) => {},
            }
        }
        self.flush_pending_ends();
        for t in self.deferred.drain(..) {
            answer_shutdown(t);
        }
        if let Some(t) = next {
            answer_shutdown(t);
        }
    }

    fn flush_pending_ends(&mut self) {
        for e in self.pending_ends.drain(..) {
            self.speaker.end(e);
        }
    }

    fn idle_state(&self) {
        self.stats
            .set_state(if self.paused { "paused" } else { "watching" });
    }

    /// The freshest frame: a waiting one if any, else the last one seen. While paused, the capture
    /// is woken for one new frame (the camera is opened again for it).
    fn freshest(&mut self, frames: &Receiver<Frame>) -> Option<Frame> {
        if let Ok(f) = frames.try_recv() {
            self.latest = Some((f, None));
        } else if self.paused && self.stats.source_state() == "paused" {
            self.stats.pace.set(PaceState::Full);
            let fresh = frames.recv_timeout(FRESH_WHILE_PAUSED);
            self.stats.pace.set(PaceState::Paused);
            match fresh {
                Ok(f) => self.latest = Some((f, None)),
                Err(_) => tracing::debug!("no new frame while paused: the last one is used"),
            }
        }
        self.latest.as_ref().map(|(f, _)| f.clone())
    }

    /// The embedding of a clear frame for the scene watch: a new one when the change gate opens,
    /// else the last encoded frame's (the frame shows the same).
    fn scene_embedding(&mut self, frame: &Frame, now: Duration) -> Option<Vec<f32>> {
        let thumb = thumbnail(&frame.image);
        let decision = self.gate.check(&thumb, now);
        if let (Decision::Skip { area }, Some(e)) = (decision, &self.gate_embedding) {
            tracing::trace!(
                "frame {}: gate closed ({:.1} % of the view differs): not encoded",
                frame.number,
                area * 100.0
            );
            Stats::inc(&self.stats.gated);
            return Some(e.clone());
        }
        tracing::trace!("frame {}: gate {decision:?}: encoded", frame.number);
        let e = self.embed(frame)?;
        Stats::inc(&self.stats.encoded);
        self.gate.encoded(thumb, now);
        self.gate_embedding = Some(e.clone());
        Some(e)
    }

    /// The capture's pace from the gate (unless paused).
    fn set_pace(&self, now: Duration) {
        if self.paused {
            return;
        }
        self.stats.pace.set(match self.gate.pace(now) {
            Pace::Full => PaceState::Full,
            Pace::Idle => PaceState::Idle,
        });
    }

    fn embed(&mut self, frame: &Frame) -> Option<Vec<f32>> {
        match self
            .describer
            .embed(&frame.image, self.settings.scene_resolution)
        {
            Ok(e) => {
                self.embed_failures = 0;
                Some(e)
            }
            Err(e) => {
                self.embed_failures += 1;
                if self.embed_failures == 1 {
                    tracing::warn!(
                        "frame {}: cannot compute its scene embedding: {e:#}",
                        frame.number
                    );
                }
                None
            }
        }
    }

    fn on_frame(&mut self, frame: Frame, triggers: &Receiver<Trigger>) -> Option<Trigger> {
        self.latest = Some((frame.clone(), None));
        if self.paused {
            return None;
        }
        Stats::inc(&self.stats.watched);
        let now = self.stats.clock.at(frame.captured);
        let state = classify(&view_stats(&frame.image), &self.settings.policy.guards);
        if self.view_state.replace(state) != Some(state) {
            self.gate.wake(now);
        }
        let step = self.narrator.view(state);
        if let Some(n) = step.notice {
            self.speaker.notice(n);
        }
        if !step.describe {
            tracing::debug!("frame {}: view {state:?}: not described", frame.number);
            self.set_pace(now);
            return None;
        }
        let e = self.scene_embedding(&frame, now);
        let Some(e) = e else {
            self.set_pace(now);
            return None;
        };
        if let Some(l) = self.latest.as_mut() {
            l.1 = Some(e.clone());
        }
        let verdict = self.narrator.observe(&e, now);
        tracing::debug!("frame {}: view clear, {verdict:?}", frame.number);
        if !matches!(verdict, Verdict::Same { .. }) {
            // a change under way: frames at full pace until it is narrated
            self.gate.wake(now);
        }
        self.set_pace(now);
        if self.settings.mode == SceneMode::Periodic {
            return self.periodic_frame(&frame, e, verdict, now, triggers);
        }
        let Verdict::Narrate { verbosity, .. } = verdict else {
            let moving = matches!(verdict, Verdict::Settling { .. });
            return self.check_watches(&frame, false, moving, now, triggers);
        };
        // the view changed (or, settled, is described again): the model's conversation is over
        self.conversation.end(if verbosity == Verbosity::Full {
            Why::Overwritten
        } else {
            Why::NewScene
        });
        let s = &self.settings;
        let (prompt, resolution, max_tokens) = match verbosity {
            Verbosity::Brief => (&s.brief_prompt, s.scene_resolution, s.brief_max_tokens),
            Verbosity::Normal => (&s.scene_prompt, s.scene_resolution, s.scene_max_tokens),
            Verbosity::Full => (&s.detail_prompt, s.detail_resolution, s.detail_max_tokens),
        };
        let job = Job {
            kind: Kind::Scene,
            verbosity: Some(verbosity),
            priority: Priority::Scene,
            frame: frame.clone(),
            prompt: prompt.clone(),
            question: None,
            resolution,
            max_tokens,
            trigger: frame.captured,
            wall: SystemTime::now() - frame.captured.elapsed(),
            follow_up: false,
        };
        // a settled view is as fresh as the last frame that showed it unchanged: count the age of
        // a fuller description (for `stale_s`) from now
        let job = if verbosity == Verbosity::Full {
            Job {
                trigger: Instant::now(),
                wall: SystemTime::now(),
                ..job
            }
        } else {
            job
        };
        let out = self.narrate(job, triggers);
        if out.repeat.is_some() {
            self.narrator.repeated(e, now);
        } else if out.stopped.is_none() {
            self.narrator.narrated(e.clone(), now, verbosity, &out.text);
            self.remember(Kind::Scene, &out.text, &frame, &e);
            self.described = Some(Described {
                embedding: e,
                text: out.text,
            });
        }
        if out.preempted_by.is_some() || out.stopped.is_some() {
            return out.preempted_by;
        }
        self.check_watches(&frame, true, false, now, triggers)
    }

    /// `[scene] mode = "periodic"`: the view is described every `period_s` of the frames' own
    /// time, changed or not (never while a conversation about it goes on); a change the scene
    /// watch sees only ends the conversation and becomes the view later frames are compared with.
    fn periodic_frame(
        &mut self,
        frame: &Frame,
        e: Vec<f32>,
        verdict: Verdict,
        now: Duration,
        triggers: &Receiver<Trigger>,
    ) -> Option<Trigger> {
        if let Verdict::Narrate { verbosity, .. } = verdict {
            if verbosity != Verbosity::Full {
                self.conversation.end(Why::NewScene);
            }
            self.narrator.seen(e.clone());
        }
        if !self.periodic.due(now, self.conversation.is_open(now)) {
            return None;
        }
        self.conversation.end(Why::Overwritten);
        let s = &self.settings;
        let job = Job {
            kind: Kind::Scene,
            // said even when it says what the last one said: that is what periodic is for
            verbosity: None,
            priority: Priority::Scene,
            frame: frame.clone(),
            prompt: s.scene_prompt.clone(),
            question: None,
            resolution: s.scene_resolution,
            max_tokens: s.scene_max_tokens,
            trigger: frame.captured,
            wall: SystemTime::now() - frame.captured.elapsed(),
            follow_up: false,
        };
        let out = self.narrate(job, triggers);
        // a failure is not tried again on every frame: the next try is a period later
        self.periodic.described(now);
        if out.stopped.is_none() {
            self.narrator
                .narrated(e.clone(), now, Verbosity::Normal, &out.text);
            self.described = Some(Described {
                embedding: e,
                text: out.text,
            });
        }
        out.preempted_by
    }

    /// `ctl mode` / the hotkey: narrate changes, or the view every period.
    fn set_mode(&mut self, mode: Option<SceneMode>, r: Option<Reply>) {
        let mode = mode.unwrap_or(match self.settings.mode {
            SceneMode::Change => SceneMode::Periodic,
            SceneMode::Periodic => SceneMode::Change,
        });
        self.settings.mode = mode;
        // the first frame in the new mode is compared, or described, afresh
        self.narrator.reset_run();
        let (said, message) = match mode {
            SceneMode::Change => ("Narrating changes.".to_string(), "mode change".to_string()),
            SceneMode::Periodic => {
                let s = self.settings.period.as_secs_f64();
                (
                    format!("Narrating every {s:.0} seconds."),
                    format!("mode periodic, every {s} s"),
                )
            }
        };
        self.speaker.notice(&said);
        reply(r, Response::accepted(message));
    }

    /// `ctl new` / the hotkey: the next question starts afresh.
    fn new_conversation(&mut self, r: Option<Reply>) {
        let had = self.conversation.end(Why::New);
        self.describer.end_conversation();
        self.speaker.notice("New conversation.");
        reply(
            r,
            Response::accepted(if had {
                "new conversation"
            } else {
                "new conversation (none was going on)"
            }),
        );
    }

    fn on_trigger(
        &mut self,
        t: Trigger,
        frames: &Receiver<Frame>,
        triggers: &Receiver<Trigger>,
    ) -> Option<Trigger> {
        let next = match t {
            Trigger::Detail { reply: r } => {
                let prompt = self.settings.detail_prompt.clone();
                let res = self.settings.detail_resolution;
                self.user_request(Kind::Detail, prompt, None, res, r, frames, triggers)
            }
            Trigger::Ask { question, reply: r } => {
                let res = self.settings.detail_resolution;
                let prompt = question.clone();
                self.user_request(
                    Kind::Answer,
                    prompt,
                    Some(question),
                    res,
                    r,
                    frames,
                    triggers,
                )
            }
            Trigger::Changed { reply: r } => self.changed(r, frames, triggers),
            Trigger::Read { reply: r } => {
                let prompt = self.settings.read_prompt.clone();
                let res = self.settings.read_resolution;
                self.user_request(Kind::Read, prompt, None, res, r, frames, triggers)
            }
            Trigger::Repeat { reply: r } => {
                self.repeat(r);
                None
            }
            Trigger::Pause { reply: r } => {
                let step = self.session.pause_by_hand();
                self.apply(step, r);
                None
            }
            Trigger::Resume { reply: r } => {
                let step = self.session.resume_by_hand();
                self.apply(step, r);
                None
            }
            Trigger::TogglePause => {
                let step = self.session.toggle_by_hand();
                self.apply(step, None);
                None
            }
            Trigger::Session(e) => {
                let step = self.session.session(e);
                self.apply(step, None);
                None
            }
            Trigger::Watch {
                condition,
                reply: r,
            } => {
                self.watch(&condition, r);
                None
            }
            Trigger::Watches { speak, reply: r } => {
                self.list_watches(speak, r);
                None
            }
            Trigger::Unwatch { id, reply: r } => {
                self.unwatch(id, r);
                None
            }
            Trigger::Recall {
                query,
                limit,
                reply: r,
            } => {
                self.recall(query, limit, r, frames);
                None
            }
            Trigger::Forget {
                older_than,
                reply: r,
            } => {
                self.forget(older_than, r);
                None
            }
            Trigger::NewConversation { reply: r } => {
                self.new_conversation(r);
                None
            }
            Trigger::Mode { mode, reply: r } => {
                self.set_mode(mode, r);
                None
            }
        };
        self.flush_pending_ends();
        next
    }

    /// Carries out what the pause policy decided.
    fn apply(&mut self, step: Step, r: Option<Reply>) {
        match step.change {
            Some(Change::Pause) => self.pause(step.notice),
            Some(Change::Resume) => self.resume(step.notice),
            None => {
                if let Some(n) = step.notice {
                    self.speaker.notice(n);
                }
            }
        }
        self.stats.set_paused_by(&self.session.why());
        reply(r, Response::accepted(step.reply));
    }

    fn pause(&mut self, notice: Option<&str>) {
        if self.paused {
            return;
        }
        self.paused = true;
        self.stats
            .paused
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.stats.pace.set(PaceState::Paused);
        self.speaker.silence();
        self.flush_pending_ends();
        if let Some(n) = notice {
            self.speaker.notice(n);
        }
        self.idle_state();
    }

    fn resume(&mut self, notice: Option<&str>) {
        if !self.paused {
            return;
        }
        self.paused = false;
        self.stats
            .paused
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.gate.wake(self.stats.clock.now());
        self.stats.pace.set(PaceState::Full);
        self.narrator.reset_run();
        if let Some(n) = notice {
            self.speaker.notice(n);
        }
        self.idle_state();
    }

    fn repeat(&mut self, r: Option<Reply>) {
        let Some(said) = self.last_said.clone() else {
            self.speaker.notice("Nothing has been said yet.");
            reply(r, Response::accepted("nothing has been said yet"));
            return;
        };
        let id = NarrationId::next();
        self.speaker.begin(NarrationMeta {
            id,
            kind: said.kind,
            priority: Priority::User,
            trigger: Instant::now(),
            wall: SystemTime::now(),
            frame: said.frame,
            resolution: said.resolution,
            question: None,
            repeat: true,
        });
        self.flush_pending_ends();
        let mut split = SentenceSplitter::default();
        for s in split.push(&said.text).into_iter().chain(split.finish()) {
            if let Some(s) = speakable(&s) {
                self.speaker.text(id, s);
            }
        }
        self.speaker.end(NarrationEnd {
            id,
            text: said.text.clone(),
            ..Default::default()
        });
        reply(
            r,
            Response::Narration {
                kind: said.kind,
                text: said.text,
                resolution: said.resolution,
                frame: said.frame,
                latency_ms: Latency::default(),
            },
        );
    }

    /// Answers a request at once, without the model (it interrupts like any request).
    fn answer_now(&mut self, kind: Kind, text: &str, frame: Option<u64>, r: Option<Reply>) {
        let id = NarrationId::next();
        self.speaker.begin(NarrationMeta {
            id,
            kind,
            priority: Priority::User,
            trigger: Instant::now(),
            wall: SystemTime::now(),
            frame,
            resolution: None,
            question: None,
            repeat: false,
        });
        self.flush_pending_ends();
        self.speaker.text(id, text);
        self.speaker.end(NarrationEnd {
            id,
            text: text.to_string(),
            ..Default::default()
        });
        reply(
            r,
            Response::Narration {
                kind,
                text: text.to_string(),
                resolution: None,
                frame,
                latency_ms: Latency::default(),
            },
        );
    }

    /// The embedding of `frame`: the one already computed for it, or a new one.
    /// A frame the change gate kept from the encoder has none yet: it is computed once and kept
    /// beside the frame, so a request that asks before and after its answer encodes it once.
    fn embedding_of(&mut self, frame: &Frame) -> Option<Vec<f32>> {
        let latest = self
            .latest
            .as_ref()
            .is_some_and(|(f, _)| f.number == frame.number);
        if latest {
            if let Some(e) = self.latest.as_ref().and_then(|(_, e)| e.clone()) {
                return Some(e);
            }
        }
        let e = self.embed(frame)?;
        if latest {
            if let Some(l) = self.latest.as_mut() {
                l.1 = Some(e.clone());
            }
        }
        Some(e)
    }

    /// For a detail, read or ask request: the same view at the camera's highest resolution when it
    /// has a still mode (the capture thread switches to it for one frame and back), so the model
    /// sees real pixels; `frame` itself otherwise, or when the still takes too long.
    fn still_of(&self, frame: &Frame) -> Frame {
        match self.stats.stills.request(crate::capture::STILL_WAIT) {
            Some(image) => Frame {
                number: frame.number,
                image: Arc::new(image),
                captured: Instant::now(),
            },
            None => frame.clone(),
        }
    }

    /// `changed`: what is different from the last description the user heard. When the scene
    /// embedding says the view is the same, the answer is given without asking the model (a model
    /// asked what changed tends to invent something); otherwise the model looks at the view with
    /// the last description in its prompt.
    fn changed(
        &mut self,
        r: Option<Reply>,
        frames: &Receiver<Frame>,
        triggers: &Receiver<Trigger>,
    ) -> Option<Trigger> {
        let Some(frame) = self.freshest(frames) else {
            return self.no_frame(r);
        };
        let Some(before) = self.described.clone() else {
            self.answer_now(
                Kind::Changed,
                "Nothing has been described yet.",
                Some(frame.number),
                r,
            );
            return None;
        };
        let state = classify(&view_stats(&frame.image), &self.settings.policy.guards);
        if state != ViewState::Clear {
            self.answer_now(Kind::Changed, state.notice(), Some(frame.number), r);
            return None;
        }
        if let Some(e) = self.embedding_of(&frame) {
            let d = cosine_distance(&before.embedding, &e);
            if d <= self.settings.policy.scene.change_threshold {
                tracing::debug!("changed: distance {d:.4} to the last description: the same view");
                self.answer_now(Kind::Changed, "Nothing has changed.", Some(frame.number), r);
                return None;
            }
        }
        let prompt = self
            .settings
            .changed_prompt
            .replace(crate::config::PREVIOUS, before.text.trim());
        let res = self.settings.detail_resolution;
        self.user_request(Kind::Changed, prompt, None, res, r, frames, triggers)
    }

    fn no_frame(&mut self, r: Option<Reply>) -> Option<Trigger> {
        self.flush_pending_ends();
        self.speaker.notice("No camera picture yet.");
        reply(
            r,
            Response::error(ErrorCode::NoFrame, "no frame has been captured yet"),
        );
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn user_request(
        &mut self,
        kind: Kind,
        prompt: String,
        question: Option<String>,
        resolution: u32,
        r: Option<Reply>,
        frames: &Receiver<Frame>,
        triggers: &Receiver<Trigger>,
    ) -> Option<Trigger> {
        let trigger = Instant::now();
        let Some(frame) = self.freshest(frames) else {
            return self.no_frame(r);
        };
        // the model is not asked about a view it cannot see: it would invent one
        let state = classify(&view_stats(&frame.image), &self.settings.policy.guards);
        if state != ViewState::Clear {
            self.answer_now(kind, state.notice(), Some(frame.number), r);
            return None;
        }
        let job_frame = match kind {
            Kind::Detail | Kind::Read | Kind::Answer => self.still_of(&frame),
            _ => frame.clone(),
        };
        // a question about the view of the last answer follows it up; anything else that runs
        // the model ends the conversation
        let follow_up = match kind {
            Kind::Answer => {
                let view = self.embedding_of(&frame);
                let room = self.describer.conversation_room();
                let d = self
                    .conversation
                    .ask(self.stats.clock.now(), view.as_deref(), room);
                tracing::debug!("question: {d:?}");
                matches!(d, Ask::FollowUp { .. })
            }
            Kind::Detail => {
                self.conversation.end(Why::Describe);
                false
            }
            _ => {
                self.conversation.end(Why::Overwritten);
                false
            }
        };
        let job = Job {
            kind,
            verbosity: None,
            priority: Priority::User,
            frame: job_frame,
            prompt,
            question,
            resolution,
            max_tokens: self.settings.detail_max_tokens,
            trigger,
            wall: SystemTime::now(),
            follow_up,
        };
        let out = self.narrate(job, triggers);
        let done = self.stats.clock.now();
        match (&out.stopped, kind) {
            (Some(_), _) => {
                self.conversation.end(Why::Interrupted);
                self.describer.end_conversation();
            }
            (None, Kind::Answer) if out.followed_up => self.conversation.continued(done),
            (None, Kind::Answer | Kind::Detail | Kind::Read) => {
                let view = self.embedding_of(&frame);
                self.conversation.started(view, done);
            }
            (None, _) => {}
        }
        if out.stopped.is_none() {
            // the listener heard about the view: a periodic description is due a period later
            self.periodic.described(done);
        }
        match out.stopped {
            None => {
                reply(
                    r,
                    Response::Narration {
                        kind,
                        text: out.text.clone(),
                        resolution: Some(resolution),
                        frame: Some(frame.number),
                        latency_ms: out.latency,
                    },
                );
                // the user has heard about this view: compare later frames with it
                if !self.paused || kind == Kind::Detail {
                    if let Some(e) = self.embedding_of(&frame) {
                        if kind == Kind::Detail {
                            self.remember(Kind::Detail, &out.text, &frame, &e);
                            self.described = Some(Described {
                                embedding: e.clone(),
                                text: out.text,
                            });
                        }
                        if !self.paused {
                            self.narrator.seen(e);
                        }
                    }
                }
            }
            Some((code, why)) => reply(r, Response::error(code, why)),
        }
        out.preempted_by
    }

    /// Generates one narration, streaming sentences to speech; cancelled at the next encoder block
    /// or token by a pre-empting request (returned in the outcome), by shutdown, or when the first
    /// sentence of a scene repeats the last scene said (then nothing is spoken).
    fn narrate(&mut self, job: Job, triggers: &Receiver<Trigger>) -> Outcome {
        let id = NarrationId::next();
        self.speaker.begin(NarrationMeta {
            id,
            kind: job.kind,
            priority: job.priority,
            trigger: job.trigger,
            wall: job.wall,
            frame: Some(job.frame.number),
            resolution: Some(job.resolution),
            question: job.question.clone(),
            repeat: false,
        });
        self.flush_pending_ends();
        self.stats.set_state(match job.kind {
            Kind::Scene => "describing scene",
            Kind::Answer => "answering",
            Kind::Changed => "comparing",
            Kind::Read => "reading",
            _ => "describing detail",
        });
        let request = DescribeRequest {
            prompt: job.prompt.clone(),
            resolution: job.resolution,
            max_tokens: job.max_tokens,
        };
        let preempt: RefCell<Option<Trigger>> = RefCell::new(None);
        let deferred: RefCell<Vec<Trigger>> = RefCell::new(vec![]);
        let first_text: Cell<Option<Instant>> = Cell::new(None);
        let repeat: Cell<Option<f32>> = Cell::new(None);
        let said_first = Cell::new(false);
        let followed_up = Cell::new(false);
        let splitter = RefCell::new(SentenceSplitter::default());
        let speaker = self.speaker.clone();
        let stats = self.stats.clone();
        let stop = self.stop.clone();
        let paused = self.paused;
        let narrator = &self.narrator;
        // one complete sentence: the first loses an "The image shows" opening and, for a scene,
        // is checked against the last scene said
        let sentence = |s: &str| {
            if repeat.get().is_some() {
                return;
            }
            let Some(mut s) = speakable(s) else { return };
            if !said_first.get() {
                said_first.set(true);
                s = strip_preamble(&s);
                if let Some(sim) = job.verbosity.and_then(|v| narrator.repeats(v, &s)) {
                    tracing::debug!("narration {id} repeats the last scene ({sim:.2}): {s}");
                    repeat.set(Some(sim));
                    return;
                }
            }
            speaker.text(id, s);
        };
        let result = {
            let cancel = || {
                stats.beat();
                if stop.is_set() || preempt.borrow().is_some() || repeat.get().is_some() {
                    return true;
                }
                while let Ok(t) = triggers.try_recv() {
                    if t.preempts(paused) {
                        *preempt.borrow_mut() = Some(t);
                        return true;
                    }
                    deferred.borrow_mut().push(t);
                }
                false
            };
            let mut on_text = |piece: &str| {
                if first_text.get().is_none() {
                    first_text.set(Some(Instant::now()));
                }
                let done = splitter.borrow_mut().push(piece);
                for s in done {
                    sentence(&s);
                }
            };
            let mut went_on = None;
            if let (true, Some(q)) = (job.follow_up, job.question.as_deref()) {
                went_on = self
                    .describer
                    .follow_up(q, job.max_tokens, &mut on_text, &cancel)
                    .transpose();
                if went_on.is_none() {
                    tracing::debug!("the model has no conversation to go on with: asked afresh");
                }
            }
            followed_up.set(went_on.is_some());
            went_on.unwrap_or_else(|| {
                self.describer
                    .describe(&job.frame.image, &request, &mut on_text, &cancel)
            })
        };
        self.deferred.extend(deferred.into_inner());
        let preempted_by = preempt.into_inner();
        let stopping = self.stop.is_set();
        let (text, cancelled, tokens, timings, stopped) = match result {
            Ok(d) => {
                let stopped = if preempted_by.is_some() {
                    Some((
                        ErrorCode::Superseded,
                        "pre-empted by a newer request".to_string(),
                    ))
                } else if (d.cancelled && repeat.get().is_none()) || stopping {
                    Some((ErrorCode::ShuttingDown, "shutdown".to_string()))
                } else {
                    None
                };
                if stopped.is_none() {
                    Stats::inc(&self.stats.described);
                    if let Some(rest) = splitter.borrow_mut().finish() {
                        sentence(&rest);
                    }
                }
                let tokens = d.token_ids.len();
                (d.text, d.cancelled, Some(tokens), Some(d.timings), stopped)
            }
            Err(e) => {
                tracing::warn!("frame {}: description failed: {e:#}", job.frame.number);
                if job.priority == Priority::User {
                    self.speaker.notice("Sorry, the description failed.");
                }
                (
                    String::new(),
                    false,
                    None,
                    None,
                    Some((ErrorCode::Failed, format!("description failed: {e:#}"))),
                )
            }
        };
        let repeat = repeat.get().filter(|_| stopped.is_none());
        let text = strip_preamble(text.trim());
        let latency = Latency {
            first_text: first_text.get().map(|f| ms(job.trigger, f)),
            first_speech: None,
            generation: timings.as_ref().map(|t| t.total_ms),
            vision: timings.as_ref().map(|t| t.vision_ms),
            tokens_per_s: timings
                .as_ref()
                .map(|t| t.decode_tokens_per_s)
                .filter(|x| *x > 0.0),
        };
        let reason = match (&stopped, repeat) {
            (Some((_, r)), _) => Some(r.clone()),
            (None, Some(sim)) => Some(format!(
                "repeat: says what the last scene narration said (similarity {sim:.2})"
            )),
            (None, None) => None,
        };
        let end = NarrationEnd {
            id,
            text: text.clone(),
            cancelled,
            reason,
            tokens,
            timings,
            first_text: first_text.get(),
        };
        if preempted_by.is_some() {
            self.pending_ends.push(end);
        } else {
            self.speaker.end(end);
        }
        if stopped.is_none() && repeat.is_none() {
            self.last_said = Some(Said {
                kind: job.kind,
                text: text.clone(),
                frame: Some(job.frame.number),
                resolution: Some(job.resolution),
            });
        }
        self.idle_state();
        Outcome {
            text,
            latency,
            stopped,
            preempted_by,
            repeat,
            followed_up: followed_up.get(),
        }
    }
}

fn ms(from: Instant, to: Instant) -> f64 {
    (to.saturating_duration_since(from).as_secs_f64() * 1e4).round() / 10.0
}

fn answer_shutdown(t: Trigger) {
    let r = match t {
        Trigger::Detail { reply }
        | Trigger::Ask { reply, .. }
        | Trigger::Repeat { reply }
        | Trigger::Changed { reply }
        | Trigger::Read { reply }
        | Trigger::Pause { reply }
        | Trigger::Resume { reply }
        | Trigger::Watch { reply, .. }
        | Trigger::Watches { reply, .. }
        | Trigger::Unwatch { reply, .. }
        | Trigger::Recall { reply, .. }
        | Trigger::Forget { reply, .. }
        | Trigger::NewConversation { reply }
        | Trigger::Mode { reply, .. } => reply,
        Trigger::TogglePause | Trigger::Session(_) => None,
    };
    reply(
        r,
        Response::error(ErrorCode::ShuttingDown, "scenesay is shutting down"),
    );
}
