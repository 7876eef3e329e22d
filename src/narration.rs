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

/// How big the narration log may grow and how long what it holds is kept (`[log] max_mb`, `keep`,
/// `keep_days`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogLimits {
    /// The file is rotated before a line would take it past this size; 0 = no cap.
    pub max_bytes: u64,
    /// Rotated files kept (`narration.jsonl.1` newest … `.N` oldest); 0 = none.
    pub keep: u32,
    /// Lines older than this many days are dropped (from every file); 0 = kept forever.
    pub keep_days: f64,
}

/// How often the log looks for lines older than `keep_days` while scenesay runs.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The append-only narration log. Write failures never stop narration: a full disk is reported
/// once (a line cut short by it is taken back, so the file keeps only whole lines) and writing
/// resumes when there is room again; a log file that is removed or replaced while scenesay runs is
/// noticed at the next line and created again. With [`LogLimits`] the file is rotated at whole
/// lines only (a line is never split between two files) and old lines are dropped.
pub struct NarrationLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Device and inode of the open file, to notice that the path no longer leads to it.
    identity: Option<(u64, u64)>,
    failed: bool,
    /// Lines lost since the last failure was reported.
    lost: u64,
    limits: LogLimits,
    last_prune: Option<std::time::Instant>,
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Opens `path` for appending; what it creates is private (folders 0700, the file 0600): the log
/// tells what is around the user. The file is never reached through a symbolic link, and in a
/// folder others can write to it must be our own ([`crate::private_files`]); the fallback folder
/// under the shared temporary folder must be a real folder of ours, closed to others.
pub(crate) fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        if dir == crate::config::private_tmp_dir() {
            crate::private_files::private_dir(dir)?;
        } else if !dir.as_os_str().is_empty() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    crate::private_files::open_append(path)
}

/// `narration.jsonl.N`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The rotated files of `path` that exist, by number.
fn rotated_files(path: &Path) -> Vec<(u32, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return vec![];
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let num: u32 = n.strip_prefix(&prefix)?.parse().ok()?;
            Some((num, rotated(path, num)))
        })
        .collect();
    v.sort();
    v
}

/// The time of a log line (`None` when it has none that parses).
fn line_time(line: &str) -> Option<SystemTime> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    humantime::parse_rfc3339(v.get("time")?.as_str()?).ok()
}

/// Drops the lines of the file `p` older than `cutoff` (a line without a readable time is kept).
/// The file is rewritten through a new file renamed over it, so it never holds half a line;
/// returns whether it changed, and removes it when nothing is left.
fn prune_file(p: &Path, cutoff: SystemTime) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    // Only a regular file holds old lines: a device (`/dev/full`, `/dev/stdout`), a pipe or a
    // link is never read (a device may never end) nor replaced.
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let old = |l: &str| line_time(l).is_some_and(|t| t < cutoff);
    if !text.lines().any(old) {
        return Ok(false);
    }
    let kept: String = text
        .split_inclusive('\n')
        .filter(|l| !old(l.trim_end_matches('\n')))
        .collect();
    if kept.trim().is_empty() {
        std::fs::remove_file(p)?;
        return Ok(true);
    }
    let mut tmp = p.as_os_str().to_os_string();
    tmp.push(".pruning");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(kept.as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, p)?;
    Ok(true)
}

impl NarrationLog {
    /// Opens (creating folders as needed) `path` for appending, without size or age limits.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_with(path, LogLimits::default())
    }

    /// Opens `path` for appending with `limits`: lines older than `keep_days` are dropped now (and
    /// every hour), the file is rotated when a line would take it past `max_bytes`.
    pub fn open_with(path: &Path, limits: LogLimits) -> std::io::Result<Self> {
        let mut log = Self {
            path: path.to_path_buf(),
            file: None,
            identity: None,
            failed: false,
            lost: 0,
            limits,
            last_prune: None,
        };
        log.prune(SystemTime::now());
        let file = open_append(path)?;
        log.identity = file.metadata().ok().map(|m| identity(&m));
        log.file = Some(file);
        Ok(log)
    }

    /// Drops lines older than `keep_days` (before `now`) from the log and its rotated files, and
    /// rotated files beyond `keep`.
    pub fn prune(&mut self, now: SystemTime) {
        self.last_prune = Some(std::time::Instant::now());
        for (n, p) in rotated_files(&self.path) {
            if n > self.limits.keep {
                match std::fs::remove_file(&p) {
                    Ok(()) => tracing::info!(
                        "narration log: removed {} (`[log] keep` = {})",
                        p.display(),
                        self.limits.keep
                    ),
                    Err(e) => tracing::warn!("narration log: cannot remove {}: {e}", p.display()),
                }
            }
        }
        if self.limits.keep_days <= 0.0 {
            return;
        }
        let Some(cutoff) = now.checked_sub(std::time::Duration::from_secs_f64(
            self.limits.keep_days * 86_400.0,
        )) else {
            return;
        };
        let mut files: Vec<PathBuf> = rotated_files(&self.path)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        files.push(self.path.clone());
        for p in files {
            match prune_file(&p, cutoff) {
                Ok(true) => {
                    tracing::info!(
                        "narration log {}: dropped lines older than {} days (`[log] keep_days`)",
                        p.display(),
                        self.limits.keep_days
                    );
                    if p == self.path && self.file.is_some() {
                        // the live file was rewritten (or removed): continue in the new one
                        match open_append(&self.path) {
                            Ok(f) => {
                                self.identity = f.metadata().ok().map(|m| identity(&m));
                                self.file = Some(f);
                            }
                            Err(e) => tracing::warn!(
                                "narration log {}: cannot reopen it: {e}",
                                self.path.display()
                            ),
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("narration log {}: cannot drop old lines: {e}", p.display())
                }
            }
        }
    }

    /// Moves the current file to `.1` (and `.1` to `.2` …, dropping what is beyond `keep`) and
    /// starts a new one. Called between two lines only.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.file.as_mut() {
            let _ = f.sync_data();
        }
        let keep = self.limits.keep;
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let oldest = rotated(&self.path, keep);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            for n in (1..keep).rev() {
                let from = rotated(&self.path, n);
                if std::fs::symlink_metadata(&from).is_ok() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        let f = open_append(&self.path)?;
        self.identity = f.metadata().ok().map(|m| identity(&m));
        self.file = Some(f);
        tracing::info!(
            "narration log {}: reached {} bytes (`[log] max_mb`), started a new file",
            self.path.display(),
            self.limits.max_bytes
        );
        Ok(())
    }

    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self {
            path: PathBuf::new(),
            file: None,
            identity: None,
            failed: false,
            lost: 0,
            limits: LogLimits::default(),
            last_prune: None,
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
        if self.limits.keep_days > 0.0 && self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        {
            self.prune(SystemTime::now());
        }
        self.follow_path();
        if self.limits.max_bytes > 0 {
            let size = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len());
            if let Some(size) = size {
                if size > 0 && size + line.len() as u64 > self.limits.max_bytes {
                    if let Err(e) = self.rotate() {
                        tracing::warn!(
                            "narration log {}: cannot rotate ({e}); writing on to the same file",
                            self.path.display()
                        );
                    }
                }
            }
        }
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

    /// A record numbered `n`, triggered `age_days` ago.
    fn numbered(n: u64, age_days: f64) -> Record {
        let mut r = record(&format!("narration number {n} of the rotation test"));
        r.id = NarrationId(n);
        r.time =
            rfc3339(SystemTime::now() - std::time::Duration::from_secs_f64(age_days * 86_400.0));
        r
    }

    fn ids_in(p: &Path) -> Vec<u64> {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|l| serde_json::from_str::<Record>(l).unwrap().id.0)
            .collect()
    }

    #[test]
    fn the_log_rotates_between_lines_and_keeps_what_it_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.jsonl");
        let line_len = serde_json::to_string(&numbered(10, 0.0)).unwrap().len() as u64 + 1;
        // room for three and a half lines: a fourth line does not fit
        let cap = line_len * 7 / 2;
        let limits = LogLimits {
            max_bytes: cap,
            keep: 2,
            keep_days: 0.0,
        };
        let mut log = NarrationLog::open_with(&p, limits).unwrap();
        for n in 10..40 {
            log.append(&numbered(n, 0.0));
        }
        let (live, one, two) = (ids_in(&p), ids_in(&rotated(&p, 1)), ids_in(&rotated(&p, 2)));
        assert!(!rotated(&p, 3).exists(), "keep = 2");
        // each file holds whole lines only, at most the cap, and was rotated only when the next
        // line would not fit
        for f in [rotated(&p, 1), rotated(&p, 2)] {
            let len = std::fs::metadata(&f).unwrap().len();
            assert!(len <= cap && len + line_len > cap, "{len} of {cap}");
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= cap);
        // together, oldest to newest, they are the last lines written, none missing or doubled
        let all: Vec<u64> = [two, one, live].concat();
        let expected: Vec<u64> = (40 - all.len() as u64..40).collect();
        assert_eq!(all, expected);
        assert_eq!(all.len(), 9, "three lines in each of three files");

        // keep = 0: the full file is dropped, nothing else is kept
        let q = dir.path().join("z.jsonl");
        let mut log = NarrationLog::open_with(&q, LogLimits { keep: 0, ..limits }).unwrap();
        for n in 0..7 {
            log.append(&numbered(n, 0.0));
        }
        assert_eq!(ids_in(&q), [6]);
        assert!(!rotated(&q, 1).exists());
    }

    #[test]
    fn a_lowered_keep_removes_the_extra_rotated_files_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.jsonl");
        for n in 1..=4 {
            std::fs::write(rotated(&p, n), "").unwrap();
        }
        let limits = LogLimits {
            max_bytes: 4096,
            keep: 2,
            keep_days: 0.0,
        };
        NarrationLog::open_with(&p, limits).unwrap();
        let left: Vec<u32> = rotated_files(&p).into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, [1, 2]);
    }

    #[test]
    fn lines_older_than_keep_days_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.jsonl");
        let mut w = NarrationLog::open(&p).unwrap();
        for (n, age) in [(1, 40.0), (2, 31.0), (3, 29.0), (4, 0.5)] {
            w.append(&numbered(n, age));
        }
        // a rotated file with only old lines goes; one with a newer line keeps it
        let r1 = rotated(&p, 1);
        let r2 = rotated(&p, 2);
        let mut w1 = NarrationLog::open(&r1).unwrap();
        w1.append(&numbered(5, 45.0));
        w1.append(&numbered(6, 2.0));
        let mut w2 = NarrationLog::open(&r2).unwrap();
        w2.append(&numbered(7, 60.0));
        let limits = LogLimits {
            max_bytes: 0,
            keep: 3,
            keep_days: 30.0,
        };
        let mut log = NarrationLog::open_with(&p, limits).unwrap();
        assert_eq!(ids_in(&p), [3, 4]);
        assert_eq!(ids_in(&r1), [6]);
        assert!(!r2.exists());
        // the log goes on in the rewritten file, private as before
        log.append(&numbered(8, 0.0));
        assert_eq!(ids_in(&p), [3, 4, 8]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // keep_days = 0: nothing is dropped for its age
        let q = dir.path().join("q.jsonl");
        NarrationLog::open(&q).unwrap().append(&numbered(9, 400.0));
        NarrationLog::open_with(&q, LogLimits::default()).unwrap();
        assert_eq!(ids_in(&q), [9]);
    }

    #[test]
    fn a_link_planted_at_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let p = dir.path().join("n.jsonl");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = NarrationLog::open(&p).err().expect("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    }

    #[test]
    fn ids_are_unique() {
        let a = NarrationId::next();
        let b = NarrationId::next();
        assert!(b > a);
    }
}
