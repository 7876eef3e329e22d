//! The control socket server on its own, with a stand-in worker: round trips for every request,
//! malformed and oversize lines answered with errors while the server stays up, socket
//! permissions, a second server refused, a stale socket file replaced, the file removed on stop.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use scenesay::control::client;
use scenesay::control::protocol::{ErrorCode, Request, Response, MAX_LINE};
use scenesay::control::server::{self, ControlError, Handles};
use scenesay::narration::{Kind, Latency};
use scenesay::status::{Clock, Stats};
use scenesay::worker::Trigger;

struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    thread: JoinHandle<()>,
    worker: JoinHandle<Vec<String>>,
    shutdown: crossbeam_channel::Receiver<()>,
}

/// A stand-in worker answering triggers the way the real one does, recording what it was asked.
fn fake_worker(rx: crossbeam_channel::Receiver<Trigger>) -> Vec<String> {
    let mut seen = vec![];
    for t in rx {
        let (name, reply, resp) = match t {
            Trigger::Detail { reply } => (
                "detail".to_string(),
                reply,
                Response::Narration {
                    kind: Kind::Detail,
                    text: "A desk with a lamp.".into(),
                    resolution: Some(1024),
                    frame: Some(7),
                    latency_ms: Latency::default(),
                },
            ),
            Trigger::Ask { question, reply } => (
                format!("ask {question}"),
                reply,
                Response::Narration {
                    kind: Kind::Answer,
                    text: format!("You asked: {question}"),
                    resolution: Some(1024),
                    frame: Some(7),
                    latency_ms: Latency::default(),
                },
            ),
            Trigger::Repeat { reply } => ("repeat".into(), reply, Response::accepted("repeated")),
            Trigger::Pause { reply } => ("pause".into(), reply, Response::accepted("paused")),
            Trigger::Resume { reply } => ("resume".into(), reply, Response::accepted("resumed")),
            Trigger::TogglePause => ("toggle".into(), None, Response::accepted("")),
            Trigger::NewConversation { reply } => {
                ("new".into(), reply, Response::accepted("new conversation"))
            }
            Trigger::Mode { mode, reply } => {
                (format!("mode {mode:?}"), reply, Response::accepted("mode"))
            }
            Trigger::Session(e) => (format!("session {e:?}"), None, Response::accepted("")),
            Trigger::Changed { reply } => (
                "changed".into(),
                reply,
                Response::Narration {
                    kind: Kind::Changed,
                    text: "Nothing has changed.".into(),
                    resolution: None,
                    frame: Some(7),
                    latency_ms: Latency::default(),
                },
            ),
            Trigger::Read { reply } => (
                "read".into(),
                reply,
                Response::Narration {
                    kind: Kind::Read,
                    text: "EXIT".into(),
                    resolution: Some(1024),
                    frame: Some(7),
                    latency_ms: Latency::default(),
                },
            ),
            Trigger::Watch { condition, reply } => (
                format!("watch {condition}"),
                reply,
                Response::accepted("watch 1"),
            ),
            Trigger::Watches { reply, .. } => (
                "watches".into(),
                reply,
                Response::Watches { watches: vec![] },
            ),
            Trigger::Unwatch { id, reply } => (
                format!("unwatch {id}"),
                reply,
                Response::accepted("removed"),
            ),
            Trigger::Recall { query, reply, .. } => (
                format!("recall {query:?}"),
                reply,
                Response::accepted("recalled"),
            ),
            Trigger::Forget { older_than, reply } => (
                format!("forget {older_than:?}"),
                reply,
                Response::accepted("forgot"),
            ),
        };
        seen.push(name);
        if let Some(r) = reply {
            let _ = r.send(resp);
        }
    }
    seen
}

fn start_at(dir: tempfile::TempDir, path: PathBuf) -> Server {
    let listener = server::bind(&path).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(8);
    let (shutdown_tx, shutdown) = crossbeam_channel::bounded(1);
    let handles = Handles {
        triggers: tx,
        stats: Arc::new(Stats::new(Clock::new())),
        shutdown: shutdown_tx,
        speaker: scenesay::speech::service::Speaker::new(crossbeam_channel::unbounded().0),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let p = path.clone();
    let thread = std::thread::spawn(move || server::serve(listener, p, handles, stop_rx).unwrap());
    let worker = std::thread::spawn(move || fake_worker(rx));
    Server {
        _dir: dir,
        path,
        stop,
        thread,
        worker,
        shutdown,
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/scenesay.sock");
    start_at(dir, path)
}

impl Server {
    fn stop(self) -> Vec<String> {
        self.stop.send(true).unwrap();
        self.thread.join().unwrap();
        assert!(!self.path.exists(), "socket file removed");
        // the server's trigger sender is gone with it: the stand-in worker ends
        self.worker.join().unwrap()
    }
}

fn ask(path: &Path, req: Request) -> Response {
    client::request(path, &req, Duration::from_secs(10)).unwrap()
}

/// Sends raw bytes on one connection and reads one reply line.
fn raw_line(stream: &mut UnixStream, bytes: &[u8]) -> Response {
    stream.write_all(bytes).unwrap();
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn code(r: &Response) -> ErrorCode {
    match r {
        Response::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn every_request_round_trips() {
    let s = start();
    match ask(&s.path, Request::Describe { wait: true }) {
        Response::Narration {
            kind, text, frame, ..
        } => {
            assert_eq!(kind, Kind::Detail);
            assert_eq!(text, "A desk with a lamp.");
            assert_eq!(frame, Some(7));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ask(&s.path, Request::Describe { wait: false }),
        Response::accepted("describing")
    );
    match ask(
        &s.path,
        Request::Ask {
            question: "Is it raining?".into(),
            wait: true,
        },
    ) {
        Response::Narration { kind, text, .. } => {
            assert_eq!(kind, Kind::Answer);
            assert_eq!(text, "You asked: Is it raining?");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ask(&s.path, Request::Repeat {}),
        Response::accepted("repeated")
    );
    match ask(&s.path, Request::Changed { wait: true }) {
        Response::Narration { kind, text, .. } => {
            assert_eq!(kind, Kind::Changed);
            assert_eq!(text, "Nothing has changed.");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ask(&s.path, Request::Read { wait: false }),
        Response::accepted("reading")
    );
    assert_eq!(
        ask(&s.path, Request::Pause {}),
        Response::accepted("paused")
    );
    assert_eq!(
        ask(&s.path, Request::Resume {}),
        Response::accepted("resumed")
    );
    assert_eq!(
        ask(&s.path, Request::New {}),
        Response::accepted("new conversation")
    );
    assert_eq!(
        ask(
            &s.path,
            Request::Mode {
                mode: Some(scenesay::config::SceneMode::Periodic)
            }
        ),
        Response::accepted("mode")
    );
    match ask(&s.path, Request::Status {}) {
        Response::Status(st) => {
            assert_eq!(st.version, env!("CARGO_PKG_VERSION"));
            assert_eq!(st.frames.captured, 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ask(&s.path, Request::Stop {}),
        Response::accepted("stopping")
    );
    s.shutdown
        .recv_timeout(Duration::from_secs(5))
        .expect("stop reaches the daemon");
    let seen = s.stop();
    assert_eq!(
        seen,
        [
            "detail",
            "detail",
            "ask Is it raining?",
            "repeat",
            "changed",
            "read",
            "pause",
            "resume",
            "new",
            "mode Some(Periodic)"
        ]
    );
}

#[test]
fn malformed_requests_get_errors_and_the_server_stays_up() {
    let s = start();
    let mut c = UnixStream::connect(&s.path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(code(&raw_line(&mut c, b"hello\n")), ErrorCode::BadRequest);
    assert_eq!(
        code(&raw_line(&mut c, b"{\"cmd\":\"dance\"}\n")),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(&raw_line(&mut c, b"{\"cmd\":\"ask\",\"question\":\"\"}\n")),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(&raw_line(&mut c, b"{\"cmd\":\"sta\xfftus\"}\n")),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(&raw_line(&mut c, b"{\"cmd\":\"status\"\n")),
        ErrorCode::BadRequest
    );
    // an oversize line is refused, the rest of it skipped, and the connection still works
    let mut big = vec![b'x'; MAX_LINE + 10];
    big.push(b'\n');
    assert_eq!(code(&raw_line(&mut c, &big)), ErrorCode::TooLong);
    // blank lines are ignored; the same connection answers a good request
    match raw_line(&mut c, b"\n\r\n{\"cmd\":\"status\"}\r\n") {
        Response::Status(_) => {}
        other => panic!("{other:?}"),
    }
    // and so does a fresh one
    assert!(matches!(
        ask(&s.path, Request::Status {}),
        Response::Status(_)
    ));
    // a client that vanishes mid-line does no harm
    let mut gone = UnixStream::connect(&s.path).unwrap();
    gone.write_all(b"{\"cmd\":").unwrap();
    drop(gone);
    assert!(matches!(
        ask(&s.path, Request::Status {}),
        Response::Status(_)
    ));
    assert!(s.stop().is_empty());
}

#[test]
fn the_socket_is_private_and_single() {
    let s = start();
    let meta = std::fs::metadata(&s.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = std::fs::metadata(s.path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "a folder it creates is private");
    match server::bind(&s.path) {
        Err(ControlError::AlreadyRunning(p)) => assert_eq!(p, s.path),
        other => panic!("a second server must be refused: {other:?}"),
    }
    // the refused attempt did not disturb the first server
    assert!(matches!(
        ask(&s.path, Request::Status {}),
        Response::Status(_)
    ));
    s.stop();
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("scenesay.sock");
    // a socket left behind by a crashed daemon: bound, then its listener dropped
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let s = start_at(dir, path);
    assert!(matches!(
        ask(&s.path, Request::Status {}),
        Response::Status(_)
    ));
    s.stop();
}

#[test]
fn the_client_says_when_no_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let e = client::request(
        &dir.path().join("none.sock"),
        &Request::Status {},
        Duration::from_secs(1),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("scenesay is not running"), "{msg}");
    assert!(msg.contains("none.sock"), "{msg}");
}

#[test]
fn ctl_command_prints_answers_and_names_errors() {
    let s = start();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_scenesay"))
            .arg("ctl")
            .arg("--socket")
            .arg(&s.path)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["describe"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "A desk with a lamp.\n"
    );
    let out = run(&["ask", "Is", "it", "raining?"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "You asked: Is it raining?\n"
    );
    let out = run(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reply"], "status");
    let out = run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("frames       0 captured"), "{text}");
    s.stop();
    // no daemon: a clear message and the "not running" exit code
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["ctl", "--socket", "/nonexistent/scenesay.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scenesay is not running"));
}

#[test]
fn too_many_connections_are_refused_politely() {
    let s = start();
    let held: Vec<UnixStream> = (0..server::MAX_CONNECTIONS)
        .map(|_| {
            let c = UnixStream::connect(&s.path).unwrap();
            // make sure each one is accepted before the next
            let mut c2 = c.try_clone().unwrap();
            c2.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
            let mut line = String::new();
            BufReader::new(c.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            c
        })
        .collect();
    let mut extra = UnixStream::connect(&s.path).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = String::new();
    extra.read_to_string(&mut reply).unwrap();
    let r: Response = serde_json::from_str(reply.trim()).unwrap();
    assert_eq!(code(&r), ErrorCode::Busy);
    drop(held);
    wait_ok(&s.path);
    s.stop();
}

fn wait_ok(path: &Path) {
    for _ in 0..200 {
        if let Ok(Response::Status(_)) =
            client::request(path, &Request::Status {}, Duration::from_secs(1))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the server did not recover");
}
