//! Narrations and the narration log: one JSON line per spoken or suppressed narration (time, kind,
//! status, text, resolution, frame number, latency figures), appended and flushed line by line so
//! nothing is lost on a crash or shutdown. No image is ever written anywhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What a narration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The view changed: a short description.
    Scene,
    /// The user asked for a detailed description.
    Detail,
    /// The answer to a user's question.
    Answer,
    /// A message from scenesay itself ("camera not found", "paused").
    Notice,
    /// What is different from the last description (`scenesay ctl changed`).
    Changed,
    /// The text in view, read out (`scenesay ctl read`).
    Read,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Scene => "scene",
            Kind::Detail => "detail",
            Kind::Answer => "answer",
            Kind::Notice => "notice",
            Kind::Changed => "changed",
            Kind::Read => "read",
        }
    }
}

/// How urgently a narration should be heard: the user's own requests first, then scenesay's
/// notices, then scene narrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Scene,
    Notice,
    User,
}

/// Process-wide unique narration number (0 is never handed out).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NarrationId(pub u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl NarrationId {
    pub fn next() -> Self {
        NarrationId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for NarrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What finally happened to a narration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every sentence was spoken.
    Spoken,
    /// Speaking started but was cut short (a detail request, pause, shutdown).
    Interrupted,
    /// Nothing of it was spoken (stale, superseded, cancelled, failed).
    Suppressed,
}

/// Latency figures in milliseconds, measured from the narration's trigger (the frame's capture for
/// a scene, the request for a detail or an answer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_text: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_speech: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
}

/// One line of the narration log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 UTC time at which the narration was triggered.
    pub time: String,
    pub id: NarrationId,
    pub kind: Kind,
    pub status: Status,
    /// Why it was not (fully) spoken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// Square side the model looked at, when the model was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<u32>,
    /// Capture number of the frame described.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// The generation was cancelled before its end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    pub latency_ms: Latency,
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The append-only narration log. Write failures are reported once and never stop narration.
pub struct NarrationLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    failed: bool,
}

impl NarrationLog {
    /// Opens (creating folders as needed) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            failed: false,
        })
    }

    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self {
            path: PathBuf::new(),
            file: None,
            failed: false,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|_| self.path.as_path())
    }

    /// Appends one record as one line, in a single write, and flushes it to the file.
    pub fn append(&mut self, r: &Record) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let mut line = match serde_json::to_string(r) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("narration log: cannot encode a record: {e}");
                return;
            }
        };
        line.push('\n');
        let res = f.write_all(line.as_bytes()).and_then(|_| f.flush());
        match res {
            Ok(()) => {
                if self.failed {
                    tracing::info!("narration log {}: writing again", self.path.display());
                    self.failed = false;
                }
            }
            Err(e) => {
                if !self.failed {
                    tracing::warn!(
                        "narration log {}: cannot write ({e}); narration goes on without it",
                        self.path.display()
                    );
                    self.failed = true;
                }
            }
        }
    }

    /// Flushes the file's data to the disk.
    pub fn sync(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Record {
        Record {
            time: rfc3339(SystemTime::UNIX_EPOCH),
            id: NarrationId(3),
            kind: Kind::Scene,
            status: Status::Spoken,
            reason: None,
            text: text.into(),
            question: None,
            resolution: Some(256),
            frame: Some(12),
            repeat: false,
            cancelled: false,
            tokens: Some(5),
            latency_ms: Latency {
                first_text: Some(10.0),
                ..Default::default()
            },
        }
    }

    #[test]
    fn records_are_single_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/narration.jsonl");
        let mut log = NarrationLog::open(&p).unwrap();
        log.append(&record("a kitchen\nwith a table"));
        log.append(&record("a street"));
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let r: Record = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(r.text, "a kitchen\nwith a table");
        assert_eq!(r, record("a kitchen\nwith a table"));
        assert!(lines[1].contains(r#""kind":"scene""#), "{}", lines[1]);
        assert!(
            lines[1].starts_with(r#"{"time":"1970-01-01T00:00:00.000Z""#),
            "{}",
            lines[1]
        );
        assert!(!lines[1].contains("question"), "absent fields are left out");
    }

    #[test]
    fn appending_keeps_earlier_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.jsonl");
        NarrationLog::open(&p).unwrap().append(&record("one"));
        NarrationLog::open(&p).unwrap().append(&record("two"));
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 2);
    }

    #[test]
    fn ids_are_unique() {
        let a = NarrationId::next();
        let b = NarrationId::next();
        assert!(b > a);
    }
}
