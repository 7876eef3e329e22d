//! Session awareness against a real D-Bus: a private `dbus-daemon`, a stand-in for systemd-logind
//! served from this test (zbus's object server: the Manager, a User whose display session is
//! the one followed, since a user service has no session of its own, and that Session), and the
//! built daemon pointed at that bus with `[session] bus`. Lock, lid, sleep and a pause by hand
//! are played through logind's signals and properties; what the daemon did is read from its
//! status, its narration log and the sleep inhibitor lock it holds.

mod support;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedObjectPath;

const SESSION_PATH: &str = "/org/freedesktop/login1/session/_37";
const USER_PATH: &str = "/org/freedesktop/login1/user/_1000";

/// A private bus (`dbus-daemon` with a configuration that lets anyone own any name).
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("bus.log")).unwrap())
            .spawn()
            .expect("dbus-daemon (the `dbus-daemon` package) runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Bus { child, address }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the stand-in saw and holds.
#[derive(Default)]
struct Seen {
    inhibit_calls: Vec<String>,
    /// The reading ends of the sleep locks handed out: closed at the daemon when it lets go.
    locks: Vec<std::io::PipeReader>,
}

struct Manager {
    lid_closed: bool,
    seen: Arc<Mutex<Seen>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    /// The daemon runs outside any session, as a user service does.
    #[zbus(name = "GetSessionByPID")]
    fn get_session_by_pid(&self, _pid: u32) -> zbus::fdo::Result<OwnedObjectPath> {
        Err(zbus::fdo::Error::Failed(
            "PID does not belong to any known session".into(),
        ))
    }

    fn get_session(&self, id: String) -> zbus::fdo::Result<OwnedObjectPath> {
        Err(zbus::fdo::Error::Failed(format!("No session '{id}' known")))
    }

    fn get_user(&self, _uid: u32) -> OwnedObjectPath {
        OwnedObjectPath::try_from(USER_PATH).unwrap()
    }

    fn inhibit(
        &self,
        what: String,
        who: String,
        _why: String,
        mode: String,
    ) -> zbus::zvariant::OwnedFd {
        let (r, w) = std::io::pipe().unwrap();
        let mut seen = self.seen.lock().unwrap();
        seen.inhibit_calls.push(format!("{what} {who} {mode}"));
        seen.locks.push(r);
        OwnedFd::from(w).into()
    }

    #[zbus(property)]
    fn lid_closed(&self) -> bool {
        self.lid_closed
    }

    #[zbus(property)]
    fn preparing_for_sleep(&self) -> bool {
        false
    }

    #[zbus(signal)]
    async fn prepare_for_sleep(emitter: &SignalEmitter<'_>, start: bool) -> zbus::Result<()>;
}

struct User;

#[zbus::interface(name = "org.freedesktop.login1.User")]
impl User {
    #[zbus(property)]
    fn display(&self) -> (String, OwnedObjectPath) {
        (
            "37".into(),
            OwnedObjectPath::try_from(SESSION_PATH).unwrap(),
        )
    }
}

struct Session {
    locked_hint: bool,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl Session {
    #[zbus(property)]
    fn id(&self) -> String {
        "37".into()
    }

    #[zbus(property)]
    fn locked_hint(&self) -> bool {
        self.locked_hint
    }

    #[zbus(property)]
    fn active(&self) -> bool {
        true
    }

    #[zbus(signal)]
    async fn lock(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn unlock(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
}

/// The stand-in for logind, on its own runtime.
struct Logind {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
    seen: Arc<Mutex<Seen>>,
}

impl Logind {
    fn serve(address: &str) -> Logind {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let conn = rt
            .block_on(async {
                zbus::connection::Builder::address(address)?
                    .name("org.freedesktop.login1")?
                    .serve_at(
                        "/org/freedesktop/login1",
                        Manager {
                            lid_closed: false,
                            seen: seen.clone(),
                        },
                    )?
                    .serve_at(USER_PATH, User)?
                    .serve_at(SESSION_PATH, Session { locked_hint: false })?
                    .build()
                    .await
            })
            .unwrap();
        Logind { rt, conn, seen }
    }

    /// The `Lock` signal, then `LockedHint` true (what logind and a screen locker do).
    fn lock(&self, locked: bool) {
        self.rt.block_on(async {
            let s = self
                .conn
                .object_server()
                .interface::<_, Session>(SESSION_PATH)
                .await
                .unwrap();
            if locked {
                Session::lock(s.signal_emitter()).await.unwrap();
            } else {
                Session::unlock(s.signal_emitter()).await.unwrap();
            }
            s.get_mut().await.locked_hint = locked;
            s.get()
                .await
                .locked_hint_changed(s.signal_emitter())
                .await
                .unwrap();
        })
    }

    /// Closes or opens the lid; `announce`: with a change signal (systemd 256 and later), else
    /// silently (older logind).
    fn lid(&self, closed: bool, announce: bool) {
        self.rt.block_on(async {
            let m = self
                .conn
                .object_server()
                .interface::<_, Manager>("/org/freedesktop/login1")
                .await
                .unwrap();
            m.get_mut().await.lid_closed = closed;
            if announce {
                m.get()
                    .await
                    .lid_closed_changed(m.signal_emitter())
                    .await
                    .unwrap();
            }
        })
    }

    fn prepare_for_sleep(&self, start: bool) {
        self.rt.block_on(async {
            let m = self
                .conn
                .object_server()
                .interface::<_, Manager>("/org/freedesktop/login1")
                .await
                .unwrap();
            Manager::prepare_for_sleep(m.signal_emitter(), start)
                .await
                .unwrap();
        })
    }

    fn inhibit_calls(&self) -> Vec<String> {
        self.seen.lock().unwrap().inhibit_calls.clone()
    }

    /// Whether sleep lock `i` has been let go (its writing end closed at the daemon).
    fn lock_released(&self, i: usize) -> bool {
        let seen = self.seen.lock().unwrap();
        let mut p = libc::pollfd {
            fd: seen.locks[i].as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1 && p.revents & libc::POLLHUP != 0
    }
}

fn start_daemon(dir: tempfile::TempDir, bus: &str) -> Daemon {
    let cfg = config_text(dir.path(), "source = \"test-pattern\"\nfps = 5", "").replace(
        "[session]\nfollow_logind = false",
        &format!("[session]\nfollow_logind = true\nbus = \"{bus}\""),
    );
    Daemon::start(dir, &cfg)
}

fn notices(d: &Daemon) -> Vec<String> {
    of_kind(&d.records(), "notice")
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect()
}

fn count(v: &[String], s: &str) -> usize {
    v.iter().filter(|n| *n == s).count()
}

fn paused_by(s: &Value) -> Vec<String> {
    s["paused_by"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Nothing about the session, or from zbus, was a warning or an error.
fn no_session_warnings(stderr: &str) {
    let bad: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| l.contains("session") || l.contains("zbus"))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

const LIMIT: Duration = Duration::from_secs(20);

fn wait_watching(d: &Daemon, what: &str) {
    wait_for(LIMIT, what, || {
        let s = d.status();
        s["paused"] == false && s["source_state"] == "running"
    });
}

#[test]
fn lock_lid_and_sleep_pause_narration_release_the_source_and_resume_after() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let logind = Logind::serve(&bus.address);
    let mut d = start_daemon(dir, &bus.address);

    // the user's display session is found and followed; a sleep delay lock is taken
    wait_for(LIMIT, "the session followed", || {
        d.status()["session"] == "following logind session 37"
    });
    wait_watching(&d, "narration at start");
    assert_eq!(logind.inhibit_calls(), ["sleep scenesay delay"]);

    // lock: paused, the source let go, said once (the Lock signal and LockedHint are one lock)
    logind.lock(true);
    wait_for(LIMIT, "paused by the lock", || {
        let s = d.status();
        s["paused"] == true && s["source_state"] == "paused"
    });
    let s = d.status();
    assert_eq!(paused_by(&s), ["screen locked"], "{s}");

    // the lid closed while locked, told only by the property (older logind): read within 5 s
    logind.lid(true, false);
    wait_for(LIMIT, "the lid seen closed", || {
        paused_by(&d.status()) == ["screen locked", "lid closed"]
    });
    // unlocking alone does not resume: the lid is still closed
    logind.lock(false);
    wait_for(LIMIT, "the unlock seen", || {
        paused_by(&d.status()) == ["lid closed"]
    });
    std::thread::sleep(Duration::from_millis(300));
    let s = d.status();
    assert_eq!(s["paused"], true, "{s}");
    assert_eq!(s["source_state"], "paused", "{s}");
    // the lid opens (announced): narration resumes, the source runs again
    logind.lid(false, true);
    wait_watching(&d, "narration after the lid opened");
    assert!(paused_by(&d.status()).is_empty());

    // sleep: the delay lock is let go only once the source is let go, and taken again on waking
    logind.prepare_for_sleep(true);
    wait_for(LIMIT, "the sleep lock let go", || logind.lock_released(0));
    let s = d.status();
    assert_eq!(s["source_state"], "paused", "released before sleep: {s}");
    assert_eq!(paused_by(&s), ["going to sleep"], "{s}");
    logind.prepare_for_sleep(false);
    wait_watching(&d, "narration after waking");
    wait_for(LIMIT, "a new sleep lock", || {
        logind.inhibit_calls().len() == 2
    });
    assert!(!logind.lock_released(1), "the new lock is held");

    // a pause by hand stays over a lock and an unlock
    assert_eq!(d.request(r#"{"cmd":"pause"}"#)["message"], "paused");
    logind.lock(true);
    wait_for(LIMIT, "the lock while paused", || {
        paused_by(&d.status()) == ["by hand", "screen locked"]
    });
    logind.lock(false);
    wait_for(LIMIT, "the unlock while paused", || {
        paused_by(&d.status()) == ["by hand"]
    });
    wait_for(LIMIT, "the stays-paused notice", || {
        notices(&d).contains(&"Narration stays paused.".to_string())
    });
    let s = d.status();
    assert_eq!(s["paused"], true, "{s}");
    assert_eq!(d.request(r#"{"cmd":"resume"}"#)["message"], "resumed");
    wait_watching(&d, "narration after the resume by hand");

    // `ctl status` says it in words
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["ctl", "--socket"])
        .arg(&d.socket)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("session      following logind session 37"),
        "{text}"
    );

    d.stop();
    let n = notices(&d);
    for (said, times) in [
        ("Paused while the screen is locked.", 1),
        ("Paused while the lid is closed.", 0),
        ("Paused while the computer sleeps.", 1),
        ("Watching again.", 2),
        ("Narration stays paused.", 1),
        ("Narration paused.", 1),
        ("Narration resumed.", 1),
    ] {
        assert_eq!(count(&n, said), times, "{said:?} in {n:#?}");
    }
    no_session_warnings(&d.stderr());
}

#[test]
fn ctl_status_names_the_reason_of_the_pause() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let logind = Logind::serve(&bus.address);
    let d = start_daemon(dir, &bus.address);
    wait_for(LIMIT, "the session followed", || {
        d.status()["session"] == "following logind session 37"
    });
    logind.lock(true);
    logind.lid(true, true);
    wait_for(LIMIT, "paused by lock and lid", || {
        paused_by(&d.status()) == ["screen locked", "lid closed"]
    });
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["ctl", "--socket"])
        .arg(&d.socket)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(": paused: screen locked, lid closed"),
        "{text}"
    );
}

#[test]
fn without_logind_on_the_bus_the_daemon_says_so_once_and_narrates_on() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let d = start_daemon(dir, &bus.address);
    wait_for(LIMIT, "the watcher's verdict", || {
        d.status()["session"] == "not followed: logind is not on the system bus"
    });
    wait_watching(&d, "narration");
    let t = Instant::now();
    wait_for(LIMIT, "frames", || {
        d.status()["frames"]["captured"].as_u64().unwrap() >= 3
    });
    assert!(t.elapsed() < LIMIT);
    let err = d.stderr();
    assert_eq!(
        err.matches("logind is not on the system bus").count(),
        1,
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("INFO") && l.contains("logind is not on the system bus")),
        "{err}"
    );
    no_session_warnings(&err);
}

#[test]
fn without_a_bus_the_daemon_narrates_on() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix:path={}/no-bus-here", dir.path().display());
    let d = start_daemon(dir, &missing);
    wait_for(LIMIT, "the watcher's verdict", || {
        d.status()["session"]
            .as_str()
            .unwrap_or_default()
            .starts_with("not followed: cannot reach the bus")
    });
    wait_watching(&d, "narration");
    no_session_warnings(&d.stderr());
}
