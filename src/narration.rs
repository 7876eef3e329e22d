//! Narrations and the narration log: one JSON line per spoken or suppressed narration (time, kind,
//! status, text, resolution, frame number, latency figures), appended and flushed line by line so
//! nothing is lost on a crash or shutdown. No image is ever written anywhere; the log itself is
//! created private (0600).

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

/// The append-only narration log. Write failures never stop narration: a full disk is reported
/// once (a line cut short by it is taken back, so the file keeps only whole lines) and writing
/// resumes when there is room again; a log file that is removed or replaced while scenesay runs is
/// noticed at the next line and created again.
pub struct NarrationLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Device and inode of the open file, to notice that the path no longer leads to it.
    identity: Option<(u64, u64)>,
    failed: bool,
    /// Lines lost since the last failure was reported.
    lost: u64,
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Opens `path` for appending; what it creates is private (folders 0700, the file 0600): the log
/// tells what is around the user.
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl NarrationLog {
    /// Opens (creating folders as needed) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let identity = file.metadata().ok().map(|m| identity(&m));
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            identity,
            failed: false,
            lost: 0,
        })
    }

    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self {
            path: PathBuf::new(),
            file: None,
            identity: None,
            failed: false,
            lost: 0,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|_| self.path.as_path())
    }

    /// True while lines cannot be written (until a write works again).
    pub fn failing(&self) -> bool {
        self.failed
    }

    /// Reopens the file when its path no longer leads to the open file (removed, renamed away or
    /// replaced, e.g. by log rotation).
    fn follow_path(&mut self) {
        let Some(open) = self.identity else { return };
        let now = std::fs::metadata(&self.path).ok().map(|m| identity(&m));
        if now == Some(open) {
            return;
        }
        tracing::warn!(
            "narration log {}: the file was {}; starting a new one",
            self.path.display(),
            if now.is_none() { "removed" } else { "replaced" }
        );
        match open_append(&self.path) {
            Ok(f) => {
                self.identity = f.metadata().ok().map(|m| identity(&m));
                self.file = Some(f);
            }
            Err(e) => {
                // keep the old handle: its lines are lost, but the next line tries again
                tracing::warn!(
                    "narration log {}: cannot create it again ({e}); narration goes on without it",
                    self.path.display()
                );
            }
        }
    }

    /// Appends one record as one line, in a single write, and flushes it to the file.
    pub fn append(&mut self, r: &Record) {
        if self.file.is_none() {
            return;
        }
        let mut line = match serde_json::to_string(r) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("narration log: cannot encode a record: {e}");
                return;
            }
        };
        line.push('\n');
        self.follow_path();
        let Some(f) = self.file.as_mut() else { return };
        // where this line starts, to take back a part written before the disk filled up
        let start = f.metadata().map(|m| m.len()).ok();
        let res = f.write_all(line.as_bytes()).and_then(|_| f.flush());
        match res {
            Ok(()) => {
                if self.failed {
                    tracing::info!(
                        "narration log {}: writing again ({} line{} could not be written)",
                        self.path.display(),
                        self.lost,
                        if self.lost == 1 { "" } else { "s" }
                    );
                    self.failed = false;
                    self.lost = 0;
                }
            }
            Err(e) => {
                if let Some(start) = start {
                    // a regular file keeps only whole lines (devices such as /dev/full have no length)
                    if f.metadata().is_ok_and(|m| m.is_file() && m.len() > start) {
                        let _ = f.set_len(start);
                    }
                }
                self.lost += 1;
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
    fn a_new_log_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/scenesay/n.jsonl");
        NarrationLog::open(&p).unwrap().append(&record("x"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
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
    fn a_full_disk_is_survived() {
        // /dev/full: every write fails with "no space left on device"
        let mut log = NarrationLog::open(Path::new("/dev/full")).unwrap();
        log.append(&record("one"));
        assert!(log.failing());
        log.append(&record("two"));
        assert!(log.failing());
        assert_eq!(log.lost, 2);
        log.sync();
    }

    #[test]
    fn a_removed_log_file_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.jsonl");
        let mut log = NarrationLog::open(&p).unwrap();
        log.append(&record("one"));
        std::fs::remove_file(&p).unwrap();
        log.append(&record("two"));
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
        // replaced by another file (rotation): the new file gets the next lines
        std::fs::rename(&p, dir.path().join("n.jsonl.1")).unwrap();
        std::fs::write(&p, "").unwrap();
        log.append(&record("three"));
        log.append(&record("four"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("three") && text.contains("four"));
        assert!(!log.failing());
    }

    #[test]
    fn a_log_whose_folder_vanished_keeps_narration_going() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("state");
        let p = sub.join("n.jsonl");
        let mut log = NarrationLog::open(&p).unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        // the folder is created again along with the file
        log.append(&record("after"));
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
    }

    #[test]
    fn ids_are_unique() {
        let a = NarrationId::next();
        let b = NarrationId::next();
        assert!(b > a);
    }
}
