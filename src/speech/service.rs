//! The speech thread: receives narrations (begin, sentences, end) from the worker and notices from
//! anywhere, lets the queue policy decide, drives the backend, and writes one narration-log line per
//! narration once its fate is known.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, Sender};

use super::ledger::{Ledger, NarrationEnd, NarrationMeta};
use super::{Progress, SpeechSink, Voice};
use crate::control::protocol::{LastNarration, RecentLatency};
use crate::narration::{Kind, NarrationId, NarrationLog, Priority, Status};
use crate::policy::speech::{Action, Chunk, Event, SpeechQueue};
use crate::status::{Clock, Stats};

/// A message to the speech thread.
#[derive(Debug, Clone)]
pub enum SpeechMsg {
    Begin(NarrationMeta),
    Text {
        id: NarrationId,
        text: String,
    },
    End(NarrationEnd),
    /// Stop talking and drop everything queued (narration paused).
    Silence,
    /// Stop talking now and drop everything queued; narration goes on (`scenesay ctl hush`).
    Hush,
    /// Change rate, volume or voice from now on; answered with the settings now in use.
    Adjust {
        change: VoiceChange,
        reply: Sender<Result<Voice, String>>,
    },
    /// Answered once everything sent before it has been said (or dropped).
    Flush(Sender<()>),
}

/// A change of speech settings at run time: the fields given change, the others stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoiceChange {
    pub rate: Option<i32>,
    pub volume: Option<i32>,
    pub voice: Option<String>,
}

/// A cheap, clonable handle for sending narrations to the speech thread. Sending never blocks and
/// never fails loudly: once the speech thread is gone (shutdown), messages are discarded.
#[derive(Debug, Clone)]
pub struct Speaker {
    tx: Sender<SpeechMsg>,
}

impl Speaker {
    pub fn new(tx: Sender<SpeechMsg>) -> Self {
        Self { tx }
    }

    pub fn send(&self, m: SpeechMsg) {
        let _ = self.tx.send(m);
    }

    pub fn begin(&self, meta: NarrationMeta) {
        self.send(SpeechMsg::Begin(meta));
    }

    pub fn text(&self, id: NarrationId, text: impl Into<String>) {
        self.send(SpeechMsg::Text {
            id,
            text: text.into(),
        });
    }

    pub fn end(&self, end: NarrationEnd) {
        self.send(SpeechMsg::End(end));
    }

    pub fn silence(&self) {
        self.send(SpeechMsg::Silence);
    }

    pub fn hush(&self) {
        self.send(SpeechMsg::Hush);
    }

    /// Changes speech settings; the settings now in use, or why not, within `limit`.
    pub fn adjust(&self, change: VoiceChange, limit: Duration) -> Result<Voice, String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(SpeechMsg::Adjust { change, reply: tx });
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| Err("the speech thread did not answer".into()))
    }

    /// Waits until everything sent so far has been said, at most `limit`; false when the limit
    /// passed first (or the speech thread is gone).
    pub fn flush(&self, limit: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(SpeechMsg::Flush(tx));
        rx.recv_timeout(limit).is_ok()
    }

    /// A one-sentence notice from scenesay itself.
    pub fn notice(&self, text: &str) -> NarrationId {
        let id = NarrationId::next();
        self.begin(NarrationMeta {
            id,
            kind: Kind::Notice,
            priority: Priority::Notice,
            trigger: Instant::now(),
            wall: SystemTime::now(),
            frame: None,
            resolution: None,
            question: None,
            repeat: false,
        });
        self.text(id, text);
        self.end(NarrationEnd {
            id,
            text: text.to_string(),
            ..Default::default()
        });
        id
    }
}

/// Settings of the speech thread.
#[derive(Debug, Clone)]
pub struct SpeechSettings {
    pub stale_after: Duration,
    /// Cue said when a user request begins.
    pub acknowledge: Option<String>,
    /// Rate, volume, voice and language at start.
    pub voice: Voice,
}

/// The speech thread's state.
pub struct SpeechService {
    sink: Box<dyn SpeechSink>,
    policy: SpeechQueue,
    ledger: Ledger,
    log: NarrationLog,
    stats: Arc<Stats>,
    clock: Clock,
    speaking_since: Option<Instant>,
    /// Waiting for everything to be said.
    flushes: Vec<Sender<()>>,
    warned_timeout: bool,
    warned_error: bool,
    voice: Voice,
}

/// How long an utterance may take, once begun, before the backend is presumed stuck (it never
/// reported the end): generous for the slowest speech rate.
pub fn utterance_limit(text: &str) -> Duration {
    Duration::from_secs(5) + Duration::from_millis(200) * text.chars().count() as u32
}

/// The speech thread's own last resort, for a backend that neither finishes nor reports itself
/// stuck: beyond the backends' own limits (the wait for a turn included).
fn last_resort_limit(text: &str) -> Duration {
    utterance_limit(text) + super::dispatcher::TURN_LIMIT + Duration::from_secs(5)
}

impl SpeechService {
    pub fn new(
        sink: Box<dyn SpeechSink>,
        settings: SpeechSettings,
        log: NarrationLog,
        stats: Arc<Stats>,
    ) -> Self {
        stats.set_speech_backend(sink.name());
        stats.set_speech_voice(&settings.voice);
        let clock = stats.clock;
        Self {
            sink,
            policy: SpeechQueue::new(settings.stale_after, settings.acknowledge),
            ledger: Ledger::new(),
            log,
            stats,
            clock,
            speaking_since: None,
            flushes: vec![],
            warned_timeout: false,
            warned_error: false,
            voice: settings.voice,
        }
    }

    /// Runs until `stop` closes (or every sender is gone), then cuts speech short and writes every
    /// narration still in flight to the log.
    pub fn run(mut self, rx: Receiver<SpeechMsg>, stop: Receiver<()>) {
        loop {
            let wait = if self.policy.speaking().is_some() {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(250)
            };
            select! {
                recv(rx) -> m => match m {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                },
                recv(stop) -> _ => break,
                default(wait) => {},
            }
            self.poll();
            self.write_ready();
            if !self.flushes.is_empty() && self.is_idle() {
                for f in self.flushes.drain(..) {
                    let _ = f.send(());
                }
            }
        }
        self.close(&rx);
    }

    fn close(&mut self, rx: &Receiver<SpeechMsg>) {
        if self.policy.speaking().is_some() {
            let _ = self.sink.stop();
        }
        // narrations already sent still get their line (e.g. the generation cancelled by shutdown)
        while let Ok(m) = rx.try_recv() {
            match m {
                SpeechMsg::Begin(meta) => self.ledger.begin(meta),
                SpeechMsg::Text { id, text } => self.ledger.chunk(id, &text),
                SpeechMsg::End(end) => self.ledger.end(end),
                SpeechMsg::Silence
                | SpeechMsg::Hush
                | SpeechMsg::Adjust { .. }
                | SpeechMsg::Flush(_) => {}
            }
        }
        for r in self.ledger.drain_all("shutdown") {
            self.log.append(&r);
        }
        self.log.sync();
    }

    fn write_ready(&mut self) {
        for r in self.ledger.take_ready() {
            tracing::debug!("narration {} {:?}: {}", r.id, r.status, r.text);
            if r.kind != Kind::Notice && r.status != Status::Suppressed {
                self.stats.heard(
                    LastNarration {
                        time: r.time.clone(),
                        kind: r.kind,
                        text: r.text.clone(),
                    },
                    RecentLatency {
                        kind: r.kind,
                        latency_ms: r.latency_ms.clone(),
                    },
                );
            }
            self.log.append(&r);
        }
    }

    /// Handles one message (public for tests that drive the service by hand).
    pub fn handle(&mut self, m: SpeechMsg) {
        let now = self.clock.now();
        match m {
            SpeechMsg::Begin(meta) => {
                let ev = Event::Begin {
                    id: meta.id,
                    priority: meta.priority,
                    born: self.clock.at(meta.trigger),
                    // a request the model works on (an answer given without it has no resolution)
                    acknowledge: matches!(
                        meta.kind,
                        Kind::Detail | Kind::Answer | Kind::Changed | Kind::Read
                    ) && !meta.repeat
                        && meta.resolution.is_some(),
                };
                self.ledger.begin(meta);
                let acts = self.policy.on(ev, now);
                self.exec(acts);
            }
            SpeechMsg::Text { id, text } => {
                let Some(meta) = self.ledger.meta(id) else {
                    tracing::debug!("speech: text for unknown narration {id}");
                    return;
                };
                let chunk = Chunk {
                    id,
                    priority: meta.priority,
                    text: text.clone(),
                    born: self.clock.at(meta.trigger),
                    cue: false,
                };
                self.ledger.chunk(id, &text);
                let acts = self.policy.on(Event::Chunk(chunk), now);
                self.exec(acts);
            }
            SpeechMsg::End(end) => {
                let id = end.id;
                self.ledger.end(end);
                let acts = self.policy.on(Event::End { id }, now);
                self.exec(acts);
            }
            SpeechMsg::Silence => {
                let acts = self.policy.on(Event::Silence, now);
                self.exec(acts);
            }
            SpeechMsg::Hush => {
                let acts = self.policy.on(Event::Hush, now);
                self.exec(acts);
            }
            SpeechMsg::Adjust { change, reply } => {
                let _ = reply.send(self.adjust(change));
            }
            SpeechMsg::Flush(done) => self.flushes.push(done),
        }
    }

    fn adjust(&mut self, change: VoiceChange) -> Result<Voice, String> {
        let mut v = self.voice.clone();
        if let Some(r) = change.rate {
            if !(-100..=100).contains(&r) {
                return Err(format!("rate {r}: from -100 (slowest) to 100 (fastest)"));
            }
            v.rate = r;
        }
        if let Some(r) = change.volume {
            if !(-100..=100).contains(&r) {
                return Err(format!("volume {r}: from -100 (quietest) to 100 (loudest)"));
            }
            v.volume = r;
        }
        if let Some(name) = change.voice {
            v.voice = name.trim().to_string();
        }
        self.sink.adjust(&v).map_err(|e| e.to_string())?;
        tracing::info!(
            "speech: rate {}, volume {}, voice {:?} from now on",
            v.rate,
            v.volume,
            v.voice
        );
        self.voice = v.clone();
        self.stats.set_speech_voice(&v);
        Ok(v)
    }

    fn exec(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Speak(c) => {
                    let kind = self.ledger.kind(c.id).unwrap_or(Kind::Notice);
                    match self.sink.speak(&c.text, kind, c.priority) {
                        Ok(()) => {
                            let now = Instant::now();
                            self.speaking_since = Some(now);
                            self.ledger.spoke(&c, now);
                        }
                        Err(e) => {
                            if !self.warned_error {
                                tracing::warn!("speech: {e}");
                                self.warned_error = true;
                            }
                            self.ledger.dropped(&c, &format!("speech failed: {e}"));
                            let acts = self.policy.on(Event::Finished, self.clock.now());
                            self.exec(acts);
                        }
                    }
                }
                Action::Stop(c, why) => {
                    if let Err(e) = self.sink.stop() {
                        tracing::warn!("speech: cannot stop: {e}");
                    }
                    self.speaking_since = None;
                    self.ledger.stopped(&c, &why);
                }
                Action::Drop(c, why) => self.ledger.dropped(&c, &why.to_string()),
            }
        }
    }

    /// Notices the end of the current utterance (said, or cut short by other speech), gives up on
    /// a stuck backend, drops stale sentences.
    pub fn poll(&mut self) {
        if let Some(c) = self.policy.speaking().cloned() {
            let progress = match self.sink.poll() {
                Ok(Progress::Speaking) => {
                    let since = *self.speaking_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > last_resort_limit(&c.text) {
                        if !self.warned_timeout {
                            tracing::warn!(
                                "speech: {} never reported the end of an utterance; moving on (is its audio output working?)",
                                self.sink.name()
                            );
                            self.warned_timeout = true;
                        }
                        let _ = self.sink.stop();
                        Some(Progress::Cut {
                            began: false,
                            why: format!(
                                "not heard: {} never finished it (no audio output?)",
                                self.sink.name()
                            ),
                        })
                    } else {
                        None
                    }
                }
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!("speech: {e}");
                    Some(Progress::Cut {
                        began: true,
                        why: format!("not heard in full: {e}"),
                    })
                }
            };
            if let Some(p) = progress {
                self.speaking_since = None;
                let ev = match p {
                    Progress::Cut { began: true, why } => {
                        self.ledger.cut(&c, &why);
                        Event::Interrupted { began: true }
                    }
                    Progress::Cut { began: false, why } => {
                        // a notice is tried again (the policy queues it anew): not dropped yet
                        if c.priority != Priority::Notice {
                            self.ledger.dropped(&c, &why);
                        } else {
                            tracing::debug!("speech: notice waits for its turn: {why}");
                        }
                        Event::Interrupted { began: false }
                    }
                    _ => {
                        self.ledger.finished(&c);
                        Event::Finished
                    }
                };
                let acts = self.policy.on(ev, self.clock.now());
                self.exec(acts);
            }
        }
        let acts = self.policy.on(Event::Tick, self.clock.now());
        self.exec(acts);
    }

    /// True when nothing is being said or waiting.
    pub fn is_idle(&self) -> bool {
        self.policy.is_idle()
    }
}
