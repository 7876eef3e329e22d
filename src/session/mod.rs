//! Where session changes come from: a small [`SessionWatch`] trait with the real backend,
//! systemd-logind on the system D-Bus ([`logind`]), and a scripted fake for tests. A watcher
//! reports [`SessionEvent`]s through [`Hooks`]; what they mean for narration is decided in
//! [`crate::policy::session`] by the worker, the one owner of the pause.

pub mod logind;

use std::time::Duration;

use crossbeam_channel::Receiver;

pub use crate::policy::session::SessionEvent;

/// What a watcher reports to.
pub struct Hooks {
    /// A change, as it happens (repeats are filtered before: see [`Dedup`]).
    pub event: Box<dyn Fn(SessionEvent) + Send + Sync>,
    /// Whether the frame source has let go of the camera (the pause has taken effect): before
    /// the machine sleeps the watcher waits for it, up to [`SLEEP_RELEASE_LIMIT`].
    pub released: Box<dyn Fn() -> bool + Send + Sync>,
    /// The watcher's condition, for `scenesay ctl status` ("logind session 3 (seat0)", …).
    pub state: Box<dyn Fn(&str) + Send + Sync>,
}

/// How long a watcher holds back sleep for the camera to be released (logind's own limit,
/// `InhibitDelayMaxSec`, is 5 s by default).
pub const SLEEP_RELEASE_LIMIT: Duration = Duration::from_secs(3);

/// Why a watcher stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Nothing to watch here (no system bus, no logind on it: containers, some minimal systems).
    /// Not a fault: the daemon narrates on, as without `follow_logind`.
    #[error("{0}")]
    Unavailable(String),
    /// The watch broke off.
    #[error("{0}")]
    Failed(String),
}

/// A source of session changes.
pub trait SessionWatch: Send {
    /// Watches until `stop` closes (or is sent to), reporting to `hooks`.
    fn watch(self: Box<Self>, hooks: &Hooks, stop: &Receiver<()>) -> Result<(), WatchError>;
}

/// The watcher `[session]` asks for: logind on `bus` (empty: the system bus); `None` when
/// `follow_logind` is off.
pub fn from_config(cfg: &crate::config::SessionConfig) -> Option<Box<dyn SessionWatch>> {
    cfg.follow_logind
        .then(|| Box::new(logind::Logind::new(&cfg.bus)) as Box<dyn SessionWatch>)
}

/// Runs `watcher` until `stop`, logging how it ended: "not available" at info (the daemon carries
/// on as without it), a broken watch as a warning.
pub fn run(watcher: Box<dyn SessionWatch>, hooks: &Hooks, stop: &Receiver<()>) {
    match watcher.watch(hooks, stop) {
        Ok(()) => {}
        Err(WatchError::Unavailable(why)) => {
            tracing::info!("session: {why}; narration does not follow screen lock, lid or sleep");
            (hooks.state)(&format!("not followed: {why}"));
        }
        Err(WatchError::Failed(why)) => {
            tracing::warn!("session: {why}; narration no longer follows screen lock, lid or sleep");
            (hooks.state)(&format!("no longer followed: {why}"));
        }
    }
}

/// Passes on only what changed (logind repeats itself: a `Lock` signal, then `LockedHint`;
/// a property read again after a rebind).
#[derive(Debug, Default)]
pub struct Dedup {
    last: [Option<bool>; 4],
}

impl Dedup {
    /// Whether `ev` says something new.
    pub fn fresh(&mut self, ev: SessionEvent) -> bool {
        let (reason, on) = ev.reason();
        let i = crate::policy::session::Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        self.last[i].replace(on) != Some(on)
    }
}

/// One step of a [`Scripted`] watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptStep {
    Event(SessionEvent),
    Wait(Duration),
    /// Wait until the camera is released (as before sleep), at most this long.
    Released(Duration),
}

/// A fake watcher that plays a script: `"lock wait:50 unlock sleep released:1000 wake"`
/// (`lock unlock close open sleep wake away back`, `wait:MS`, `released:MS`).
#[derive(Debug, Clone)]
pub struct Scripted {
    steps: Vec<ScriptStep>,
}

impl Scripted {
    pub fn parse(script: &str) -> Result<Self, String> {
        let ms = |v: &str| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("bad milliseconds `{v}`"))
        };
        let steps = script
            .split_whitespace()
            .map(|t| {
                Ok(match t {
                    "lock" => ScriptStep::Event(SessionEvent::Locked(true)),
                    "unlock" => ScriptStep::Event(SessionEvent::Locked(false)),
                    "close" => ScriptStep::Event(SessionEvent::LidClosed(true)),
                    "open" => ScriptStep::Event(SessionEvent::LidClosed(false)),
                    "sleep" => ScriptStep::Event(SessionEvent::Sleeping(true)),
                    "wake" => ScriptStep::Event(SessionEvent::Sleeping(false)),
                    "away" => ScriptStep::Event(SessionEvent::Active(false)),
                    "back" => ScriptStep::Event(SessionEvent::Active(true)),
                    _ => match t.split_once(':') {
                        Some(("wait", v)) => ScriptStep::Wait(ms(v)?),
                        Some(("released", v)) => ScriptStep::Released(ms(v)?),
                        _ => return Err(format!("unknown step `{t}`")),
                    },
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { steps })
    }
}

impl SessionWatch for Scripted {
    fn watch(self: Box<Self>, hooks: &Hooks, stop: &Receiver<()>) -> Result<(), WatchError> {
        (hooks.state)("scripted");
        let stopped = |d: Duration| {
            !matches!(
                stop.recv_timeout(d),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
            )
        };
        let mut dedup = Dedup::default();
        for s in self.steps {
            match s {
                ScriptStep::Event(e) => {
                    if dedup.fresh(e) {
                        (hooks.event)(e)
                    }
                }
                ScriptStep::Wait(d) => {
                    if stopped(d) {
                        return Ok(());
                    }
                }
                ScriptStep::Released(limit) => {
                    let t = std::time::Instant::now();
                    while !(hooks.released)() && t.elapsed() < limit {
                        if stopped(Duration::from_millis(10)) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        let _ = stop.recv();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn hooks(log: Arc<Mutex<Vec<String>>>, released: Arc<Mutex<bool>>) -> Hooks {
        let l2 = log.clone();
        Hooks {
            event: Box::new(move |e| log.lock().unwrap().push(format!("{e:?}"))),
            released: Box::new(move || *released.lock().unwrap()),
            state: Box::new(move |s| l2.lock().unwrap().push(format!("state {s}"))),
        }
    }

    #[test]
    fn a_script_is_played_without_repeats_until_stopped() {
        let log = Arc::new(Mutex::new(vec![]));
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let w = Box::new(Scripted::parse("lock lock wait:5 close unlock unlock open").unwrap());
        let h = hooks(log.clone(), Arc::new(Mutex::new(true)));
        let t = std::thread::spawn(move || run(w, &h, &stop));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "a watcher runs until stopped");
        drop(stop_tx);
        t.join().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "state scripted",
                "Locked(true)",
                "LidClosed(true)",
                "Locked(false)",
                "LidClosed(false)"
            ]
        );
    }

    #[test]
    fn before_sleep_the_watcher_waits_for_the_release() {
        let log = Arc::new(Mutex::new(vec![]));
        let released = Arc::new(Mutex::new(false));
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let w = Box::new(Scripted::parse("sleep released:5000 wake").unwrap());
        let h = hooks(log.clone(), released.clone());
        let t = std::thread::spawn(move || run(w, &h, &stop));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(*log.lock().unwrap(), ["state scripted", "Sleeping(true)"]);
        *released.lock().unwrap() = true;
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            *log.lock().unwrap(),
            ["state scripted", "Sleeping(true)", "Sleeping(false)"]
        );
        drop(stop_tx);
        t.join().unwrap();
    }

    #[test]
    fn bad_scripts_are_refused() {
        assert!(Scripted::parse("lock dance").unwrap_err().contains("dance"));
        assert!(Scripted::parse("wait:x").unwrap_err().contains("`x`"));
    }

    #[test]
    fn an_unavailable_logind_is_reported_as_state_not_as_a_failure() {
        struct Absent;
        impl SessionWatch for Absent {
            fn watch(self: Box<Self>, _: &Hooks, _: &Receiver<()>) -> Result<(), WatchError> {
                Err(WatchError::Unavailable(
                    "logind is not on the system bus".into(),
                ))
            }
        }
        let log = Arc::new(Mutex::new(vec![]));
        let (_stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        run(
            Box::new(Absent),
            &hooks(log.clone(), Arc::new(Mutex::new(true))),
            &stop,
        );
        assert_eq!(
            *log.lock().unwrap(),
            ["state not followed: logind is not on the system bus"]
        );
    }
}
