//! Visual memory: what the daemon has seen, for `scenesay ctl recall`. Every scene narration (and
//! detailed description) the model finished is kept as one JSON line — its time, text and the
//! pooled scene embedding of its frame (8-bit, the vector the scene watch compares) — in a private
//! file in the state folder (`[memory] path`, beside the narration log). No frame is ever kept.
//! The file is capped (`max_mb`: the oldest lines go first), forgets lines older than `keep_days`,
//! and `scenesay ctl forget` empties it (or drops what is older than a given age).
//!
//! Recall is pure ([`recall_text`], [`recall_view`], [`ago`], [`answer`]):
//!
//! - a question in words ("my keys") is matched against the **descriptions' words**: FastVLM has
//!   no text tower whose vectors live in its image space, so a text query cannot be compared with
//!   the image embeddings. Words are taken as the repeat check takes them
//!   ([`crate::policy::dedup::content_words_in`]: filler words dropped, English crudely stemmed,
//!   Chinese and Japanese by character pairs), and a description scores the share of the query's
//!   words it contains.
//! - "have I seen this view before?" compares the current view's **embedding** with the stored
//!   ones: both are the same encoder's pooled image features, so there the comparison is sound.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::narration::{rfc3339, Kind};
use crate::policy::dedup::content_words_in;
use crate::policy::scene::cosine_distance;

/// How big the memory may grow and how long it keeps what it holds (`[memory] max_mb`, `keep_days`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemoryLimits {
    /// Before a line would take the file past this, the oldest lines are dropped (down to three
    /// quarters of it); 0 = no cap.
    pub max_bytes: u64,
    /// Lines older than this many days are dropped; 0 = kept until the cap pushes them out.
    pub keep_days: f64,
}

/// One remembered view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// RFC 3339 UTC time of the frame.
    pub time: String,
    pub kind: Kind,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    /// The pooled scene embedding, quantised to 8 bits (see [`Quantized`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Quantized>,
}

impl Entry {
    pub fn new(
        time: SystemTime,
        kind: Kind,
        text: &str,
        frame: Option<u64>,
        embedding: Option<&[f32]>,
    ) -> Self {
        Self {
            time: rfc3339(time),
            kind,
            text: text.trim().to_string(),
            frame,
            embedding: embedding.map(Quantized::from_f32),
        }
    }

    pub fn at(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.time).ok()
    }
}

/// A vector as signed bytes times a scale: `value[i] ≈ scale · q[i]`, the bytes in base64. A 3072-
/// wide FastVLM embedding takes 4 KB instead of 12 KB as f32; cosine distances move by about 1e-4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantized {
    pub scale: f32,
    pub i8: String,
}

impl Quantized {
    pub fn from_f32(v: &[f32]) -> Self {
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            max / 127.0
        } else {
            1.0
        };
        let bytes: Vec<u8> = v
            .iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8 as u8)
            .collect();
        Self {
            scale,
            i8: base64_encode(&bytes),
        }
    }

    /// The vector again (`None` for a damaged line).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let bytes = base64_decode(&self.i8)?;
        Some(
            bytes
                .into_iter()
                .map(|b| b as i8 as f32 * self.scale)
                .collect(),
        )
    }
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// The memory file, mirrored in memory. Write failures never stop narration: they are logged
/// once and the entry is still recalled until restart.
pub struct Memory {
    path: Option<PathBuf>,
    limits: MemoryLimits,
    /// Oldest first, with the length of each one's line.
    entries: Vec<(Entry, usize)>,
    failed: bool,
    last_prune: Option<std::time::Instant>,
}

/// How often entries older than `keep_days` are looked for while scenesay runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

fn line_of(e: &Entry) -> Option<String> {
    serde_json::to_string(e).ok().map(|mut l| {
        l.push('\n');
        l
    })
}

impl Memory {
    /// A memory that keeps nothing (`[memory] enabled = false`).
    pub fn disabled() -> Self {
        Self {
            path: None,
            limits: MemoryLimits::default(),
            entries: vec![],
            failed: false,
            last_prune: None,
        }
    }

    /// Opens (creating its folder private, as the narration log's) the memory at `path` and reads
    /// what it holds; lines older than `keep_days` and damaged lines are dropped from it now. A
    /// symbolic link at `path` is refused, never followed.
    pub fn open(path: &Path, limits: MemoryLimits) -> std::io::Result<Self> {
        // creates the folder and checks the file as the narration log does
        let f = crate::narration::open_append(path)?;
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{}: is not a regular file; scenesay will not use it",
                    path.display()
                ),
            ));
        }
        drop(f);
        let text = String::from_utf8_lossy(&std::fs::read(path)?).into_owned();
        let mut entries = vec![];
        let mut damaged = 0usize;
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Entry>(l) {
                Ok(e) => entries.push((e, l.len() + 1)),
                Err(_) => damaged += 1,
            }
        }
        let mut m = Self {
            path: Some(path.to_path_buf()),
            limits,
            entries,
            failed: false,
            last_prune: None,
        };
        if damaged > 0 {
            tracing::warn!(
                "memory {}: dropped {damaged} damaged line(s)",
                path.display()
            );
        }
        if m.prune(SystemTime::now()) == 0 && damaged > 0 {
            m.rewrite();
        }
        Ok(m)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn is_enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<&Entry> {
        self.entries.iter().map(|(e, _)| e).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries older than `keep_days` before `now`; returns how many.
    fn prune(&mut self, now: SystemTime) -> usize {
        self.last_prune = Some(std::time::Instant::now());
        if self.limits.keep_days <= 0.0 {
            return 0;
        }
        let Some(cutoff) =
            now.checked_sub(Duration::from_secs_f64(self.limits.keep_days * 86_400.0))
        else {
            return 0;
        };
        self.drop_before(cutoff)
    }

    /// Drops the entries from before `cutoff` (an entry without a readable time is kept) and
    /// rewrites the file when any went; returns how many.
    fn drop_before(&mut self, cutoff: SystemTime) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|(e, _)| e.at().is_none_or(|t| t >= cutoff));
        let gone = before - self.entries.len();
        if gone > 0 {
            self.rewrite();
        }
        gone
    }

    /// Remembers one view; the oldest entries make room when the file would pass its cap.
    pub fn remember(&mut self, e: Entry) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if e.text.is_empty() {
            return;
        }
        let Some(line) = line_of(&e) else { return };
        if self.limits.keep_days > 0.0 && self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        {
            self.prune(SystemTime::now());
        }
        let cap = self.limits.max_bytes;
        let total: usize = self.entries.iter().map(|(_, n)| n).sum();
        if cap > 0 && (total + line.len()) as u64 > cap {
            // down to three quarters of the cap, so the file is not rewritten at every line
            let budget = (cap * 3 / 4).saturating_sub(line.len() as u64) as usize;
            let mut kept = total;
            let mut drop = 0;
            while drop < self.entries.len() && kept > budget {
                kept -= self.entries[drop].1;
                drop += 1;
            }
            self.entries.drain(..drop);
            tracing::info!(
                "memory {}: reached {} bytes (`[memory] max_mb`): forgot the {drop} oldest view(s)",
                path.display(),
                cap
            );
            self.rewrite();
        }
        let res = crate::narration::open_append(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|_| f.flush()));
        self.report(&path, res);
        self.entries.push((e, line.len()));
    }

    /// Forgets everything (`None`) or what is older than `older_than`; returns (forgotten, kept).
    pub fn forget(&mut self, older_than: Option<Duration>, now: SystemTime) -> (usize, usize) {
        let gone = match older_than {
            None => {
                let n = self.entries.len();
                self.entries.clear();
                if let Some(p) = &self.path {
                    match std::fs::remove_file(p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!("memory {}: cannot remove it: {e}", p.display());
                            self.rewrite();
                        }
                    }
                }
                n
            }
            Some(age) => match now.checked_sub(age) {
                Some(cutoff) => self.drop_before(cutoff),
                None => 0,
            },
        };
        (gone, self.entries.len())
    }

    /// Writes the file anew from the entries, through a new file renamed over it (never half a
    /// line, never through a link); an empty memory removes the file.
    fn rewrite(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let res = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            if self.entries.is_empty() {
                return match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            let mut tmp = path.as_os_str().to_os_string();
            tmp.push(".rewriting");
            let tmp = PathBuf::from(tmp);
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            let mut text = String::new();
            for (e, n) in &mut self.entries {
                if let Some(l) = line_of(e) {
                    *n = l.len();
                    text.push_str(&l);
                }
            }
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        })();
        self.report(&path, res);
    }

    fn report(&mut self, path: &Path, res: std::io::Result<()>) {
        match res {
            Ok(()) => {
                if self.failed {
                    tracing::info!("memory {}: writing again", path.display());
                    self.failed = false;
                }
            }
            Err(e) => {
                if !self.failed {
                    tracing::warn!(
                        "memory {}: cannot write ({e}); recall keeps what it has until restart",
                        path.display()
                    );
                    self.failed = true;
                }
            }
        }
    }
}

/// How recall found a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Search {
    /// The query's words against the descriptions' words.
    Text,
    /// The current view's scene embedding against the stored ones.
    Embedding,
}

/// One recalled view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalled {
    pub time: String,
    /// "About 20 minutes ago".
    pub ago: String,
    pub kind: Kind,
    pub text: String,
    /// Text search: the share of the query's words found (0–1). Embedding search: 1 − the cosine
    /// distance to the current view.
    pub score: f64,
}

/// Words of a recall question that say nothing about what to find ("where did I leave my …").
const QUERY_FILLER: &[&str] = &[
    "my", "mine", "our", "your", "we", "me", "where", "when", "what", "did", "do", "does", "leave",
    "put", "last", "saw", "find", "lost", "lose", "placed", "time", "ago",
];

/// The words of a recall question that count.
pub fn query_words(language: &str, query: &str) -> BTreeSet<String> {
    let mut w = content_words_in(language, query);
    w.retain(|x| !QUERY_FILLER.contains(&x.as_str()));
    w
}

/// One word found in another: the same, or (both at least 4 letters) one begins the other
/// ("bottle" / "bottles", "keychain" / "keychains"; "key" does not find "keyboard").
fn same_word(a: &str, b: &str) -> bool {
    a == b
        || (a.chars().count() >= 4
            && b.chars().count() >= 4
            && (a.starts_with(b) || b.starts_with(a)))
}

/// The share of `words` found in `text`.
fn coverage(language: &str, words: &BTreeSet<String>, text: &str) -> f64 {
    if words.is_empty() {
        return 0.0;
    }
    let d = content_words_in(language, text);
    let found = words
        .iter()
        .filter(|q| d.iter().any(|w| same_word(q, w)))
        .count();
    found as f64 / words.len() as f64
}

fn recalled(e: &Entry, score: f64, now: SystemTime) -> Recalled {
    let elapsed = e
        .at()
        .map(|t| now.duration_since(t).unwrap_or_default())
        .unwrap_or_default();
    Recalled {
        time: e.time.clone(),
        ago: ago(elapsed),
        kind: e.kind,
        text: e.text.clone(),
        score,
    }
}

/// The remembered views whose description contains the most of the query's words: best first,
/// the most recent first among equals, one per distinct text, at most `limit`. Views sharing no
/// word with the query are not listed.
pub fn recall_text(
    entries: &[&Entry],
    language: &str,
    query: &str,
    limit: usize,
    now: SystemTime,
) -> Vec<Recalled> {
    let words = query_words(language, query);
    let mut scored: Vec<(f64, usize)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (coverage(language, &words, &e.text), i))
        .filter(|(s, _)| *s > 0.0)
        .collect();
    // best first, then newest first (entries are oldest first)
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut seen: Vec<String> = vec![];
    let mut out = vec![];
    for (s, i) in scored {
        let key = entries[i].text.to_lowercase();
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push(recalled(entries[i], s, now));
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// The earlier times the current view (`embedding`) was seen: remembered views within
/// `max_distance` of it (cosine distance of the scene embeddings: the scene watch's own "same
/// view"), newest first, at most `limit`. The visit under way — the newest entries, as long as
/// they match — is left out: "before" means before this visit.
pub fn recall_view(
    entries: &[&Entry],
    embedding: &[f32],
    max_distance: f32,
    limit: usize,
    now: SystemTime,
) -> Vec<Recalled> {
    let distances: Vec<Option<f32>> = entries
        .iter()
        .map(|e| {
            let v = e.embedding.as_ref()?.to_f32()?;
            (v.len() == embedding.len()).then(|| cosine_distance(&v, embedding))
        })
        .collect();
    let close = |d: &Option<f32>| d.is_some_and(|d| d <= max_distance);
    let current = distances.iter().rev().take_while(|d| close(d)).count();
    let mut out = vec![];
    for i in (0..entries.len() - current).rev() {
        if let Some(d) = distances[i].filter(|&d| d <= max_distance) {
            out.push(recalled(entries[i], 1.0 - d as f64, now));
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// How long ago, said the way a person would: "Just now", "About a minute ago", "About 20
/// minutes ago", "About an hour ago", "About 3 hours ago", "About a day ago", "About 4 days ago".
/// Minutes are rounded to the nearest (to 5 from 10 minutes on), hours and days to the nearest.
pub fn ago(elapsed: Duration) -> String {
    let s = elapsed.as_secs_f64();
    let min = s / 60.0;
    let h = min / 60.0;
    let days = h / 24.0;
    if s < 45.0 {
        "Just now".into()
    } else if min < 1.5 {
        "About a minute ago".into()
    } else if min < 9.5 {
        format!("About {} minutes ago", min.round())
    } else if min < 52.5 {
        format!("About {} minutes ago", (min / 5.0).round() * 5.0)
    } else if h < 1.5 {
        "About an hour ago".into()
    } else if h < 23.5 {
        format!("About {} hours ago", h.round())
    } else if days < 1.5 {
        "About a day ago".into()
    } else {
        format!("About {} days ago", days.round())
    }
}

/// What is said: the best recalled view with when ("About 20 minutes ago: keys on the kitchen
/// table."), or that there is none.
pub fn answer(found: &[Recalled], search: Search, memory_empty: bool) -> String {
    match found.first() {
        Some(r) => {
            let text = r.text.trim();
            let end = if text.ends_with(['.', '!', '?', '。', '！', '？']) {
                ""
            } else {
                "."
            };
            format!("{}: {text}{end}", r.ago)
        }
        None if memory_empty => "I do not remember anything yet.".into(),
        None => match search {
            Search::Text => "I do not remember seeing that.".into(),
            Search::Embedding => "I do not remember seeing this view before.".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn entry(mins_ago: u64, text: &str, emb: Option<&[f32]>, now: SystemTime) -> Entry {
        Entry::new(
            now - MIN * mins_ago as u32,
            Kind::Scene,
            text,
            Some(mins_ago),
            emb,
        )
    }

    #[test]
    fn ago_reads_like_speech() {
        let s = Duration::from_secs;
        let cases = [
            (0, "Just now"),
            (44, "Just now"),
            (60, "About a minute ago"),
            (150, "About 3 minutes ago"),
            (9 * 60, "About 9 minutes ago"),
            (20 * 60, "About 20 minutes ago"),
            (22 * 60, "About 20 minutes ago"),
            (23 * 60, "About 25 minutes ago"),
            (50 * 60, "About 50 minutes ago"),
            (55 * 60, "About an hour ago"),
            (100 * 60, "About 2 hours ago"),
            (23 * 3600, "About 23 hours ago"),
            (30 * 3600, "About a day ago"),
            (4 * 86_400 + 3600, "About 4 days ago"),
        ];
        for (secs, want) in cases {
            assert_eq!(ago(s(secs)), want, "{secs} s");
        }
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..10usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 97 + 13) as u8).collect();
            let enc = base64_encode(&data);
            assert_eq!(enc.len() % 4, 0);
            assert_eq!(base64_decode(&enc).as_deref(), Some(&data[..]), "{enc}");
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_decode("TW=u"), None);
        assert_eq!(base64_decode("TWE"), None);
        assert_eq!(base64_decode("T!E="), None);
    }

    #[test]
    fn quantised_embeddings_keep_their_direction() {
        let v: Vec<f32> = (0..3072)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 700.0)
            .collect();
        let q = Quantized::from_f32(&v).to_f32().unwrap();
        assert_eq!(q.len(), v.len());
        assert!(
            cosine_distance(&v, &q) < 1e-4,
            "{}",
            cosine_distance(&v, &q)
        );
        assert_eq!(
            Quantized::from_f32(&[0.0, 0.0]).to_f32().unwrap(),
            [0.0, 0.0]
        );
    }

    #[test]
    fn recall_by_words_finds_the_best_and_newest_match() {
        let now = SystemTime::now();
        let es = [
            entry(
                180,
                "Keys on the kitchen table next to a red mug.",
                None,
                now,
            ),
            entry(60, "A hallway with a coat rack.", None, now),
            entry(20, "A set of keys on the kitchen table.", None, now),
            entry(10, "A laptop and a keyboard on a desk.", None, now),
            entry(5, "A kitchen with a kettle.", None, now),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let found = recall_text(&refs, "en", "Where did I leave my keys?", 3, now);
        let texts: Vec<&str> = found.iter().map(|r| r.text.as_str()).collect();
        // "key" is not found in "keyboard"; of the two that show keys, the newer comes first
        assert_eq!(
            texts,
            [
                "A set of keys on the kitchen table.",
                "Keys on the kitchen table next to a red mug."
            ]
        );
        assert_eq!(found[0].score, 1.0);
        assert_eq!(
            answer(&found, Search::Text, false),
            "About 20 minutes ago: A set of keys on the kitchen table."
        );
        // more words: the description holding more of them wins over a newer partial match
        let found = recall_text(&refs, "en", "red mug", 3, now);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ago, "About 3 hours ago");
        let found = recall_text(&refs, "en", "kitchen kettle", 3, now);
        assert_eq!(found[0].text, "A kitchen with a kettle.");
        assert_eq!(found[1].score, 0.5);
        assert_eq!(
            recall_text(&refs, "en", "kitchen", 1, now).len(),
            1,
            "limit"
        );
        let none = recall_text(&refs, "en", "a bicycle", 3, now);
        assert!(none.is_empty());
        assert_eq!(
            answer(&none, Search::Text, false),
            "I do not remember seeing that."
        );
        assert_eq!(
            answer(&none, Search::Text, true),
            "I do not remember anything yet."
        );
        assert!(query_words("en", "where did I leave my").is_empty());
    }

    #[test]
    fn recall_by_words_in_chinese_uses_character_pairs() {
        let now = SystemTime::now();
        let es = [
            entry(30, "桌子上有一串钥匙和一个杯子。", None, now),
            entry(2, "厨房里有一个红色的水壶。", None, now),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let found = recall_text(&refs, "zh", "钥匙", 3, now);
        assert_eq!(found.len(), 1);
        assert_eq!(
            answer(&found, Search::Text, false),
            "About 30 minutes ago: 桌子上有一串钥匙和一个杯子。"
        );
    }

    #[test]
    fn recall_by_view_skips_the_visit_under_way() {
        let now = SystemTime::now();
        let kitchen = [1.0f32, 0.0, 0.0];
        let kitchen2 = [0.99f32, 0.05, 0.0];
        let street = [0.0f32, 1.0, 0.0];
        let es = [
            entry(300, "A kitchen, morning.", Some(&kitchen), now),
            entry(200, "A street.", Some(&street), now),
            entry(100, "A kitchen, noon.", Some(&kitchen2), now),
            entry(50, "A street again.", Some(&street), now),
            entry(2, "A kitchen, now.", Some(&kitchen), now),
            entry(1, "Still the kitchen.", Some(&kitchen2), now),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let found = recall_view(&refs, &kitchen, 0.1, 3, now);
        let texts: Vec<&str> = found.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["A kitchen, noon.", "A kitchen, morning."]);
        assert!(found[0].score > 0.9 && found[1].score > 0.99);
        assert_eq!(
            answer(&found, Search::Embedding, false),
            "About 2 hours ago: A kitchen, noon."
        );
        // a view never seen before
        let found = recall_view(&refs, &[0.0, 0.0, 1.0], 0.1, 3, now);
        assert!(found.is_empty());
        assert_eq!(
            answer(&found, Search::Embedding, false),
            "I do not remember seeing this view before."
        );
        // another model's embeddings (another width) are not compared
        assert!(recall_view(&refs, &[1.0, 0.0], 0.1, 3, now).is_empty());
    }

    #[test]
    fn the_memory_file_is_private_capped_pruned_and_forgettable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/scenesay/memory.jsonl");
        let now = SystemTime::now();
        let emb = vec![0.5f32; 64];
        let one = line_of(&entry(0, "A view number 00.", Some(&emb), now))
            .unwrap()
            .len() as u64;
        let limits = MemoryLimits {
            max_bytes: one * 10,
            keep_days: 1.0,
        };
        let mut m = Memory::open(&p, limits).unwrap();
        assert!(m.is_empty());
        for i in 0..25 {
            m.remember(entry(0, &format!("A view number {i:02}."), Some(&emb), now));
        }
        m.remember(entry(0, "  ", None, now)); // nothing to remember
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= limits.max_bytes, "{size}");
        // what is on disk is what is recalled, the newest views, in order
        let again = Memory::open(&p, limits).unwrap();
        let texts: Vec<String> = again.entries().iter().map(|e| e.text.clone()).collect();
        assert_eq!(
            texts,
            m.entries()
                .iter()
                .map(|e| e.text.clone())
                .collect::<Vec<_>>()
        );
        assert!(texts.len() >= 7 && texts.len() <= 10, "{texts:?}");
        assert_eq!(texts.last().unwrap(), "A view number 24.");
        let n: Vec<u32> = texts.iter().map(|t| t[14..16].parse().unwrap()).collect();
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");
        assert_eq!(
            again.entries()[0]
                .embedding
                .as_ref()
                .unwrap()
                .to_f32()
                .unwrap()
                .len(),
            64
        );

        // older than keep_days: dropped when opened; forget older than an age
        let mut m = Memory::open(&p, MemoryLimits::default()).unwrap();
        m.remember(entry(3 * 24 * 60, "Three days ago.", None, now));
        m.remember(entry(90, "An hour and a half ago.", None, now));
        let k = m.len();
        let mut m = Memory::open(&p, limits).unwrap();
        assert_eq!(m.len(), k - 1);
        assert_eq!(m.forget(Some(MIN * 60), now), (1, k - 2));
        assert!(m.entries().iter().all(|e| e.text.starts_with("A view")));
        assert_eq!(Memory::open(&p, limits).unwrap().len(), k - 2);
        // forget everything: the file is gone
        assert_eq!(m.forget(None, now), (k - 2, 0));
        assert!(!p.exists());
        m.remember(entry(0, "After forgetting.", None, now));
        assert_eq!(Memory::open(&p, limits).unwrap().len(), 1);
    }

    #[test]
    fn damaged_lines_are_dropped_and_a_planted_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.jsonl");
        let now = SystemTime::now();
        let good = line_of(&entry(1, "A door.", None, now)).unwrap();
        std::fs::write(&p, format!("{good}not json\n{good}")).unwrap();
        let m = Memory::open(&p, MemoryLimits::default()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{good}{good}")
        );

        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let q = dir.path().join("linked.jsonl");
        std::os::unix::fs::symlink(&target, &q).unwrap();
        let e = Memory::open(&q, MemoryLimits::default())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
