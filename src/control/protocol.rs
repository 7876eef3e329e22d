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
                "{e}; a request is one JSON object per line such as {{\"cmd\":\"status\"}} (commands: describe, ask, repeat, changed, read, pause, resume, hush, rate, volume, voice, status, stop)"
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
    Ok(req)
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
        ] {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(parse_request(line.as_bytes()), Ok(r), "{line}");
        }
        assert_eq!(
            serde_json::to_string(&Request::Describe { wait: true }).unwrap(),
            r#"{"cmd":"describe"}"#
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
