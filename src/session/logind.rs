//! systemd-logind on the system D-Bus (`org.freedesktop.login1`), through `zbus` on a small
//! single-threaded tokio runtime inside the session thread.
//!
//! - The session followed is the daemon's own (`GetSessionByPID`), else `$XDG_SESSION_ID`'s, else
//!   the user's display session (`User.Display`: a user service runs outside any session). It is
//!   looked up again when sessions come and go (`SessionNew`, `SessionRemoved`), so a service
//!   started before the login finds the session once there is one.
//! - Its `Lock` / `Unlock` signals and `LockedHint` say whether the screen is locked, `Active`
//!   whether it is the session in front of the user.
//! - The manager's `PrepareForSleep` says the machine is about to sleep (and has woken). A
//!   "delay" sleep inhibitor lock is held so that the camera is released before the machine
//!   sleeps: the lock is let go once the pause has taken effect (at most
//!   [`super::SLEEP_RELEASE_LIMIT`]), and taken again after waking.
//! - `LidClosed`: logind announces its changes only since systemd 256, so it is also read every
//!   [`LID_POLL`].
//!
//! Only logind's own signals are listened to (the bus checks the sender). No system bus, or no
//! logind on it (containers), is [`WatchError::Unavailable`]: not an error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use futures_lite::StreamExt;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MessageStream, Proxy};

use super::{Dedup, Hooks, SessionEvent, SessionWatch, WatchError, SLEEP_RELEASE_LIMIT};

pub const LOGIND: &str = "org.freedesktop.login1";
pub const MANAGER_PATH: &str = "/org/freedesktop/login1";
pub const MANAGER: &str = "org.freedesktop.login1.Manager";
pub const SESSION: &str = "org.freedesktop.login1.Session";
pub const USER: &str = "org.freedesktop.login1.User";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// How often `LidClosed` is read (older logind does not announce its changes).
pub const LID_POLL: Duration = Duration::from_secs(5);

/// The logind watcher.
#[derive(Debug, Clone)]
pub struct Logind {
    /// Empty: the system bus.
    bus: String,
}

impl Logind {
    pub fn new(bus: &str) -> Self {
        Self {
            bus: bus.trim().to_string(),
        }
    }
}

impl SessionWatch for Logind {
    fn watch(self: Box<Self>, hooks: &Hooks, stop: &Receiver<()>) -> Result<(), WatchError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("session-io")
            .build()
            .map_err(|e| WatchError::Failed(format!("cannot start its runtime: {e}")))?;
        let stop = stop.clone();
        let r = rt.block_on(async {
            let stopped = tokio::task::spawn_blocking(move || {
                let _ = stop.recv();
            });
            watch(&self.bus, hooks, stopped).await
        });
        // the task waiting for the stop may still wait: not for it
        rt.shutdown_background();
        r
    }
}

fn failed(what: &str) -> impl Fn(zbus::Error) -> WatchError + '_ {
    move |e| WatchError::Failed(format!("{what}: {e}"))
}

async fn connect(bus: &str) -> zbus::Result<Connection> {
    if bus.is_empty() {
        Connection::system().await
    } else {
        zbus::connection::Builder::address(bus)?.build().await
    }
}

/// A proxy that reads properties when asked (no cache to fill at start).
async fn proxy<'a>(conn: &Connection, path: &'a str, iface: &'a str) -> zbus::Result<Proxy<'a>> {
    zbus::proxy::Builder::new(conn)
        .destination(LOGIND)?
        .path(path)?
        .interface(iface)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// Every signal logind sends from `path`.
async fn signals(conn: &Connection, path: &str) -> zbus::Result<MessageStream> {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(LOGIND)?
        .path(path)?
        .build();
    MessageStream::for_match_rule(rule, conn, Some(64)).await
}

/// The session to follow: its object path and id.
async fn find_session(conn: &Connection, manager: &Proxy<'_>) -> Option<(String, String)> {
    let by_pid: zbus::Result<OwnedObjectPath> =
        manager.call("GetSessionByPID", &(std::process::id())).await;
    let path = match by_pid {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!("session: GetSessionByPID: {e}");
            None
        }
    };
    let path = match path {
        Some(p) => Some(p),
        None => match std::env::var("XDG_SESSION_ID") {
            Ok(id) if !id.is_empty() => manager
                .call::<_, _, OwnedObjectPath>("GetSession", &(id.as_str()))
                .await
                .inspect_err(|e| tracing::debug!("session: GetSession({id}): {e}"))
                .ok(),
            _ => None,
        },
    };
    let path = match path {
        Some(p) => p,
        None => {
            // a user service: the user's display session
            // SAFETY: getuid cannot fail
            let uid = unsafe { libc::getuid() };
            let user: OwnedObjectPath = manager
                .call("GetUser", &(uid))
                .await
                .inspect_err(|e| tracing::debug!("session: GetUser({uid}): {e}"))
                .ok()?;
            let user = proxy(conn, user.as_str(), USER).await.ok()?;
            let (id, path): (String, OwnedObjectPath) = user
                .get_property("Display")
                .await
                .inspect_err(|e| tracing::debug!("session: User.Display: {e}"))
                .ok()?;
            if id.is_empty() || path.as_str() == "/" {
                return None;
            }
            path
        }
    };
    let session = proxy(conn, path.as_str(), SESSION).await.ok()?;
    let id: String = session.get_property("Id").await.unwrap_or_default();
    Some((path.to_string(), id))
}

/// Takes a "delay" lock on sleep: logind waits (a few seconds at most) for it to be let go.
async fn sleep_lock(manager: &Proxy<'_>) -> Option<zbus::zvariant::OwnedFd> {
    match manager
        .call(
            "Inhibit",
            &(
                "sleep",
                "scenesay",
                "Releases the camera before sleep",
                "delay",
            ),
        )
        .await
    {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::debug!("session: no sleep delay lock: {e}");
            None
        }
    }
}

/// The booleans among the changed properties of a `PropertiesChanged` signal on `iface`, and the
/// names of those invalidated (to read again).
fn changed(msg: &zbus::Message, iface: &str) -> (Vec<(String, bool)>, Vec<String>) {
    let Ok((on, props, invalidated)) = msg
        .body()
        .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
    else {
        return (vec![], vec![]);
    };
    if on != iface {
        return (vec![], vec![]);
    }
    let values = props
        .into_iter()
        .filter_map(|(k, v)| bool::try_from(v).ok().map(|b| (k, b)))
        .collect();
    (values, invalidated)
}

fn member(msg: &zbus::Message) -> String {
    msg.header()
        .member()
        .map(|m| m.to_string())
        .unwrap_or_default()
}

fn interface(msg: &zbus::Message) -> String {
    msg.header()
        .interface()
        .map(|m| m.to_string())
        .unwrap_or_default()
}

/// A session property as an event.
fn session_event(name: &str, value: bool) -> Option<SessionEvent> {
    match name {
        "LockedHint" => Some(SessionEvent::Locked(value)),
        "Active" => Some(SessionEvent::Active(value)),
        _ => None,
    }
}

async fn next_or_pending(s: &mut Option<MessageStream>) -> Option<zbus::Result<zbus::Message>> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn watch(
    bus: &str,
    hooks: &Hooks,
    mut stopped: tokio::task::JoinHandle<()>,
) -> Result<(), WatchError> {
    let conn = connect(bus).await.map_err(|e| {
        WatchError::Unavailable(if bus.is_empty() {
            format!("no system bus ({e})")
        } else {
            format!("cannot reach the bus {bus} ({e})")
        })
    })?;
    let dbus = zbus::fdo::DBusProxy::new(&conn)
        .await
        .map_err(failed("the bus"))?;
    let name = zbus::names::BusName::try_from(LOGIND).expect("a valid name");
    if !dbus
        .name_has_owner(name)
        .await
        .map_err(|e| WatchError::Failed(format!("the bus: {e}")))?
    {
        return Err(WatchError::Unavailable(
            "logind is not on the system bus".into(),
        ));
    }
    let manager = proxy(&conn, MANAGER_PATH, MANAGER)
        .await
        .map_err(failed("logind"))?;
    let mut manager_signals = signals(&conn, MANAGER_PATH)
        .await
        .map_err(failed("logind's signals"))?;
    let mut dedup = Dedup::default();
    let mut emit = |ev: SessionEvent| {
        if dedup.fresh(ev) {
            tracing::info!("session: {ev:?}");
            (hooks.event)(ev);
        }
    };
    let mut lock = sleep_lock(&manager).await;
    if let Ok(true) = manager.get_property::<bool>("PreparingForSleep").await {
        emit(SessionEvent::Sleeping(true));
    }
    let mut lid_poll = tokio::time::interval(LID_POLL);
    lid_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // (re)bind to the session to follow
        let session = find_session(&conn, &manager).await;
        let mut session_signals = None;
        let mut session_proxy = None;
        match &session {
            Some((path, id)) => {
                session_signals = Some(
                    signals(&conn, path)
                        .await
                        .map_err(failed("the session's signals"))?,
                );
                let p = proxy(&conn, path, SESSION)
                    .await
                    .map_err(failed("the session"))?;
                for name in ["LockedHint", "Active"] {
                    if let Ok(v) = p.get_property::<bool>(name).await {
                        emit(session_event(name, v).expect("a session property"));
                    }
                }
                session_proxy = Some(p);
                tracing::info!("session: following logind session {id} ({path})");
                (hooks.state)(&format!("following logind session {id}"));
            }
            None => {
                // nobody logged in (yet): nothing locked, nothing in the background
                emit(SessionEvent::Locked(false));
                emit(SessionEvent::Active(true));
                tracing::info!("session: no login session yet; following sleep and lid only");
                (hooks.state)("following logind (no login session yet)");
            }
        }
        loop {
            tokio::select! {
                _ = &mut stopped => return Ok(()),
                m = manager_signals.next() => {
                    let Some(m) = m else {
                        return Err(WatchError::Failed("logind's signals ended".into()));
                    };
                    let Ok(m) = m else { continue };
                    match (interface(&m).as_str(), member(&m).as_str()) {
                        (MANAGER, "PrepareForSleep") => {
                            let Ok(going) = m.body().deserialize::<bool>() else { continue };
                            emit(SessionEvent::Sleeping(going));
                            if going {
                                // let the machine sleep once the camera is let go
                                let t = Instant::now();
                                tokio::select! {
                                    _ = &mut stopped => return Ok(()),
                                    _ = async {
                                        while !(hooks.released)() && t.elapsed() < SLEEP_RELEASE_LIMIT {
                                            tokio::time::sleep(Duration::from_millis(20)).await;
                                        }
                                    } => {}
                                }
                                if lock.take().is_some() {
                                    tracing::debug!(
                                        "session: sleep may go on ({} ms)",
                                        t.elapsed().as_millis()
                                    );
                                }
                            } else if lock.is_none() {
                                lock = sleep_lock(&manager).await;
                            }
                        }
                        (MANAGER, "SessionNew" | "SessionRemoved")
                            if find_session(&conn, &manager).await != session =>
                        {
                            break;
                        }
                        (PROPERTIES, "PropertiesChanged") => {
                            let (values, invalidated) = changed(&m, MANAGER);
                            for (k, v) in values {
                                if k == "LidClosed" {
                                    emit(SessionEvent::LidClosed(v));
                                }
                            }
                            if invalidated.iter().any(|k| k == "LidClosed") {
                                lid_poll.reset_immediately();
                            }
                        }
                        _ => {}
                    }
                }
                m = next_or_pending(&mut session_signals) => {
                    let Some(m) = m else {
                        // the session went away
                        break;
                    };
                    let Ok(m) = m else { continue };
                    match (interface(&m).as_str(), member(&m).as_str()) {
                        (SESSION, "Lock") => emit(SessionEvent::Locked(true)),
                        (SESSION, "Unlock") => emit(SessionEvent::Locked(false)),
                        (PROPERTIES, "PropertiesChanged") => {
                            let (values, invalidated) = changed(&m, SESSION);
                            for (k, v) in values {
                                if let Some(ev) = session_event(&k, v) {
                                    emit(ev);
                                }
                            }
                            if let Some(p) = &session_proxy {
                                for k in invalidated {
                                    if let Ok(v) = p.get_property::<bool>(&k).await {
                                        if let Some(ev) = session_event(&k, v) {
                                            emit(ev);
                                        }
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                _ = lid_poll.tick() => {
                    if let Ok(v) = manager.get_property::<bool>("LidClosed").await {
                        emit(SessionEvent::LidClosed(v));
                    }
                }
            }
        }
        tracing::debug!("session: sessions changed; looking for the session again");
    }
}
