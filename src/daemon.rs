//! The daemon's wiring, and nothing else: channels, named threads, systemd notification, and an
//! ordered shutdown whose joins are bounded by a deadline.
//!
//! ```text
//!  capture ──frame slot (1, freshest wins)──▶ worker ──narrations──▶ speech ──▶ backend + log
//!  control socket ─┐                            ▲
//!  hotkey ─────────┼──triggers (bounded)────────┘
//!  SIGUSR1 ────────┤
//!  session (logind)┘
//! ```
//!
//! Start: speech first (so a failure can be spoken), then the control socket is bound (a second
//! daemon is refused before loading anything), the model is loaded, the other threads start and
//! systemd hears READY=1. Shutdown: capture stops, the generation is cancelled, the speech thread
//! writes every narration still in flight to the log, the socket is removed; threads that do not
//! finish by the deadline are left behind so the process still exits in time.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{select, Receiver, Sender};

use crate::capture::{self, frame_slot};
use crate::config::Config;
use crate::control::hotkey::{self, Action, KeyMapper};
use crate::control::server::{self, Handles};
use crate::describer::Describer;
use crate::narration::NarrationLog;
use crate::signals::Flag;
use crate::speech::resilient::Resilient;
use crate::speech::service::{Speaker, SpeechService, SpeechSettings};
use crate::speech::SpeechSink;
use crate::status::{Clock, Stats};
use crate::worker::{Trigger, Worker, WorkerSettings};

/// Requests to stop: send `()` (a signal handler, `scenesay ctl stop`) or drop every sender.
#[derive(Debug, Clone)]
pub struct Shutdown {
    pub tx: Sender<()>,
    pub rx: Receiver<()>,
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(4);
        Self { tx, rx }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the daemon stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A signal or `scenesay ctl stop`.
    Requested,
    /// A thread died; the daemon stopped so that systemd restarts it.
    Failed(String),
}

/// How long the whole shutdown may take before threads are left behind.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(1600);

const TRIGGER_QUEUE: usize = 8;

/// Threads without which the daemon is half alive: their end stops it (so systemd restarts it).
/// The hotkey thread may end (no keyboard readable), SIGUSR1's only ends on shutdown.
const ESSENTIAL: [&str; 4] = ["worker", "speech", "capture", "control"];

/// How long a failing daemon waits for its failure notice to be said.
const FAILURE_NOTICE_LIMIT: Duration = Duration::from_secs(5);

/// Without a systemd watchdog, how long the worker may make no progress before it is reported
/// stalled (log and STATUS=); with one, the watchdog interval.
const STALL_LIMIT: Duration = Duration::from_secs(60);

enum ThreadEnd {
    Exited(&'static str),
    Panicked(&'static str, String),
}

fn spawn(
    name: &'static str,
    ends: &Sender<ThreadEnd>,
    f: impl FnOnce() + Send + 'static,
) -> anyhow::Result<JoinHandle<()>> {
    let ends = ends.clone();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = ends.send(match r {
                Ok(()) => ThreadEnd::Exited(name),
                Err(p) => ThreadEnd::Panicked(name, panic_message(p.as_ref())),
            });
        })
        .with_context(|| format!("cannot start the {name} thread"))
}

/// The message a panic carried.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Joins `h` unless `deadline` passes first.
fn join_by(name: &str, h: Option<JoinHandle<()>>, deadline: Instant) {
    let Some(h) = h else { return };
    while !h.is_finished() {
        if Instant::now() >= deadline {
            tracing::warn!("shutdown: the {name} thread did not stop in time; leaving it");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = h.join();
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Keeps camera frames out of core dumps and out of other processes' reach: marks the process not
/// dumpable (`PR_SET_DUMPABLE` 0: no core file, and other programs of the same user cannot read
/// its memory through /proc or ptrace) and sets its core size limit to 0 (what the unit's
/// `LimitCORE=0` does, for a daemon started by hand too; a crash handler such as apport that
/// writes cores of non-dumpable processes for root honours it).
pub fn forbid_core_dumps() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE and constant arguments only changes a process flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs the daemon until it is asked to stop. `load` loads the model; it is called once the speech
/// thread can report a failure out loud.
pub fn run(
    config: &Config,
    load: impl FnOnce() -> anyhow::Result<Box<dyn Describer>>,
    shutdown: Shutdown,
) -> anyhow::Result<Stopped> {
    run_with_source(config, load, None, shutdown)
}

/// Opens a frame source (again after a failure or a pause).
pub type OpenSource =
    Box<dyn FnMut() -> Result<Box<dyn capture::FrameSource>, capture::CaptureError> + Send>;

/// [`run`], with frames from `source` instead of `[capture] source` when given (benchmarks).
pub fn run_with_source(
    config: &Config,
    load: impl FnOnce() -> anyhow::Result<Box<dyn Describer>>,
    source: Option<OpenSource>,
    shutdown: Shutdown,
) -> anyhow::Result<Stopped> {
    let clock = Clock::new();
    let stats = Arc::new(Stats::new(clock));
    let (ends_tx, ends) = crossbeam_channel::unbounded::<ThreadEnd>();

    // speech first: from here on, problems can be said out loud
    let log = match config.log_path() {
        Some(p) => match NarrationLog::open_with(&p, config.log.limits()) {
            Ok(l) => {
                tracing::info!("narration log: {}", p.display());
                l
            }
            Err(e) => {
                tracing::warn!(
                    "narration log {}: cannot open ({e}); narrating without it",
                    p.display()
                );
                NarrationLog::disabled()
            }
        },
        None => NarrationLog::disabled(),
    };
    let (speech_tx, speech_rx) = crossbeam_channel::unbounded();
    let speaker = Speaker::new(speech_tx);
    let (speech_stop, speech_stop_rx) = crossbeam_channel::bounded::<()>(0);
    let speech_cfg = config.speech.clone();
    let acknowledge = config.acknowledgement();
    let speech_stats = stats.clone();
    let speech = spawn("speech", &ends_tx, move || {
        let st = speech_stats.clone();
        let (sink, note) = Resilient::open(
            &speech_cfg,
            Box::new(move |name| st.set_speech_backend(name)),
        );
        if let Some(note) = note {
            tracing::warn!("speech: {note}");
        }
        tracing::info!("speech backend: {}", sink.name());
        let settings = SpeechSettings {
            stale_after: Duration::from_secs_f64(speech_cfg.stale_s),
            acknowledge,
            voice: crate::speech::Voice::from_config(&speech_cfg),
        };
        SpeechService::new(Box::new(sink), settings, log, speech_stats)
            .run(speech_rx, speech_stop_rx);
    })?;
    let speech = Some(speech);

    let stop_speech = |speech: Option<JoinHandle<()>>, stop: Sender<()>| {
        drop(stop);
        join_by(
            "speech",
            speech,
            Instant::now() + Duration::from_millis(500),
        );
    };

    // the control socket: refuse to run twice before loading anything
    let socket = config.socket_path();
    let listener = match server::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            speaker.notice("scenesay cannot start: another copy is already running.");
            stop_speech(speech, speech_stop);
            return Err(e.into());
        }
    };
    tracing::info!("control socket: {}", socket.display());

    // a loader that panics on a damaged checkpoint is a load failure like any other
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).unwrap_or_else(|p| {
        Err(crate::exit::Exit::new(
            crate::exit::MODEL_UNAVAILABLE,
            anyhow::anyhow!("the model loader crashed: {}", panic_message(p.as_ref())),
        )
        .into())
    });
    let describer = match loaded {
        Ok(d) => d,
        Err(e) => {
            speaker.notice("scenesay cannot start: the model could not be loaded.");
            let _ = std::fs::remove_file(&socket);
            stop_speech(speech, speech_stop);
            return Err(e);
        }
    };

    // worker (the watchdog's progress clocks start now: the model load before does not count)
    stats.beat();
    stats.capture_beat();
    let (slot, frames) = frame_slot();
    let (trigger_tx, triggers) = crossbeam_channel::bounded::<Trigger>(TRIGGER_QUEUE);
    let stop_flag = Flag::new();
    let (worker_stop, worker_stop_rx) = crossbeam_channel::bounded::<()>(0);
    let worker = Worker::new(
        describer,
        WorkerSettings::from_config(config),
        speaker.clone(),
        stats.clone(),
        stop_flag.clone(),
    );
    let worker = Some(spawn("worker", &ends_tx, move || {
        worker.run(frames, triggers, worker_stop_rx)
    })?);

    // capture
    let (capture_stop, capture_stop_rx) = crossbeam_channel::bounded::<()>(0);
    let cap_cfg = config.capture.clone();
    let (cap_speaker, cap_stats) = (speaker.clone(), stats.clone());
    let capture = Some(spawn("capture", &ends_tx, move || {
        let kind = cap_cfg.source;
        let rates = capture::Rates::from_config(&cap_cfg);
        let pace = cap_stats.pace.clone();
        let open: OpenSource = match source {
            Some(s) => s,
            None => Box::new(move || capture::open_source_paced(&cap_cfg, pace.clone())),
        };
        capture::run_capture_paced(
            open,
            kind,
            rates,
            slot,
            cap_speaker,
            cap_stats,
            capture_stop_rx,
        )
    })?);

    // control socket
    let (control_stop, control_stop_rx) = tokio::sync::watch::channel(false);
    let handles = Handles {
        triggers: trigger_tx.clone(),
        stats: stats.clone(),
        shutdown: shutdown.tx.clone(),
        speaker: speaker.clone(),
    };
    let sock = socket.clone();
    let control = Some(spawn("control", &ends_tx, move || {
        if let Err(e) = server::serve(listener, sock, handles, control_stop_rx) {
            tracing::error!("control socket: {e}");
        }
    })?);

    // hotkeys
    let (hotkey_stop, hotkey_stop_rx) = crossbeam_channel::bounded::<()>(0);
    let hotkey = match KeyMapper::from_config(&config.hotkey) {
        Ok(m) if !m.is_empty() => {
            let (tx, sp, device) = (
                trigger_tx.clone(),
                speaker.clone(),
                config.hotkey.device.clone(),
            );
            let sp2 = speaker.clone();
            Some(spawn("hotkey", &ends_tx, move || {
                hotkey::watch(
                    &device,
                    m,
                    &hotkey_stop_rx,
                    |a| {
                        if a == Action::Hush {
                            // straight to speech: no waiting behind the model's requests
                            sp2.hush();
                            return;
                        }
                        let t = match a {
                            Action::Detail => Trigger::Detail { reply: None },
                            Action::Repeat => Trigger::Repeat { reply: None },
                            Action::TogglePause => Trigger::TogglePause,
                            Action::Changed => Trigger::Changed { reply: None },
                            Action::Read => Trigger::Read { reply: None },
                            Action::NewConversation => Trigger::NewConversation { reply: None },
                            Action::ToggleMode => Trigger::Mode {
                                mode: None,
                                reply: None,
                            },
                            Action::Hush => return,
                            Action::Watches => Trigger::Watches {
                                speak: true,
                                reply: None,
                            },
                            Action::RecallView => Trigger::Recall {
                                query: None,
                                limit: 3,
                                reply: None,
                            },
                        };
                        let _ = tx.try_send(t);
                    },
                    |problem| {
                        tracing::warn!("hotkey: {problem}; scenesay runs without it");
                        sp.notice("The hotkey does not work: scenesay cannot read the keyboard. Run scenesay check to see why.");
                    },
                )
            })?)
        }
        Ok(_) => None,
        Err(e) => {
            // validated with the configuration; kept for configurations built in code
            tracing::warn!("hotkey: {e}");
            None
        }
    };

    // SIGUSR1 = detail request
    let usr1 = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1]) {
        Ok(mut signals) => {
            let handle = signals.handle();
            let tx = trigger_tx.clone();
            let h = spawn("sigusr1", &ends_tx, move || {
                for _ in signals.forever() {
                    let _ = tx.try_send(Trigger::Detail { reply: None });
                }
            })?;
            Some((handle, h))
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGUSR1: {e}");
            None
        }
    };
    // the login session: pause while locked, lid closed or asleep
    let (session_stop, session_stop_rx) = crossbeam_channel::bounded::<()>(0);
    let session = match crate::session::from_config(&config.session) {
        Some(watcher) => {
            let (tx, st, st2) = (trigger_tx.clone(), stats.clone(), stats.clone());
            let hooks = crate::session::Hooks {
                event: Box::new(move |e| {
                    if tx
                        .send_timeout(Trigger::Session(e), Duration::from_secs(2))
                        .is_err()
                    {
                        tracing::warn!("session: the worker did not take {e:?} in time");
                    }
                }),
                // the camera is let go (or was never held) once the capture no longer runs
                released: Box::new(move || st.source_state() != "running"),
                state: Box::new(move |s| st2.set_session(s)),
            };
            Some(spawn("session", &ends_tx, move || {
                crate::session::run(watcher, &hooks, &session_stop_rx)
            })?)
        }
        None => {
            stats.set_session("not followed (follow_logind = false)");
            None
        }
    };
    drop(trigger_tx);

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("watching"),
    ]);
    speaker.notice("Scene narration ready.");
    tracing::info!("scenesay is running (stop with Ctrl-C, SIGTERM or `scenesay ctl stop`)");

    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec));
    let tick = watchdog
        .map(|w| (w / 3).min(Duration::from_secs(5)))
        .unwrap_or(Duration::from_secs(5))
        .max(Duration::from_millis(100));
    let mut last_status = String::new();
    let mut warned_stall = false;
    let stopped = loop {
        select! {
            recv(shutdown.rx) -> _ => break Stopped::Requested,
            recv(ends) -> e => match e {
                Ok(ThreadEnd::Panicked(name, msg)) => {
                    tracing::error!("the {name} thread panicked: {msg}");
                    break Stopped::Failed(format!("the {name} thread panicked: {msg}"));
                }
                Ok(ThreadEnd::Exited(name)) if ESSENTIAL.contains(&name) => {
                    tracing::error!("the {name} thread stopped unexpectedly");
                    break Stopped::Failed(format!("the {name} thread stopped unexpectedly"));
                }
                Ok(ThreadEnd::Exited(name)) => tracing::debug!("the {name} thread ended"),
                Err(_) => break Stopped::Failed("every thread ended".into()),
            },
            default(tick) => {},
        }
        // only while the worker and the capture thread make progress: a hung worker, or a frame
        // read that never returns, must trip the watchdog
        let limit = watchdog.unwrap_or(STALL_LIMIT);
        let stalled: Vec<(&str, Duration)> = [
            ("worker", stats.since_beat()),
            ("capture", stats.since_capture_beat()),
        ]
        .into_iter()
        .filter(|(_, idle)| *idle >= limit)
        .collect();
        if watchdog.is_some() && stalled.is_empty() {
            notify(&[sd_notify::NotifyState::Watchdog]);
        }
        if !stalled.is_empty() && !warned_stall {
            for (who, idle) in &stalled {
                tracing::warn!(
                    "the {who} thread has made no progress for {} s{}",
                    idle.as_secs(),
                    if watchdog.is_some() {
                        "; the systemd watchdog will restart scenesay"
                    } else {
                        ""
                    }
                );
            }
        }
        warned_stall = !stalled.is_empty();
        let mut status = stats.summary();
        for (who, idle) in &stalled {
            status.push_str(&format!("; {who} stalled for {} s", idle.as_secs()));
        }
        if status != last_status {
            notify(&[sd_notify::NotifyState::Status(&status)]);
            last_status = status;
        }
    };

    if let Stopped::Failed(_) = &stopped {
        // no half-alive daemon: say so at once (when speech still works), then stop so systemd
        // restarts it
        speaker.silence();
        speaker.notice("scenesay failed and is stopping.");
        if !speaker.flush(FAILURE_NOTICE_LIMIT) {
            tracing::warn!("the failure notice could not be said in time");
        }
    }

    // ordered shutdown
    let t0 = Instant::now();
    tracing::info!("stopping");
    notify(&[sd_notify::NotifyState::Stopping]);
    drop(capture_stop);
    stop_flag.set();
    drop(worker_stop);
    let work_deadline = t0 + SHUTDOWN_DEADLINE * 5 / 8;
    join_by("capture", capture, work_deadline);
    join_by("worker", worker, work_deadline);
    drop(speech_stop);
    join_by("speech", speech, t0 + SHUTDOWN_DEADLINE * 7 / 8);
    let _ = control_stop.send(true);
    drop(hotkey_stop);
    drop(session_stop);
    if let Some((handle, _)) = &usr1 {
        handle.close();
    }
    let end = t0 + SHUTDOWN_DEADLINE;
    join_by("control", control, end);
    join_by("hotkey", hotkey, end);
    join_by("session", session, end);
    join_by("sigusr1", usr1.map(|(_, h)| h), end);
    tracing::info!("stopped in {} ms", t0.elapsed().as_millis());
    Ok(stopped)
}
