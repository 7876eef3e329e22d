//! Who may use the control socket: its folder must be private (0700, owned by the user), a file
//! that is not a socket is never removed to make room, and a connection from another user is
//! refused by its peer credentials (SO_PEERCRED) even when the file permissions were loosened by
//! hand. The cross-user part needs root (to act as another user); it is skipped, saying so,
//! otherwise.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use scenesay::control::client;
use scenesay::control::protocol::{ErrorCode, Request, Response};
use scenesay::control::server::{self, ControlError, Handles};
use scenesay::status::{Clock, Stats};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_folder_others_can_enter_is_refused() {
    for mode in [0o777, 0o755, 0o750, 0o701] {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), mode);
        let path = dir.path().join("scenesay.sock");
        match server::bind(&path) {
            Err(e @ ControlError::InsecureFolder { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("mode {mode:o}")), "{msg}");
                assert!(msg.contains("0700"), "{msg}");
            }
            other => panic!("mode {mode:o}: expected a refusal, got {other:?}"),
        }
        assert!(!path.exists());
    }
    // a folder it creates itself is private, and accepted
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/sub/scenesay.sock");
    let l = server::bind(&path).unwrap();
    let mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(l);
}

#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o700);
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "my notes").unwrap();
    match server::bind(&path) {
        Err(e @ ControlError::NotASocket(_)) => {
            assert!(e.to_string().contains("not a socket"), "{e}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "my notes");
}

#[test]
fn peer_rule() {
    assert!(server::peer_allowed(1000, 1000));
    assert!(server::peer_allowed(0, 1000), "root");
    assert!(!server::peer_allowed(1001, 1000));
    assert!(!server::peer_allowed(65534, 0));
}

/// Connects as user and group 65534 (nobody) from a thread of its own: the raw system calls change
/// only that thread's credentials, not the test process's.
fn connect_as_nobody(path: &Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: raw setresgid/setresuid act on the calling thread only; it ends right after.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
        }
        let mut s = UnixStream::connect(&path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // the refusal may come before the request is written
        let _ = s.write_all(b"{\"cmd\":\"stop\"}\n");
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        Ok(line)
    })
    .join()
    .unwrap()
}

#[test]
fn another_user_is_refused_by_peer_credentials() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot act as another user; the cross-user check is skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o700);
    let path = dir.path().join("scenesay.sock");
    let listener = server::bind(&path).unwrap();
    let (triggers, _rx) = crossbeam_channel::bounded(8);
    let (shutdown, shutdown_rx) = crossbeam_channel::bounded(1);
    let handles = Handles {
        triggers,
        stats: Arc::new(Stats::new(Clock::new())),
        shutdown,
        speaker: scenesay::speech::service::Speaker::new(crossbeam_channel::unbounded().0),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let p = path.clone();
    let thread = std::thread::spawn(move || server::serve(listener, p, handles, stop_rx));

    // with the shipped permissions another user cannot even reach the socket
    let e = connect_as_nobody(&path).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");

    // permissions loosened by hand: the peer credentials still keep it out
    chmod(dir.path(), 0o711);
    chmod(&path, 0o666);
    let line = connect_as_nobody(&path).unwrap();
    let r: Response = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    match r {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::Forbidden),
        other => panic!("{other:?}"),
    }
    assert!(
        shutdown_rx.try_recv().is_err(),
        "the refused peer's stop request was not obeyed"
    );
    // the owner is still served
    assert!(matches!(
        client::request(&path, &Request::Status {}, Duration::from_secs(10)).unwrap(),
        Response::Status(_)
    ));
    stop.send(true).unwrap();
    thread.join().unwrap().unwrap();
    assert!(!path.exists());
}
