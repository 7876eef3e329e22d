//! The control socket server: a Unix socket (mode 0600, in the user's runtime directory by default)
//! served by a small single-threaded tokio runtime on its own OS thread. Each line is one
//! [`Request`]; requests that need the model become [`Trigger`]s for the worker, `status` is
//! answered from the shared counters at once, `stop` asks the daemon to shut down.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Semaphore};

use super::protocol::{parse_request, ErrorCode, Request, Response, MAX_LINE};
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
}

/// Binds the socket at `path`: creates its folder (0700) if needed, replaces a stale socket file
/// left by a crash, refuses if a daemon answers there, and makes the socket 0600.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ControlError> {
    let err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(err)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// What the server needs from the daemon.
#[derive(Clone)]
pub struct Handles {
    pub triggers: Sender<Trigger>,
    pub stats: Arc<Stats>,
    /// Asks the daemon to shut down (`stop`).
    pub shutdown: Sender<()>,
}

/// Serves `listener` until `stop` changes or its sender is dropped; removes the socket file then.
pub fn serve(
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    handles: Handles,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    listener.set_nonblocking(true)?;
    let result = rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let handles = handles.clone();
                        match slots.clone().try_acquire_owned() {
                            Ok(permit) => {
                                tokio::spawn(async move {
                                    if let Err(e) = connection(stream, handles).await {
                                        tracing::debug!("control: connection ended: {e}");
                                    }
                                    drop(permit);
                                });
                            }
                            Err(_) => {
                                tokio::spawn(async move {
                                    let mut s = stream;
                                    let _ = write_response(&mut s, &Response::error(ErrorCode::Busy, "too many connections")).await;
                                });
                            }
                        }
                    }
                    Err(e) => tracing::warn!("control: accept failed: {e}"),
                },
            }
        }
        Ok::<(), std::io::Error>(())
    });
    let _ = std::fs::remove_file(&path);
    result
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

/// Answers one request.
pub async fn handle(req: Request, h: &Handles) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (trigger, wait, queued) = match req {
        Request::Status {} => return Response::Status(h.stats.report()),
        Request::Stop {} => {
            let _ = h.shutdown.try_send(());
            return Response::accepted("stopping");
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
