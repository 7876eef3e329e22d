//! Helpers for the daemon's integration tests: sample frames, configuration files, the built
//! binary as a child process, control-socket requests and narration-log reading.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model() -> PathBuf {
    repo().join("tests/fixtures/tiny-fastvlm-apple")
}

pub fn fixture_image(name: &str) -> PathBuf {
    repo().join("tests/fixtures/images").join(name)
}

/// A folder with copies of fixture pictures under new names, e.g. `[("1.png", "landscape_640x480.png")]`.
pub fn frames(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let d = dir.join("frames");
    std::fs::create_dir_all(&d).unwrap();
    for (name, fixture) in files {
        std::fs::copy(fixture_image(fixture), d.join(name)).unwrap();
    }
    d
}

/// Polls `cond` every 20 ms until it holds or `limit` passes (then panics with `what`).
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < limit,
            "gave up waiting ({limit:?}) for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request line → one reply, parsed.
pub fn request(socket: &Path, line: &str) -> Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    writeln!(s, "{line}").unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("bad reply {reply:?}: {e}"))
}

pub fn status(socket: &Path) -> Value {
    request(socket, r#"{"cmd":"status"}"#)
}

/// Every line of a narration log, parsed (panics on a line that is not JSON: lines must be intact).
pub fn records(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the log must end with a complete line: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("broken log line {l:?}: {e}")))
        .collect()
}

pub fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// A daemon started from the built binary, in its own temporary folder (socket, log, HOME).
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub child: Child,
}

/// Makes `dir` private (mode 0700), as the control socket's folder must be.
pub fn make_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A configuration for tests: tiny model, images from `frames`, log backend, no hotkey, the login
/// session not followed (tests do not pause when the screen locks), socket and
/// log in `dir` (made private: the socket's folder must be); `extra` is appended to the sections
/// (`[scene]` keys etc. given as full TOML).
pub fn config_text(dir: &Path, capture: &str, extra: &str) -> String {
    make_private(dir);
    format!(
        r#"[model]
path = "{model}"

[capture]
{capture}

[speech]
backend = "log"
acknowledge = false

[hotkey]
key = ""

[control]
socket = "{dir}/scenesay.sock"

[log]
path = "{dir}/narration.jsonl"

[session]
follow_logind = false

{extra}
"#,
        model = tiny_model().display(),
        dir = dir.display(),
    )
}

impl Daemon {
    /// Starts `scenesay run --config` with `config` (see [`config_text`]) and waits until its
    /// control socket answers.
    pub fn start(dir: tempfile::TempDir, config: &str) -> Daemon {
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let out = std::fs::File::create(dir.path().join("stdout.txt")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_scenesay"))
            .args(["-v", "run", "--config"])
            .arg(&cfg)
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("SCENESAY_MODEL")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            socket: dir.path().join("scenesay.sock"),
            log: dir.path().join("narration.jsonl"),
            dir,
            child,
        };
        let t = Instant::now();
        loop {
            if UnixStream::connect(&d.socket).is_ok() {
                return d;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("the daemon exited early ({st}): {}", d.stderr());
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the daemon did not open its socket: {}",
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.txt")).unwrap_or_default()
    }

    pub fn request(&self, line: &str) -> Value {
        request(&self.socket, line)
    }

    pub fn status(&self) -> Value {
        status(&self.socket)
    }

    pub fn records(&self) -> Vec<Value> {
        records(&self.log)
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with the pid of our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the daemon to exit, at most `limit`; returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "the daemon did not exit within {limit:?}: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `scenesay ctl stop`, then waits for a clean exit.
    pub fn stop(&mut self) {
        let r = self.request(r#"{"cmd":"stop"}"#);
        assert_eq!(r["reply"], "accepted", "{r}");
        let (st, _) = self.wait_exit(Duration::from_secs(10));
        assert!(st.success(), "exit {st}: {}", self.stderr());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
