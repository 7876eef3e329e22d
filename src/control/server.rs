//! The control socket server: a Unix socket (mode 0600, in the user's runtime directory by default)
//! served by a small single-threaded tokio runtime on its own OS thread. Each line is one
//! [`Request`]; requests that need the model become [`Trigger`]s for the worker, `status` is
//! answered from the shared counters at once, `stop` asks the daemon to shut down.
//!
//! Who may connect: the socket lives in a folder only its owner can enter (mode 0700, checked at
//! start), the socket file is 0600, and each connection's peer credentials (SO_PEERCRED) must be
//! the daemon's own user or root — anyone else gets a `forbidden` reply and is disconnected, even
//! if the file permissions were loosened by hand. There is no network listener of any kind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Semaphore};

use super::protocol::{parse_request, ErrorCode, Request, Response, MAX_LINE};
use crate::speech::service::VoiceChange;
use crate::status::Stats;
use crate::worker::Trigger;

/// Most connections served at once; more are answered `busy` and closed.
pub const MAX_CONNECTIONS: usize = 16;

/// Why the control socket cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another scenesay is already running: {} answers (stop it with `scenesay ctl stop`, or set `[control] socket` to another path)", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("cannot create the control socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the control socket's folder {} is not private ({why}): others could reach or replace the socket; use a folder only you can enter (mode 0700), e.g. leave `[control] socket` empty for $XDG_RUNTIME_DIR/scenesay.sock", path.display())]
    InsecureFolder { path: PathBuf, why: String },
    #[error("{} exists and is not a socket: scenesay will not remove it; set `[control] socket` to another path", .0.display())]
    NotASocket(PathBuf),
}

/// The effective user id of this process.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// May a peer with this user id use the socket? The daemon's own user, and root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// Checks that the socket's folder is owned by this user (or root) and closed to group and others.
pub fn check_folder(dir: &Path) -> Result<(), ControlError> {
    use std::os::unix::fs::MetadataExt;
    let insecure = |why: String| ControlError::InsecureFolder {
        path: dir.to_path_buf(),
        why,
    };
    let m = std::fs::metadata(dir).map_err(|e| ControlError::Bind {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let me = own_uid();
    if m.uid() != me && m.uid() != 0 {
        return Err(insecure(format!(
            "owned by user {}, not by you ({me})",
            m.uid()
        )));
    }
    if m.mode() & 0o077 != 0 {
        return Err(insecure(format!("mode {:o}", m.mode() & 0o7777)));
    }
    Ok(())
}

/// Binds the socket at `path`: creates its folder (0700) if needed and checks that it is private,
/// replaces a stale socket file left by a crash (never any other kind of file), refuses if a
/// daemon answers there, and makes the socket 0600.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ControlError> {
    use std::os::unix::fs::FileTypeExt;
    let err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if dir == crate::config::private_tmp_dir() {
            // the fallback under the shared temporary folder: someone else may have made it first
            // (a folder of theirs, or a link): only a real folder of ours, 0700, is used
            crate::private_files::private_dir(dir).map_err(|e| ControlError::InsecureFolder {
                path: dir.to_path_buf(),
                why: e.to_string(),
            })?;
        } else if !dir.as_os_str().is_empty() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(err)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(err)?;
            }
            check_folder(dir)?;
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(ControlError::NotASocket(path.to_path_buf()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// Removes the socket file when the server ends, however it ends (a panic included).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the server needs from the daemon.
#[derive(Clone)]
pub struct Handles {
    pub triggers: Sender<Trigger>,
    pub stats: Arc<Stats>,
    /// Asks the daemon to shut down (`stop`).
    pub shutdown: Sender<()>,
    /// The speech thread (`hush`, `rate`, `volume`, `voice`).
    pub speaker: crate::speech::service::Speaker,
}

/// Serves `listener` until `stop` changes or its sender is dropped; removes the socket file then.
/// A panic while serving a connection is a bug: it is re-raised on this thread, so the daemon
/// stops instead of running half alive.
pub fn serve(
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    handles: Handles,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _remove = RemoveOnDrop(path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    listener.set_nonblocking(true)?;
    let me = own_uid();
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            std::panic::resume_unwind(e.into_panic());
                        }
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if let Err(who) = check_peer(&stream, me) {
                            tracing::warn!("control: refused a connection from {who}: only user {me} and root may use the socket");
                            tasks.spawn(refuse(stream, ErrorCode::Forbidden, "this socket belongs to another user"));
                            continue;
                        }
                        match slots.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let handles = handles.clone();
                                tasks.spawn(async move {
                                    if let Err(e) = connection(stream, handles).await {
                                        tracing::debug!("control: connection ended: {e}");
                                    }
                                    drop(permit);
                                });
                            }
                            Err(_) => {
                                tasks.spawn(refuse(stream, ErrorCode::Busy, "too many connections"));
                            }
                        }
                    }
                    Err(e) => {
                        // e.g. out of file descriptors: wait instead of spinning
                        tracing::warn!("control: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
        Ok::<(), std::io::Error>(())
    })
}

/// The peer, described for the log, when it may not use the socket.
fn check_peer(stream: &tokio::net::UnixStream, me: u32) -> Result<(), String> {
    match stream.peer_cred() {
        Ok(c) if peer_allowed(c.uid(), me) => Ok(()),
        Ok(c) => Err(format!("user {} (pid {})", c.uid(), c.pid().unwrap_or(0))),
        Err(e) => Err(format!("an unknown peer ({e})")),
    }
}

/// Answers a connection with one error line and closes it.
async fn refuse(mut stream: tokio::net::UnixStream, code: ErrorCode, message: &'static str) {
    let _ = write_response(&mut stream, &Response::error(code, message)).await;
}

async fn write_response<W: AsyncWriteExt + Unpin>(w: &mut W, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

async fn connection(stream: tokio::net::UnixStream, h: Handles) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    loop {
        let mut buf = Vec::new();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            write_response(
                &mut w,
                &Response::error(
                    ErrorCode::TooLong,
                    format!("request longer than {MAX_LINE} bytes"),
                ),
            )
            .await?;
            // skip the rest of that line
            loop {
                buf.clear();
                let n = (&mut reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut buf)
                    .await?;
                if n == 0 {
                    return Ok(());
                }
                if buf.last() == Some(&b'\n') {
                    break;
                }
            }
            continue;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let resp = match parse_request(&buf) {
            Ok(req) => handle(req, &h).await,
            Err(e) => e.into(),
        };
        write_response(&mut w, &resp).await?;
    }
}

/// Changes speech settings on the speech thread (which answers at once, between utterances).
async fn adjust(h: &Handles, change: VoiceChange) -> Response {
    let speaker = h.speaker.clone();
    let r = tokio::task::spawn_blocking(move || {
        speaker.adjust(change, std::time::Duration::from_secs(5))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match r {
        Ok(v) => Response::Speech(v),
        Err(e) => Response::error(ErrorCode::BadRequest, e),
    }
}

/// Answers one request.
pub async fn handle(req: Request, h: &Handles) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (trigger, wait, queued) = match req {
        Request::Status {} => return Response::Status(Box::new(h.stats.report())),
        Request::Stop {} => {
            let _ = h.shutdown.try_send(());
            return Response::accepted("stopping");
        }
        Request::Hush {} => {
            h.speaker.hush();
            return Response::accepted("hushed");
        }
        Request::Rate { value } => {
            return adjust(
                h,
                VoiceChange {
                    rate: Some(value),
                    ..Default::default()
                },
            )
            .await
        }
        Request::Volume { value } => {
            return adjust(
                h,
                VoiceChange {
                    volume: Some(value),
                    ..Default::default()
                },
            )
            .await
        }
        Request::Voice { name } => {
            return adjust(
                h,
                VoiceChange {
                    voice: Some(name),
                    ..Default::default()
                },
            )
            .await
        }
        Request::Describe { wait } => (Trigger::Detail { reply: Some(tx) }, wait, "describing"),
        Request::Ask { question, wait } => (
            Trigger::Ask {
                question,
                reply: Some(tx),
            },
            wait,
            "answering",
        ),
        Request::Repeat {} => (Trigger::Repeat { reply: Some(tx) }, true, ""),
        Request::Changed { wait } => (Trigger::Changed { reply: Some(tx) }, wait, "comparing"),
        Request::Read { wait } => (Trigger::Read { reply: Some(tx) }, wait, "reading"),
        Request::Pause {} => (Trigger::Pause { reply: Some(tx) }, true, ""),
        Request::Resume {} => (Trigger::Resume { reply: Some(tx) }, true, ""),
        Request::Watch { condition } => (
            Trigger::Watch {
                condition,
                reply: Some(tx),
            },
            true,
            "",
        ),
        Request::Watches {} => (
            Trigger::Watches {
                speak: false,
                reply: Some(tx),
            },
            true,
            "",
        ),
        Request::Unwatch { id } => (
            Trigger::Unwatch {
                id,
                reply: Some(tx),
            },
            true,
            "",
        ),
        Request::Recall { query, limit } => (
            Trigger::Recall {
                query: Some(query),
                limit,
                reply: Some(tx),
            },
            true,
            "",
        ),
        Request::RecallView { limit } => (
            Trigger::Recall {
                query: None,
                limit,
                reply: Some(tx),
            },
            true,
            "",
        ),
        Request::Forget { older_than_s } => (
            Trigger::Forget {
                older_than: older_than_s.map(std::time::Duration::from_secs_f64),
                reply: Some(tx),
            },
            true,
            "",
        ),
        Request::New {} => (Trigger::NewConversation { reply: Some(tx) }, true, ""),
        Request::Mode { mode } => (
            Trigger::Mode {
                mode,
                reply: Some(tx),
            },
            true,
            "",
        ),
    };
    match h.triggers.try_send(trigger) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Response::error(
                ErrorCode::Busy,
                "too many requests are waiting; try again in a moment",
            )
        }
        Err(TrySendError::Disconnected(_)) => {
            return Response::error(ErrorCode::ShuttingDown, "scenesay is shutting down")
        }
    }
    if !wait {
        return Response::accepted(queued);
    }
    rx.await
        .unwrap_or_else(|_| Response::error(ErrorCode::ShuttingDown, "scenesay is shutting down"))
}
