//! Resumable JSON-lines output: one line per finished item, appended and flushed as each finishes,
//! so a crash loses at most the line being written. Reopening reads back what is there; a torn last
//! line (the crash case) is cut off before appending, so the file stays valid JSON lines.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// What an existing output file holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Existing {
    /// Every complete line that is a JSON value, in order.
    pub records: Vec<serde_json::Value>,
    /// 1-based numbers of complete lines that are not JSON (left in place, ignored).
    pub bad_lines: Vec<usize>,
    /// The unterminated last line when it is not JSON: a write cut short. It is removed.
    pub torn: Option<String>,
    /// Bytes to keep (everything up to the torn line).
    pub keep_len: u64,
    /// The kept content does not end with a newline (a complete JSON last line without one).
    pub needs_newline: bool,
}

/// Reads JSON lines (see [`Existing`]).
pub fn scan(content: &[u8]) -> Existing {
    let mut ex = Existing::default();
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < content.len() {
        line_no += 1;
        let (line, end, terminated) = match content[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (&content[start..start + i], start + i + 1, true),
            None => (&content[start..], content.len(), false),
        };
        let text = String::from_utf8_lossy(line);
        let trimmed = text.trim();
        let parsed = serde_json::from_str::<serde_json::Value>(trimmed).ok();
        match (parsed, terminated) {
            (Some(v), _) => {
                ex.records.push(v);
                ex.keep_len = end as u64;
                ex.needs_newline = !terminated;
            }
            (None, true) => {
                if !trimmed.is_empty() {
                    ex.bad_lines.push(line_no);
                }
                ex.keep_len = end as u64;
                ex.needs_newline = false;
            }
            (None, false) => {
                if !trimmed.is_empty() {
                    ex.torn = Some(text.into_owned());
                }
            }
        }
        start = end;
    }
    ex
}

/// Where finished lines go: a file opened for appending (after a resume scan) or stdout.
pub struct JsonLines {
    out: Box<dyn Write>,
    path: Option<PathBuf>,
}

impl JsonLines {
    /// Lines to stdout (no resuming).
    pub fn stdout() -> Self {
        Self {
            out: Box::new(std::io::stdout()),
            path: None,
        }
    }

    /// Opens `path` for appending, creating it if needed; returns what it already held. A torn last
    /// line is cut off first.
    pub fn open(path: &Path) -> anyhow::Result<(Self, Existing)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        let mut content = vec![];
        file.read_to_end(&mut content)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let ex = scan(&content);
        if ex.keep_len < content.len() as u64 {
            file.set_len(ex.keep_len).with_context(|| {
                format!("cannot remove the torn last line of {}", path.display())
            })?;
        }
        if ex.needs_newline {
            file.write_all(b"\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok((
            Self {
                out: Box::new(file),
                path: Some(path.to_path_buf()),
            },
            ex,
        ))
    }

    /// Appends one JSON line and flushes it.
    pub fn write<T: Serialize>(&mut self, value: &T) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        let name = || {
            self.path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "standard output".into())
        };
        self.out
            .write_all(&line)
            .and_then(|_| self.out.flush())
            .with_context(|| format!("cannot write {}", name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scan_keeps_complete_lines_and_cuts_a_torn_tail() {
        let c = b"{\"a\":1}\nnot json\n\n{\"b\":2}\n{\"c\":";
        let ex = scan(c);
        assert_eq!(ex.records, [json!({"a":1}), json!({"b":2})]);
        assert_eq!(ex.bad_lines, [2]);
        assert_eq!(ex.torn.as_deref(), Some("{\"c\":"));
        assert_eq!(ex.keep_len as usize, c.len() - 5);
        assert!(!ex.needs_newline);

        let ex = scan(b"{\"a\":1}\n{\"b\":2}");
        assert_eq!(ex.records.len(), 2);
        assert!(ex.needs_newline && ex.torn.is_none());
        assert_eq!(ex.keep_len, 15);
        assert_eq!(scan(b""), Existing::default());
    }

    #[test]
    fn reopening_after_a_crash_appends_clean_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.jsonl");
        {
            let (mut w, ex) = JsonLines::open(&p).unwrap();
            assert!(ex.records.is_empty());
            w.write(&json!({"path": "a", "text": "x"})).unwrap();
        }
        // a crash in the middle of the second line
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"path\": \"b\", \"te").unwrap();
        drop(f);
        let (mut w, ex) = JsonLines::open(&p).unwrap();
        assert_eq!(ex.records.len(), 1);
        assert!(ex.torn.is_some());
        w.write(&json!({"path": "b", "text": "y"})).unwrap();
        drop(w);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                json!({"path":"a","text":"x"}),
                json!({"path":"b","text":"y"})
            ]
        );
    }
}
