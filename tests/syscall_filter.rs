//! The systemd unit's system call filter lets scenesay work: the built daemon (tiny model, frames,
//! a detail request, speech through espeak-ng, the control socket, shutdown) runs under `strace -f`,
//! and every system call it and its children made is allowed by the unit's `SystemCallFilter=`
//! lines, expanded by `systemd-analyze syscall-filter`. A new dependency that needs a filtered call
//! fails here instead of on a user's machine. Heavy (SCENESAY_HEAVY_TESTS=1); needs strace.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn heavy() -> bool {
    std::env::var("SCENESAY_HEAVY_TESTS").is_ok_and(|v| v == "1")
}

/// The system calls in a filter set such as `@system-service`, groups expanded.
fn expand(name: &str, cache: &mut HashMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    if !name.starts_with('@') {
        return [name.to_string()].into();
    }
    if let Some(s) = cache.get(name) {
        return s.clone();
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", name])
        .output()
        .expect("systemd-analyze is installed (apt install systemd)");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {name}"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut set = BTreeSet::new();
    for l in text.lines().skip(1) {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        set.extend(expand(l, cache));
    }
    cache.insert(name.to_string(), set.clone());
    set
}

/// What the unit's `SystemCallFilter=` lines allow (an allow list, then `~` deny lists).
fn allowed_by_unit() -> BTreeSet<String> {
    let unit = std::fs::read_to_string(repo().join("systemd/scenesay.service")).unwrap();
    let mut cache = HashMap::new();
    let mut allowed: Option<BTreeSet<String>> = None;
    for line in unit.lines() {
        let Some(v) = line.trim().strip_prefix("SystemCallFilter=") else {
            continue;
        };
        if let Some(deny) = v.strip_prefix('~') {
            let a = allowed.as_mut().expect("an allow list comes first");
            for n in deny.split_whitespace() {
                for s in expand(n, &mut cache) {
                    a.remove(&s);
                }
            }
        } else {
            let a = allowed.get_or_insert_with(BTreeSet::new);
            for n in v.split_whitespace() {
                a.extend(expand(n, &mut cache));
            }
        }
    }
    allowed.expect("the unit has a SystemCallFilter=")
}

#[test]
fn every_system_call_the_daemon_makes_passes_the_units_filter() {
    if !heavy() {
        eprintln!("skipped: set SCENESAY_HEAVY_TESTS=1 (scripts/test does)");
        return;
    }
    let allowed = allowed_by_unit();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(
        dir.path(),
        "source = \"test-pattern\"\nfps = 10",
        "[scene]\nchange_threshold = 0.02\ncooldown_s = 0\n\n[describe]\nscene_max_tokens = 8\ndetail_resolution = 512\ndetail_max_tokens = 8",
    )
    .replace("backend = \"log\"", "backend = \"espeak-ng\"");
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let trace = dir.path().join("trace.txt");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_scenesay"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("HOME", dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace is installed (apt install strace)");
    let socket = dir.path().join("scenesay.sock");
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "the daemon under strace exited ({st}) — can this machine trace processes (ptrace)? {}",
                std::fs::read_to_string(&trace).unwrap_or_default()
            );
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(Duration::from_secs(120), "a scene narration", || {
        status(&socket)["last_narration"]["kind"] == "scene"
    });
    let r = request(&socket, r#"{"cmd":"describe"}"#);
    assert_eq!(r["reply"], "narration", "{r}");
    assert_eq!(request(&socket, r#"{"cmd":"stop"}"#)["reply"], "accepted");
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");

    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = BTreeSet::new();
    for line in text.lines() {
        // "PID name(args…) = result", "PID <... name resumed>…"
        let rest = line
            .split_once(' ')
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && rest[name.len()..].starts_with('(') {
            used.insert(name);
        }
    }
    assert!(used.len() > 30, "too few calls traced: {used:?}");
    let blocked: Vec<&String> = used.difference(&allowed).collect();
    println!(
        "{} distinct system calls made, all within the unit's filter ({} allowed)",
        used.len(),
        allowed.len()
    );
    assert!(
        blocked.is_empty(),
        "the unit's SystemCallFilter= would refuse {blocked:?} (EPERM)"
    );
}
