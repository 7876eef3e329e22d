//! The control socket client used by `scenesay ctl` (and tests): one request line out, one
//! response line back, with a time limit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("scenesay is not running: nothing answers at {} ({reason}); start it with `scenesay run` or `systemctl --user start scenesay`", path.display())]
    NotRunning { path: PathBuf, reason: String },
    #[error("no answer from scenesay within {0:?}")]
    Timeout(Duration),
    #[error("talking to scenesay: {0}")]
    Io(#[from] std::io::Error),
    #[error("scenesay sent a reply that cannot be read: {0}")]
    BadReply(String),
}

/// Sends one request and waits up to `timeout` for its response.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let line = serde_json::to_string(req).map_err(|e| ClientError::BadReply(e.to_string()))?;
    let reply = raw(path, line.as_bytes(), timeout)?;
    serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(format!("{e}: {reply}")))
}

/// Sends `line` (a newline is added) and returns the reply line, unparsed.
pub fn raw(path: &Path, line: &[u8], timeout: Duration) -> Result<String, ClientError> {
    let mut s = UnixStream::connect(path).map_err(|e| ClientError::NotRunning {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(line)?;
    s.write_all(b"\n")?;
    s.flush()?;
    let mut reply = String::new();
    match BufReader::new(&s).read_line(&mut reply) {
        Ok(0) => Err(ClientError::BadReply(
            "the connection closed without a reply".into(),
        )),
        Ok(_) => Ok(reply.trim_end().to_string()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(ClientError::Timeout(timeout))
        }
        Err(e) => Err(e.into()),
    }
}
