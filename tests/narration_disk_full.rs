//! The narration log when the disk fills up in the middle of a line: simulated without privileges
//! by a file-size limit (RLIMIT_FSIZE; writes past it fail with EFBIG exactly as a full disk fails
//! them with ENOSPC). The part of the line that fitted is taken back, later lines are counted as
//! lost without a panic, and once there is room again writing resumes with whole lines only. One
//! test in its own binary: the limit applies to the whole process.

use std::path::Path;
use std::time::SystemTime;

use scenesay::narration::{rfc3339, Kind, Latency, NarrationId, NarrationLog, Record, Status};

fn record(text: &str) -> Record {
    Record {
        time: rfc3339(SystemTime::now()),
        id: NarrationId::next(),
        kind: Kind::Scene,
        status: Status::Spoken,
        reason: None,
        text: text.into(),
        question: None,
        resolution: Some(256),
        frame: Some(1),
        repeat: false,
        cancelled: false,
        tokens: None,
        latency_ms: Latency::default(),
    }
}

fn set_file_size_limit(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls on this process's own limit and signal disposition.
    unsafe {
        // past the limit the kernel sends SIGXFSZ (fatal by default) and then fails the write
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(p).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("broken line {l:?}: {e}")))
        .collect()
}

#[test]
fn a_full_disk_mid_line_leaves_only_whole_lines_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("narration.jsonl");
    let mut log = NarrationLog::open(&p).unwrap();
    log.append(&record("before the disk filled up"));
    let size = std::fs::metadata(&p).unwrap().len();
    assert!(!log.failing());

    // room for part of the next line only
    set_file_size_limit(size + 40);
    log.append(&record(&"a long description that does not fit ".repeat(4)));
    assert!(log.failing(), "the failed write is noticed");
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        size,
        "the part that fitted was taken back"
    );
    log.append(&record("still no room"));
    assert_eq!(lines(&p).len(), 1);

    // room again
    set_file_size_limit(u64::MAX);
    log.append(&record("after the disk had room again"));
    assert!(!log.failing());
    let got = lines(&p);
    let texts: Vec<&str> = got.iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        ["before the disk filled up", "after the disk had room again"]
    );
}
