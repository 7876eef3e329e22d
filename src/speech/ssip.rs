//! A small client of SSIP, speech-dispatcher's own protocol, over its Unix socket: no library
//! thread, no callback table, every wait bounded. Replies are read with a time limit; the events
//! speech-dispatcher sends about our utterances (begin, end, cancelled) are read whenever the
//! socket has data, between replies or when polled. Dropping the client closes the connection:
//! nothing is left behind.
//!
//! Protocol, in short: a command is one line ending in CR LF; the reply is one or more lines
//! `NNN-text` and a last line `NNN text` (2xx success, 3xx/4xx/5xx errors). Events are replies of
//! their own, 7xx, sent at any time: `701-msg 701-client 701 BEGIN`, `702 … END`,
//! `703 … CANCELED`. `SPEAK` is answered 230, then the text follows, a line with a lone `.` ends
//! it (a text line starting with `.` gets a second one) and the answer `225-msg 225 OK` names the
//! message.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one command may take to be answered.
pub const REPLY_LIMIT: Duration = Duration::from_secs(3);

/// An SSIP priority (speech-dispatcher's documentation, "Message Priority Model").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsipPriority {
    /// Said at once, interrupting everything else; never used by scenesay.
    Important,
    /// Waits for `important` and other `message`s, cancels `text` and `notification`.
    Message,
    /// Waits for `important` and `message`; cut short by newer `text` or anything higher.
    Text,
    /// Only said when nothing else is said; dropped when anything else speaks or waits.
    Notification,
}

impl SsipPriority {
    pub fn name(self) -> &'static str {
        match self {
            SsipPriority::Important => "important",
            SsipPriority::Message => "message",
            SsipPriority::Text => "text",
            SsipPriority::Notification => "notification",
        }
    }
}

/// What speech-dispatcher said about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Begin,
    End,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsipEvent {
    pub msg: u64,
    pub kind: EventKind,
}

/// One complete reply: its code and its lines' texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Cuts complete replies out of the bytes received so far. Pure, for tests.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    lines: Vec<String>,
}

impl ReplyParser {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, if one has arrived. A line that is not `NNN-…`/`NNN …` is an
    /// error.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, String> {
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let b = line.as_bytes();
            if b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) || !matches!(b[3], b'-' | b' ')
            {
                return Err(format!("unexpected line from speech-dispatcher: {line:?}"));
            }
            let code: u16 = line[..3].parse().expect("three digits");
            self.lines.push(line[4..].to_string());
            if b[3] == b' ' {
                return Ok(Some(Reply {
                    code,
                    lines: std::mem::take(&mut self.lines),
                }));
            }
        }
        Ok(None)
    }
}

/// The event a 7xx reply stands for (`701-msg`, `701-client`, `701 BEGIN`).
pub fn event(r: &Reply) -> Option<SsipEvent> {
    let kind = match r.code {
        701 => EventKind::Begin,
        702 => EventKind::End,
        703 => EventKind::Cancelled,
        _ => return None,
    };
    let msg = r.lines.first()?.trim().parse().ok()?;
    Some(SsipEvent { msg, kind })
}

/// The text of a `SPEAK` as sent: lines joined by CR LF, a line starting with `.` doubled, the
/// terminating `.` line appended.
pub fn speak_body(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

/// Where speech-dispatcher listens: `$SPEECHD_ADDRESS` (`unix_socket:PATH`), else
/// `$XDG_RUNTIME_DIR/speech-dispatcher/speechd.sock`, else `/run/user/UID/…`.
pub fn socket_path() -> Result<PathBuf, String> {
    if let Ok(a) = std::env::var("SPEECHD_ADDRESS") {
        if !a.is_empty() {
            let (method, rest) = a.split_once(':').unwrap_or((a.as_str(), ""));
            return match method {
                "unix_socket" if !rest.is_empty() => Ok(PathBuf::from(rest)),
                "unix_socket" => Ok(default_socket()),
                _ => Err(format!(
                    "SPEECHD_ADDRESS={a}: only unix_socket addresses are supported"
                )),
            };
        }
    }
    Ok(default_socket())
}

fn default_socket() -> PathBuf {
    let run = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", unsafe { libc::getuid() })));
    run.join("speech-dispatcher/speechd.sock")
}

/// A connection to speech-dispatcher.
pub struct Client {
    stream: UnixStream,
    parser: ReplyParser,
    events: Vec<SsipEvent>,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsipError {
    #[error("{0}")]
    Io(String),
    #[error("speech-dispatcher did not answer `{0}` within {1} s")]
    Timeout(String, u64),
    #[error("speech-dispatcher refused `{command}`: {code} {text}")]
    Refused {
        command: String,
        code: u16,
        text: String,
    },
}

impl Client {
    /// Connects to the socket at `path` (no spawning: see [`connect_or_spawn`]).
    pub fn connect(path: &Path) -> Result<Self, SsipError> {
        let stream = UnixStream::connect(path)
            .map_err(|e| SsipError::Io(format!("cannot connect to {}: {e}", path.display())))?;
        stream
            .set_write_timeout(Some(REPLY_LIMIT))
            .map_err(|e| SsipError::Io(e.to_string()))?;
        Ok(Self {
            stream,
            parser: ReplyParser::default(),
            events: vec![],
        })
    }

    /// Reads what has arrived, waiting at most until `deadline` (`None`: not at all).
    fn fill(&mut self, deadline: Option<Instant>) -> Result<bool, SsipError> {
        let io = |e: std::io::Error| SsipError::Io(format!("speech-dispatcher connection: {e}"));
        match deadline {
            None => self.stream.set_nonblocking(true).map_err(io)?,
            Some(d) => {
                self.stream.set_nonblocking(false).map_err(io)?;
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                self.stream.set_read_timeout(Some(left)).map_err(io)?;
            }
        }
        let mut buf = [0u8; 4096];
        let mut got = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(SsipError::Io(
                        "speech-dispatcher closed the connection".into(),
                    ))
                }
                Ok(n) => {
                    got = true;
                    self.parser.feed(&buf[..n]);
                    if deadline.is_some() || n < buf.len() {
                        return Ok(got);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(got)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Next reply that is not an event (events are kept for [`Client::take_events`]).
    fn reply(&mut self, command: &str) -> Result<Reply, SsipError> {
        let deadline = Instant::now() + REPLY_LIMIT;
        loop {
            while let Some(r) = self.parser.next_reply().map_err(SsipError::Io)? {
                match event(&r) {
                    Some(e) => self.events.push(e),
                    None if (700..800).contains(&r.code) => {}
                    None => return Ok(r),
                }
            }
            if Instant::now() >= deadline {
                return Err(SsipError::Timeout(command.into(), REPLY_LIMIT.as_secs()));
            }
            self.fill(Some(deadline))?;
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), SsipError> {
        self.stream
            .set_nonblocking(false)
            .and_then(|_| self.stream.write_all(bytes))
            .map_err(|e| SsipError::Io(format!("speech-dispatcher connection: {e}")))
    }

    /// Sends one command line and returns its successful reply.
    pub fn command(&mut self, command: &str) -> Result<Reply, SsipError> {
        self.send(format!("{command}\r\n").as_bytes())?;
        let r = self.reply(command)?;
        if r.ok() {
            Ok(r)
        } else {
            Err(SsipError::Refused {
                command: command.into(),
                code: r.code,
                text: r.lines.join(" "),
            })
        }
    }

    /// Queues `text`; returns its message id.
    pub fn speak(&mut self, text: &str) -> Result<u64, SsipError> {
        let r = self.command("SPEAK")?;
        if r.code != 230 {
            return Err(SsipError::Refused {
                command: "SPEAK".into(),
                code: r.code,
                text: r.lines.join(" "),
            });
        }
        self.send(speak_body(text).as_bytes())?;
        let r = self.reply("SPEAK (text)")?;
        if !r.ok() {
            return Err(SsipError::Refused {
                command: "SPEAK (text)".into(),
                code: r.code,
                text: r.lines.join(" "),
            });
        }
        r.lines
            .first()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| SsipError::Io(format!("SPEAK answered without a message id: {r:?}")))
    }

    /// The events received so far, oldest first (reads what is waiting on the socket, without
    /// blocking).
    pub fn take_events(&mut self) -> Result<Vec<SsipEvent>, SsipError> {
        self.fill(None)?;
        while let Some(r) = self.parser.next_reply().map_err(SsipError::Io)? {
            if let Some(e) = event(&r) {
                self.events.push(e);
            }
        }
        Ok(std::mem::take(&mut self.events))
    }

    /// The voices of the current output module: (name, language).
    pub fn voices(&mut self) -> Result<Vec<(String, String)>, SsipError> {
        let r = self.command("LIST SYNTHESIS_VOICES")?;
        Ok(r.lines
            .iter()
            .take(r.lines.len().saturating_sub(1))
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((f.next()?.to_string(), f.next().unwrap_or("").to_string()))
            })
            .collect())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // a polite goodbye, never waited for
        let _ = self.stream.set_nonblocking(true);
        let _ = self.stream.write_all(b"QUIT\r\n");
    }
}

/// Connects to speech-dispatcher, starting it first when nothing listens (as its own client
/// library does: `$SPEECHD_CMD` or `speech-dispatcher`, with `--spawn`), waiting at most
/// `limit` for it.
pub fn connect_or_spawn(limit: Duration) -> Result<Client, String> {
    let path = socket_path()?;
    match Client::connect(&path) {
        Ok(c) => Ok(c),
        Err(first) => {
            let program = std::env::var_os("SPEECHD_CMD")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "speech-dispatcher".into());
            let child = std::process::Command::new(&program)
                .args([
                    "--spawn",
                    "--communication-method",
                    "unix_socket",
                    "--socket-path",
                ])
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    return Err(format!(
                        "{first}; starting {} failed: {e}",
                        PathBuf::from(&program).display()
                    ))
                }
            };
            let t = Instant::now();
            loop {
                if let Ok(c) = Client::connect(&path) {
                    let _ = reap(&mut child, t + limit);
                    return Ok(c);
                }
                if let Ok(Some(s)) = child.try_wait() {
                    if !s.success() {
                        return Err(format!("{first}; speech-dispatcher --spawn failed ({s})"));
                    }
                }
                if t.elapsed() >= limit {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{first}; speech-dispatcher did not start within {} s",
                        limit.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Waits for the spawning process to exit (it forks the server and ends), at most until
/// `deadline`; a straggler is left to exit on its own but never becomes a zombie of ours for long.
fn reap(child: &mut std::process::Child, deadline: Instant) -> std::io::Result<()> {
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(bytes: &[u8]) -> Vec<Reply> {
        let mut p = ReplyParser::default();
        let mut out = vec![];
        // byte by byte: a reply split anywhere is still one reply
        for b in bytes {
            p.feed(&[*b]);
            while let Some(r) = p.next_reply().unwrap() {
                out.push(r);
            }
        }
        out
    }

    #[test]
    fn replies_and_events_are_cut_correctly() {
        let r = replies(b"208 OK CLIENT NAME SET\r\n225-17\r\n225 OK MESSAGE QUEUED\r\n701-17\r\n701-3\r\n701 BEGIN\r\n");
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].code, 208);
        assert!(r[0].ok());
        assert_eq!(r[1].lines, ["17", "OK MESSAGE QUEUED"]);
        assert_eq!(event(&r[1]), None);
        assert_eq!(
            event(&r[2]),
            Some(SsipEvent {
                msg: 17,
                kind: EventKind::Begin
            })
        );
        let e = replies(b"703-4\r\n703-1\r\n703 CANCELED\r\n702-5\r\n702-1\r\n702 END\r\n");
        assert_eq!(event(&e[0]).unwrap().kind, EventKind::Cancelled);
        assert_eq!(
            event(&e[1]).unwrap(),
            SsipEvent {
                msg: 5,
                kind: EventKind::End
            }
        );
        let bad = replies(b"409 ERR RATE TOO HIGH\r\n");
        assert!(!bad[0].ok());
    }

    #[test]
    fn garbage_is_an_error() {
        let mut p = ReplyParser::default();
        p.feed(b"hello\r\n");
        assert!(p.next_reply().is_err());
    }

    #[test]
    fn speak_bodies_escape_dots_and_end_with_a_dot_line() {
        assert_eq!(speak_body("Hello."), "Hello.\r\n.\r\n");
        assert_eq!(speak_body("a\n.b\r\n."), "a\r\n..b\r\n..\r\n.\r\n");
    }
}
