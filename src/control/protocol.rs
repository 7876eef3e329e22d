//! The control protocol spoken over the daemon's Unix socket: newline-delimited JSON, one
//! [`Request`] object per line from the client, one [`Response`] object per line back, in order.
//! A connection may carry any number of requests. A line that is not a valid request gets an
//! `error` response and the connection stays usable.
//!
//! ```text
//! → {"cmd":"describe"}
//! ← {"reply":"narration","kind":"detail","text":"A desk with …","resolution":1024,"frame":812,"latency_ms":{…}}
//! → {"cmd":"ask","question":"What colour is the mug?"}
//! → {"cmd":"status"}
//! ← {"reply":"status","uptime_s":63.2,"frames":{"captured":120,…},…}
//! → {"cmd":"dance"}
//! ← {"reply":"error","code":"bad_request","message":"unknown variant `dance`, expected one of …"}
//! ```

use serde::{Deserialize, Serialize};

use crate::narration::{Kind, Latency};

/// Longest accepted request line, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Describe the current view in detail (at `detail_resolution` with `detail_prompt`),
    /// interrupting whatever is being said. With `wait` (the default) the reply is the
    /// description; otherwise `accepted` at once.
    Describe {
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        wait: bool,
    },
    /// Answer a question about the current view (at `detail_resolution`).
    Ask {
        question: String,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        wait: bool,
    },
    /// Say the last narration again.
    Repeat {},
    /// Say what is different from the last description (at `detail_resolution`).
    Changed {
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        wait: bool,
    },
    /// Read out the text in view (at `read_resolution`).
    Read {
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        wait: bool,
    },
    /// Stop scene narration (requests are still answered).
    Pause {},
    /// Resume scene narration.
    Resume {},
    /// Stop speaking now and drop what waits to be said; narration goes on.
    Hush {},
    /// Speaking rate from now on (until restart): -100 (slowest) … 0 … 100 (fastest).
    Rate { value: i32 },
    /// Volume from now on (until restart): -100 (quietest) … 0 … 100 (loudest).
    Volume { value: i32 },
    /// Voice from now on (until restart): a voice name of the backend; empty = its default.
    Voice { name: String },
    /// The daemon's state and counters.
    Status {},
    /// Shut the daemon down cleanly.
    Stop {},
    /// Watch for a condition ("the kettle light is off"): say once when it turns true.
    Watch { condition: String },
    /// The watches that are set.
    Watches {},
    /// Remove watch `id`.
    Unwatch { id: u32 },
    /// Past views whose description matches `query` ("my keys"), with when.
    Recall {
        query: String,
        #[serde(default = "three", skip_serializing_if = "is_three")]
        limit: usize,
    },
    /// Earlier times the current view was seen (by its scene embedding).
    RecallView {
        #[serde(default = "three", skip_serializing_if = "is_three")]
        limit: usize,
    },
    /// Delete the visual memory: everything, or what is older than `older_than_s` seconds.
    Forget {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        older_than_s: Option<f64>,
    },
    /// Start a new conversation: the next `ask` is not a follow-up of the last answer.
    New {},
    /// When scenes are narrated from now on (until restart): `change` or `periodic` (every
    /// `[scene] period_s`); without `mode`, the other one.
    Mode {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<crate::config::SceneMode>,
    },
}

fn three() -> usize {
    3
}

fn is_three(n: &usize) -> bool {
    *n == 3
}

/// Most views one recall lists.
pub const MAX_RECALL: usize = 20;

/// One watch, as `watches` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchInfo {
    pub id: u32,
    pub condition: String,
    /// "waiting" or "true" (turned true and said; armed again after a clear no).
    pub state: String,
    /// The last check's P(yes) / (P(yes) + P(no)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_score: Option<f64>,
    pub checks: u64,
    /// How many times it turned true.
    pub fired: u64,
}

/// What went wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not a known command, a missing or unknown field, an empty question.
    BadRequest,
    /// The line is longer than [`MAX_LINE`] bytes.
    TooLong,
    /// Too many requests are waiting; try again.
    Busy,
    /// No frame has been captured yet.
    NoFrame,
    /// A newer request took over before this one finished.
    Superseded,
    /// The model failed.
    Failed,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The connecting user is neither the daemon's user nor root.
    Forbidden,
}

/// The daemon's reply to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// Done (pause, resume, stop), or queued (describe / ask without `wait`).
    Accepted {
        message: String,
    },
    /// A description or an answer, as spoken.
    Narration {
        kind: Kind,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolution: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame: Option<u64>,
        latency_ms: Latency,
    },
    /// See [`StatusReport`].
    Status(Box<StatusReport>),
    /// The speech settings now in use (after `rate`, `volume`, `voice`).
    Speech(crate::speech::Voice),
    /// The watches that are set (`watches`).
    Watches {
        watches: Vec<WatchInfo>,
    },
    /// Recalled views (`recall`, `recall_view`): `answer` is what was said, `found` best first.
    Recall {
        search: crate::memory::Search,
        answer: String,
        found: Vec<crate::memory::Recalled>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }

    pub fn accepted(message: impl Into<String>) -> Self {
        Response::Accepted {
            message: message.into(),
        }
    }
}

/// Frame counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameCounts {
    /// Frames delivered by the source.
    pub captured: u64,
    /// Frames the scene watch looked at (view checks, then the embedding of a clear view).
    pub watched: u64,
    /// Frames the model described (scene, detail, answer).
    pub described: u64,
    /// Frames replaced by a fresher one before the model could look at them.
    pub dropped: u64,
    /// Clear frames the scene encoder looked at (`[scene] resolution`).
    #[serde(default)]
    pub encoded: u64,
    /// Clear frames the change gate kept from the encoder: they showed what the last encoded
    /// frame showed.
    #[serde(default)]
    pub gated: u64,
    /// Camera buffers that could not be decoded (cut off, corrupt): skipped, not a reconnect.
    #[serde(default)]
    pub bad: u64,
}

/// The daemon's share of the processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuShare {
    /// Processor time used, as a percentage of one core (200 = two cores fully busy).
    pub percent_of_one_core: f64,
    /// Over this many seconds (the last minute, or since the start when younger).
    pub window_s: f64,
}

/// The last narration heard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastNarration {
    pub time: String,
    pub kind: Kind,
    pub text: String,
}

/// One recent narration's latency figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentLatency {
    pub kind: Kind,
    #[serde(flatten)]
    pub latency_ms: Latency,
}

/// `status` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub uptime_s: f64,
    /// "watching", "paused", "describing scene", "describing detail", "answering", "starting".
    pub state: String,
    pub paused: bool,
    /// The frame source and its condition.
    pub source: String,
    pub source_state: String,
    pub speech_backend: String,
    /// Rate, volume, voice and language in use (`scenesay ctl rate|volume|voice` change them).
    #[serde(default)]
    pub speech: crate::speech::Voice,
    pub frames: FrameCounts,
    /// How fast frames are taken: "full" (`fps`), "idle" (a static view, `idle_fps`), "paused"
    /// (the camera is released).
    #[serde(default)]
    pub pace: String,
    /// Processor time over the last minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuShare>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_narration: Option<LastNarration>,
    /// Most recent last.
    pub recent_latencies: Vec<RecentLatency>,
    /// Why narration is paused: "by hand", "screen locked", "lid closed", "going to sleep",
    /// "session in the background"; empty while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused_by: Vec<String>,
    /// Whether the login session is followed ("following logind session 3", "not followed: …").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
}

/// A request that cannot be served, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<RequestError> for Response {
    fn from(e: RequestError) -> Self {
        Response::Error {
            code: e.code,
            message: e.message,
        }
    }
}

/// Parses one request line; the error becomes the reply.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > MAX_LINE {
        return Err(RequestError::new(
            ErrorCode::TooLong,
            format!("request longer than {MAX_LINE} bytes"),
        ));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| RequestError::new(ErrorCode::BadRequest, "request is not valid UTF-8"))?;
    let req: Request = serde_json::from_str(text.trim()).map_err(|e| {
        RequestError::new(
            ErrorCode::BadRequest,
            format!(
                "{e}; a request is one JSON object per line such as {{\"cmd\":\"status\"}} (commands: describe, ask, repeat, changed, read, pause, resume, hush, rate, volume, voice, status, stop, watch, watches, unwatch, recall, recall_view, forget, new, mode)"
            ),
        )
    })?;
    if let Request::Ask { question, .. } = &req {
        if question.trim().is_empty() {
            return Err(RequestError::new(
                ErrorCode::BadRequest,
                "the question is empty",
            ));
        }
    }
    check_memory_request(&req)?;
    Ok(req)
}

/// The checks of `watch`, `recall`, `recall_view` and `forget`.
fn check_memory_request(req: &Request) -> Result<(), RequestError> {
    let bad = |m: &str| Err(RequestError::new(ErrorCode::BadRequest, m));
    match req {
        Request::Watch { condition } if condition.trim().is_empty() => {
            bad("the condition is empty: say what to watch for, e.g. \"the kettle light is off\"")
        }
        Request::Recall { query, .. } if query.trim().is_empty() => {
            bad("the query is empty: say what to recall, e.g. \"my keys\"")
        }
        Request::Recall { limit, .. } | Request::RecallView { limit }
            if !(1..=MAX_RECALL).contains(limit) =>
        {
            bad("limit must be 1 to 20")
        }
        Request::Forget {
            older_than_s: Some(s),
        } if !(s.is_finite() && (0.0..=1e10).contains(s)) => {
            bad("older_than_s must be a number of seconds from 0 to 1e10")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request(br#"{"cmd":"describe"}"#),
            Ok(Request::Describe { wait: true })
        );
        assert_eq!(
            parse_request(br#" {"cmd":"ask","question":"Is the door open?","wait":false} "#),
            Ok(Request::Ask {
                question: "Is the door open?".into(),
                wait: false
            })
        );
        assert_eq!(parse_request(br#"{"cmd":"stop"}"#), Ok(Request::Stop {}));
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Describe { wait: true },
            Request::Describe { wait: false },
            Request::Ask {
                question: "q".into(),
                wait: true,
            },
            Request::Repeat {},
            Request::Changed { wait: true },
            Request::Read { wait: false },
            Request::Pause {},
            Request::Resume {},
            Request::Hush {},
            Request::Rate { value: -20 },
            Request::Volume { value: 50 },
            Request::Voice {
                name: "MALE1".into(),
            },
            Request::Status {},
            Request::Stop {},
            Request::Watch {
                condition: "the door is open".into(),
            },
            Request::Watches {},
            Request::Unwatch { id: 2 },
            Request::Recall {
                query: "my keys".into(),
                limit: 3,
            },
            Request::RecallView { limit: 5 },
            Request::Forget { older_than_s: None },
            Request::Forget {
                older_than_s: Some(7200.0),
            },
        ] {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(parse_request(line.as_bytes()), Ok(r), "{line}");
        }
        assert_eq!(
            serde_json::to_string(&Request::Describe { wait: true }).unwrap(),
            r#"{"cmd":"describe"}"#
        );
    }

    #[test]
    fn new_conversation_and_mode_requests() {
        assert_eq!(
            parse_request(br#"{"cmd":"mode","mode":"periodic"}"#),
            Ok(Request::Mode {
                mode: Some(crate::config::SceneMode::Periodic)
            })
        );
        assert_eq!(
            parse_request(br#"{"cmd":"mode"}"#),
            Ok(Request::Mode { mode: None })
        );
        assert!(parse_request(br#"{"cmd":"mode","mode":"often"}"#).is_err());
        assert_eq!(parse_request(br#"{"cmd":"new"}"#), Ok(Request::New {}));
        assert_eq!(
            serde_json::to_string(&Request::New {}).unwrap(),
            r#"{"cmd":"new"}"#
        );
    }

    fn code(line: &[u8]) -> ErrorCode {
        match parse_request(line) {
            Err(RequestError { code, .. }) => code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert_eq!(code(b"hello"), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"cmd":"dance"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"cmd":"ask"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(br#"{"cmd":"ask","question":"  "}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(br#"{"cmd":"status","extra":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(br#"{"cmd":"describe","wait":"yes"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(b"{\"cmd\":\"st\xffatus\"}"), ErrorCode::BadRequest);
        assert_eq!(code(&vec![b' '; MAX_LINE + 1]), ErrorCode::TooLong);
        assert_eq!(code(br#"{"cmd":"status""#), ErrorCode::BadRequest);
    }

    #[test]
    fn memory_requests_are_checked() {
        assert_eq!(
            parse_request(br#"{"cmd":"recall","query":"my keys"}"#),
            Ok(Request::Recall {
                query: "my keys".into(),
                limit: 3
            })
        );
        assert_eq!(
            parse_request(br#"{"cmd":"forget"}"#),
            Ok(Request::Forget { older_than_s: None })
        );
        assert_eq!(
            code(br#"{"cmd":"watch","condition":" "}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(br#"{"cmd":"watch"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"cmd":"unwatch","id":-1}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(br#"{"cmd":"recall","query":""}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(br#"{"cmd":"recall_view","limit":0}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(br#"{"cmd":"forget","older_than_s":-5}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn responses_are_tagged() {
        let r = Response::error(ErrorCode::Busy, "later");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"reply":"error","code":"busy","message":"later"}"#
        );
        let back: Response = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
