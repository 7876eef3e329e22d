//! The speech-dispatcher backend, spoken to directly over its socket ([`super::ssip`]): the same
//! speech service the Orca screen reader uses, so the user's own voice, rate and audio set-up
//! apply, and so scenesay's speech takes turns with the screen reader's instead of talking over
//! it. Each utterance goes out at an SSIP priority chosen by what it is:
//!
//! | scenesay speech                        | SSIP priority  | beside the screen reader             |
//! |----------------------------------------|----------------|--------------------------------------|
//! | scene narration                        | `notification` | dropped or cut short when it speaks  |
//! | notices ("Camera view is dark.")       | `notification` | the same; tried again until it is    |
//! |                                        |                | heard or stale (`[speech] stale_s`)  |
//! | your requests: describe, ask, read,    | `message`      | waits for its turn, then cuts short  |
//! | changed, repeat (and the cue)          |                | scenesay's own scene narration       |
//!
//! `notification` never cuts anyone short; `text` would cut a screen reader speaking at `text`
//! short, and `important` cuts everyone short: neither is used. The end of each utterance is known from
//! speech-dispatcher's begin / end / cancelled events for that message; every wait has a limit, so
//! a speech-dispatcher whose audio output is broken (it takes the text and never finishes it) is
//! reported as [`SpeechError::Stuck`] instead of hanging the speech thread.

use std::time::{Duration, Instant};

use super::ssip::{self, Client, EventKind, SsipError, SsipPriority};
use super::{Progress, SpeechError, SpeechSink, Voice};
use crate::config::SpeechConfig;
use crate::narration::{Kind, Priority};
use crate::speech::service::utterance_limit;

const NAME: &str = "speech-dispatcher";

/// How long a message may wait for its turn (another program speaking) before speech-dispatcher
/// is presumed stuck.
pub const TURN_LIMIT: Duration = Duration::from_secs(15);

/// How long connecting (and starting speech-dispatcher on demand) may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// The SSIP priority of a narration of `priority` (see the module's table).
pub fn ssip_priority(priority: Priority) -> SsipPriority {
    match priority {
        Priority::Scene => SsipPriority::Notification,
        Priority::Notice => SsipPriority::Notification,
        Priority::User => SsipPriority::Message,
    }
}

fn failed(e: SsipError) -> SpeechError {
    SpeechError::Failed {
        backend: NAME,
        message: e.to_string(),
    }
}

/// The message being said.
#[derive(Debug)]
struct Current {
    msg: u64,
    queued: Instant,
    began: Option<Instant>,
    limit: Duration,
}

pub struct Dispatcher {
    client: Client,
    priority: Option<SsipPriority>,
    current: Option<Current>,
    applied: Voice,
    /// The voice chosen by name, when `voice` is set and speech-dispatcher has it.
    pub voice: Option<String>,
    turn_limit: Duration,
    /// Instead of [`utterance_limit`] (tests).
    fixed_limit: Option<Duration>,
}

impl Dispatcher {
    /// Connects to speech-dispatcher (starting it on demand, as its own client library does) and
    /// applies `rate`, `volume`, `voice` and `language`.
    pub fn open(cfg: &SpeechConfig) -> Result<Self, SpeechError> {
        let client = ssip::connect_or_spawn(CONNECT_LIMIT).map_err(|e| {
            SpeechError::Unavailable {
                backend: NAME,
                message: format!(
                    "{e} (is the speech-dispatcher package installed? `sudo apt install speech-dispatcher`)"
                ),
            }
        })?;
        let mut d = Self {
            client,
            priority: None,
            current: None,
            applied: Voice::default(),
            voice: None,
            turn_limit: TURN_LIMIT,
            fixed_limit: None,
        };
        let unavailable = |e: SsipError| SpeechError::Unavailable {
            backend: NAME,
            message: e.to_string(),
        };
        d.client
            .command("SET self CLIENT_NAME user:scenesay:narration")
            .map_err(unavailable)?;
        for ev in ["BEGIN", "END", "CANCEL"] {
            d.client
                .command(&format!("SET self NOTIFICATION {ev} on"))
                .map_err(unavailable)?;
        }
        let v = Voice::from_config(cfg);
        if let Err(e) = d.adjust(&v) {
            if v.voice.is_empty() || !matches!(e, SpeechError::Failed { .. }) {
                return Err(e);
            }
            // a missing voice is not fatal at start: the default voice for the language speaks
            tracing::warn!("speech: {e}; using its default voice");
            d.adjust(&Voice {
                voice: String::new(),
                ..v
            })?;
        }
        Ok(d)
    }

    /// Shorter time limits (for tests): how long a message may wait for its turn, and how long
    /// it may take once begun.
    pub fn with_limits(mut self, turn: Duration, utterance: Duration) -> Self {
        self.turn_limit = turn;
        self.fixed_limit = Some(utterance);
        self
    }

    /// What speech-dispatcher says about the current message so far.
    fn events(&mut self) -> Result<Option<Progress>, SpeechError> {
        let events = self.client.take_events().map_err(failed)?;
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        for e in events.into_iter().filter(|e| e.msg == cur.msg) {
            match e.kind {
                EventKind::Begin => {
                    cur.began.get_or_insert_with(Instant::now);
                }
                EventKind::End => return Ok(Some(Progress::Finished)),
                EventKind::Cancelled => {
                    return Ok(Some(Progress::Cut {
                        began: cur.began.is_some(),
                        why: if cur.began.is_some() {
                            "cut short by other speech (the screen reader)".into()
                        } else {
                            "not said: other speech (the screen reader) had the turn".into()
                        },
                    }))
                }
            }
        }
        Ok(None)
    }
}

impl SpeechSink for Dispatcher {
    fn name(&self) -> &'static str {
        NAME
    }

    fn speak(&mut self, text: &str, _kind: Kind, priority: Priority) -> Result<(), SpeechError> {
        // events of earlier messages are of no interest any more
        self.current = None;
        self.client.take_events().map_err(failed)?;
        let p = ssip_priority(priority);
        if self.priority != Some(p) {
            self.client
                .command(&format!("SET self PRIORITY {}", p.name()))
                .map_err(failed)?;
            self.priority = Some(p);
        }
        let msg = self.client.speak(text).map_err(failed)?;
        self.current = Some(Current {
            msg,
            queued: Instant::now(),
            began: None,
            limit: self.fixed_limit.unwrap_or_else(|| utterance_limit(text)),
        });
        Ok(())
    }

    fn stop(&mut self) -> Result<(), SpeechError> {
        // a stuck output module never confirms the cancel: forget the message either way
        self.current = None;
        self.client.command("CANCEL self").map_err(failed)?;
        Ok(())
    }

    fn poll(&mut self) -> Result<Progress, SpeechError> {
        if self.current.is_none() {
            self.client.take_events().map_err(failed)?;
            return Ok(Progress::Finished);
        }
        if let Some(done) = self.events()? {
            self.current = None;
            return Ok(done);
        }
        let cur = self.current.as_ref().expect("checked");
        let stuck = match cur.began {
            Some(b) if b.elapsed() > cur.limit => Some((
                true,
                format!(
                    "accepted the sentence but never finished it within {} s (no audio output?)",
                    cur.limit.as_secs()
                ),
            )),
            None if cur.queued.elapsed() > self.turn_limit => Some((
                false,
                format!(
                    "accepted the sentence but never started it within {} s (no audio output?)",
                    self.turn_limit.as_secs()
                ),
            )),
            _ => None,
        };
        match stuck {
            Some((began, message)) => {
                self.current = None;
                let _ = self.client.command("CANCEL self");
                Err(SpeechError::Stuck {
                    backend: NAME,
                    message,
                    began,
                })
            }
            None => Ok(Progress::Speaking),
        }
    }

    fn adjust(&mut self, v: &Voice) -> Result<(), SpeechError> {
        let mut cmds = vec![];
        if v.rate != self.applied.rate {
            cmds.push(format!("SET self RATE {}", v.rate.clamp(-100, 100)));
        }
        if v.volume != self.applied.volume {
            cmds.push(format!("SET self VOLUME {}", v.volume.clamp(-100, 100)));
        }
        if !v.language.is_empty() && v.language != self.applied.language {
            cmds.push(format!("SET self LANGUAGE {}", v.language));
        }
        for c in cmds {
            self.client.command(&c).map_err(failed)?;
        }
        if v.voice != self.applied.voice && !v.voice.is_empty() {
            let voices = self.client.voices().map_err(failed)?;
            let Some((name, _)) = voices
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&v.voice))
            else {
                let names: Vec<&str> = voices.iter().take(12).map(|(n, _)| n.as_str()).collect();
                self.applied = Voice {
                    voice: self.applied.voice.clone(),
                    ..v.clone()
                };
                return Err(SpeechError::Failed {
                    backend: NAME,
                    message: format!(
                        "no voice named {:?} (some of its voices: {}; `spd-say -L` lists them all)",
                        v.voice,
                        names.join(", ")
                    ),
                });
            };
            self.client
                .command(&format!("SET self SYNTHESIS_VOICE {name}"))
                .map_err(failed)?;
            self.voice = Some(name.clone());
        } else if v.voice.is_empty() {
            self.voice = None;
        }
        self.applied = v.clone();
        Ok(())
    }
}
