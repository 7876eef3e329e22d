//! When a source is in trouble, and what the user hears about it: two small pure state machines.
//!
//! [`BadFrames`]: a camera buffer that cannot be decoded (cut off by a USB hiccup, a corrupt
//! JPEG) is skipped and counted, not a reason to close the camera; only `limit` of them in a row
//! count as a failure of the camera.
//!
//! [`Outage`]: a failure (the source cannot be opened, a device error, too many bad frames in a
//! row) starts an outage, and an outage is announced once; retries back off (1, 2, 4 … 30 s) and
//! do not announce it again, even when the camera opens and then fails at its first frame; "working
//! again" is said once, at the first good frame after the outage — not when the device merely
//! opens again.

use std::time::Duration;

/// What to do with a buffer that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadStep {
    /// Skip it and read the next one.
    Skip,
    /// `limit` in a row: the camera is failing (the message says how).
    Fail(String),
}

/// Undecodable buffers: counted, skipped, and a failure only when `limit` come in a row.
#[derive(Debug, Clone)]
pub struct BadFrames {
    limit: u32,
    in_row: u32,
    total: u64,
    untaken: u64,
}

impl BadFrames {
    pub fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            in_row: 0,
            total: 0,
            untaken: 0,
        }
    }

    /// A buffer was decoded.
    pub fn good(&mut self) {
        self.in_row = 0;
    }

    /// A buffer could not be decoded, for `why`.
    pub fn bad(&mut self, why: &str) -> BadStep {
        self.in_row += 1;
        self.total += 1;
        self.untaken += 1;
        if self.in_row >= self.limit {
            let n = self.in_row;
            self.in_row = 0;
            BadStep::Fail(format!(
                "{n} frames in a row could not be decoded (the last: {why})"
            ))
        } else {
            BadStep::Skip
        }
    }

    /// Bad buffers since the last call (for the daemon's counters).
    pub fn take_new(&mut self) -> u64 {
        std::mem::take(&mut self.untaken)
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// What the user hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The source failed: "Camera not available. I will keep trying."
    Outage,
    /// The first good frame after an outage: "Camera is working again."
    Back,
}

/// How to log a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// The first failure of an outage, or a new kind of failure during it.
    Warn,
    /// The same failure again.
    Debug,
}

/// The answer to a failure: what to say (at most once an outage), how to log it, how long to
/// wait before opening the source again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailStep {
    pub notice: Option<Notice>,
    pub log: LogLevel,
    pub retry_in: Duration,
    /// Failures since the last good frame.
    pub attempt: u32,
}

/// Backoff between attempts to (re)open a failing source: 1, 2, 4 … 30 seconds.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.min(5)).min(30))
}

/// Outages of a source: one notice when one begins, one when it ends.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    /// The failure being reported (None: no outage).
    current: Option<String>,
    failures: u32,
}

impl Outage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an outage is going on.
    pub fn active(&self) -> bool {
        self.current.is_some()
    }

    /// The source failed with `message` (it could not be opened, or failed while reading).
    pub fn failed(&mut self, message: &str) -> FailStep {
        self.failures += 1;
        let (notice, log) = match self.current.as_deref() {
            None => (Some(Notice::Outage), LogLevel::Warn),
            Some(m) if m != message => (None, LogLevel::Warn),
            Some(_) => (None, LogLevel::Debug),
        };
        self.current = Some(message.to_string());
        FailStep {
            notice,
            log,
            retry_in: backoff(self.failures - 1),
            attempt: self.failures,
        }
    }

    /// A good frame arrived: the end of an outage, if there was one.
    pub fn frame(&mut self) -> Option<Notice> {
        self.failures = 0;
        self.current.take().map(|_| Notice::Back)
    }
}
