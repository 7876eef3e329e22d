//! `scenesay ctl`: talk to the running daemon over its control socket.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::control::client::{self, ClientError};
use crate::control::protocol::{Request, Response, StatusReport};
use crate::exit::{self, WithExit};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file to read the socket path from (same search as `scenesay run`).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Control socket, instead of the configuration's (default $XDG_RUNTIME_DIR/scenesay.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Seconds to wait for the answer (a detailed description can take a while on a slow CPU).
    #[arg(long, default_value_t = 120.0, value_name = "S")]
    pub timeout: f64,

    /// Print the daemon's JSON reply as it is.
    #[arg(long)]
    pub json: bool,

    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Describe what the camera sees now, in detail (interrupts the narration); prints the text.
    Describe {
        /// Return at once instead of waiting for the description (it is still spoken).
        #[arg(long)]
        no_wait: bool,
    },
    /// Ask a question about what the camera sees now; prints the answer. Within `[describe]
    /// followup_s` (60 s) of an answer about the same view it follows that answer up: the model
    /// still has the picture and the conversation, so the answer starts sooner ("And what is on
    /// its left?"). A changed view, `describe` or `new` starts afresh.
    Ask {
        /// The question, e.g. "What colour is the mug?"
        #[arg(required = true, num_args = 1..)]
        question: Vec<String>,
        /// Return at once instead of waiting for the answer (it is still spoken).
        #[arg(long)]
        no_wait: bool,
    },
    /// Say the last narration again.
    Repeat,
    /// Say what is different from the last description; prints it.
    Changed {
        /// Return at once instead of waiting for the answer (it is still spoken).
        #[arg(long)]
        no_wait: bool,
    },
    /// Read out the text in view (looks at 1024 px); prints it.
    Read {
        /// Return at once instead of waiting for the text (it is still spoken).
        #[arg(long)]
        no_wait: bool,
    },
    /// Pause scene narration (describe and ask still work).
    Pause,
    /// Resume scene narration.
    Resume,
    /// Stop speaking now and drop what waits to be said; scene narration goes on.
    Hush,
    /// Set the speaking rate until restart: -100 (slowest) … 0 (normal) … 100 (fastest).
    Rate {
        #[arg(allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-100..=100))]
        value: i32,
    },
    /// Set the volume until restart: -100 (quietest) … 0 (the backend's own) … 100 (loudest).
    Volume {
        #[arg(allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-100..=100))]
        value: i32,
    },
    /// Set the voice until restart (`spd-say -L` lists speech-dispatcher's voices); "" = default.
    Voice { name: String },
    /// Show uptime, frame counters, speech settings, the last narration and recent latencies.
    Status,
    /// Stop the daemon.
    Stop,
    /// Watch for a condition and be told once when it becomes true, e.g.
    /// `scenesay ctl watch "the kettle light is off"`; `--list` shows the watches. They last until
    /// scenesay stops.
    Watch {
        /// The condition, in your words: "the front door is open", "the washing machine light is off".
        #[arg(num_args = 1.., required_unless_present = "list", conflicts_with = "list")]
        condition: Vec<String>,
        /// List the watches that are set (number, state, last score).
        #[arg(long)]
        list: bool,
    },
    /// Remove watch N (the number `watch` printed, see `watch --list`).
    Unwatch { id: u32 },
    /// When did the camera last see something? Searches the descriptions of past scenes, e.g.
    /// `scenesay ctl recall "my keys"`; `--view` finds earlier times the current view was seen.
    Recall {
        /// What to look for, in words.
        #[arg(num_args = 1.., required_unless_present = "view", conflicts_with = "view")]
        query: Vec<String>,
        /// Compare the current view with the remembered ones (by the scene embedding) instead.
        #[arg(long)]
        view: bool,
        /// How many past views to list (the best one is also said).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
        limit: u16,
    },
    /// Delete the visual memory kept for `recall` (the narration log is separate: `[log]`).
    Forget {
        /// Only what is older than this, e.g. 2h, 30min, 7days.
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
    /// Start a new conversation: the next `ask` is not a follow-up of the last answer (a
    /// question within `[describe] followup_s` of an answer about the same view is).
    New,
    /// When scenes are narrated, until restart: `change` (when the view changes) or `periodic`
    /// (every `[scene] period_s` seconds, changed or not); without an argument, the other one.
    Mode {
        #[arg(value_enum)]
        mode: Option<ModeArg>,
    },
}

/// `scenesay ctl mode` choices.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Change,
    Periodic,
}

fn socket_path(a: &Args) -> anyhow::Result<PathBuf> {
    if let Some(s) = &a.socket {
        return Ok(s.clone());
    }
    let (config, _) = super::run::load_config(a.config.as_deref())?;
    Ok(config.socket_path())
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    if !(a.timeout > 0.0 && a.timeout.is_finite()) {
        return Err(anyhow::anyhow!(
            "--timeout must be a positive number of seconds"
        ))
        .exit_code(exit::USAGE);
    }
    let path = socket_path(&a)?;
    let req = match &a.action {
        Action::Describe { no_wait } => Request::Describe { wait: !no_wait },
        Action::Ask { question, no_wait } => Request::Ask {
            question: question.join(" "),
            wait: !no_wait,
        },
        Action::Repeat => Request::Repeat {},
        Action::Changed { no_wait } => Request::Changed { wait: !no_wait },
        Action::Read { no_wait } => Request::Read { wait: !no_wait },
        Action::Pause => Request::Pause {},
        Action::Resume => Request::Resume {},
        Action::Hush => Request::Hush {},
        Action::Rate { value } => Request::Rate { value: *value },
        Action::Volume { value } => Request::Volume { value: *value },
        Action::Voice { name } => Request::Voice { name: name.clone() },
        Action::Status => Request::Status {},
        Action::Stop => Request::Stop {},
        Action::Watch { list: true, .. } => Request::Watches {},
        Action::Watch { condition, .. } => Request::Watch {
            condition: condition.join(" "),
        },
        Action::Unwatch { id } => Request::Unwatch { id: *id },
        Action::Recall {
            view: true, limit, ..
        } => Request::RecallView {
            limit: *limit as usize,
        },
        Action::Recall { query, limit, .. } => Request::Recall {
            query: query.join(" "),
            limit: *limit as usize,
        },
        Action::Forget { older_than } => Request::Forget {
            older_than_s: older_than.map(|d| d.as_secs_f64()),
        },
        Action::New => Request::New {},
        Action::Mode { mode } => Request::Mode {
            mode: mode.map(|m| match m {
                ModeArg::Change => crate::config::SceneMode::Change,
                ModeArg::Periodic => crate::config::SceneMode::Periodic,
            }),
        },
    };
    let timeout = Duration::from_secs_f64(a.timeout);
    let resp = match client::request(&path, &req, timeout) {
        Ok(r) => r,
        Err(e @ (ClientError::NotRunning { .. } | ClientError::Timeout(_))) => {
            return Err(e).exit_code(exit::NOT_RUNNING)
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        emit(&format!("{}\n", serde_json::to_string(&resp)?));
        return Ok(match resp {
            Response::Error { .. } => exit::FAILURE,
            _ => exit::OK,
        });
    }
    match resp {
        Response::Accepted { message } => emit(&format!("{message}\n")),
        Response::Narration { text, .. } => emit(&format!("{text}\n")),
        Response::Status(s) => emit(&status_text(&s)),
        Response::Speech(v) => emit(&format!("{}\n", speech_text(&v))),
        Response::Watches { watches } => emit(&watches_text(&watches)),
        Response::Recall {
            search,
            answer,
            found,
        } => emit(&recall_text(search, &answer, &found)),
        Response::Error { code, message } => {
            eprintln!(
                "error: {message} ({})",
                serde_json::to_string(&code)?.trim_matches('"')
            );
            return Ok(exit::FAILURE);
        }
    }
    Ok(exit::OK)
}

/// Prints to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|_| o.flush());
}

/// "rate 20, volume 0, voice default, language zh"
fn speech_text(v: &crate::speech::Voice) -> String {
    let or_default = |s: &str| {
        if s.is_empty() {
            "default".to_string()
        } else {
            s.to_string()
        }
    };
    format!(
        "rate {}, volume {}, voice {}, language {}",
        v.rate,
        v.volume,
        or_default(&v.voice),
        or_default(&v.language)
    )
}

/// One line per watch: "1  waiting  the kettle light is off  (last yes 0.12, 5 checks)".
fn watches_text(watches: &[crate::control::protocol::WatchInfo]) -> String {
    if watches.is_empty() {
        return "no watches are set\n".into();
    }
    let mut o = String::new();
    for w in watches {
        let last = w
            .last_score
            .map(|s| format!("last yes {s:.2}, "))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "{}  {:<7}  {}  ({last}{} checks, true {} times)",
            w.id, w.state, w.condition, w.checks, w.fired
        );
    }
    o
}

/// The recalled views, best first ("About 20 minutes ago: …"), and how they were found.
fn recall_text(
    search: crate::memory::Search,
    answer: &str,
    found: &[crate::memory::Recalled],
) -> String {
    let mut o = String::new();
    if found.is_empty() {
        let _ = writeln!(o, "{answer}");
    }
    for r in found {
        let _ = writeln!(
            o,
            "{}: {}  ({}, score {:.2})",
            r.ago, r.text, r.time, r.score
        );
    }
    let _ = writeln!(
        o,
        "({})",
        match search {
            crate::memory::Search::Text => "searched the words of past descriptions",
            crate::memory::Search::Embedding => "compared the current view with past views",
        }
    );
    o
}

fn status_text(s: &StatusReport) -> String {
    let mut o = String::new();
    let _ = if s.state == "paused" && !s.paused_by.is_empty() {
        writeln!(
            o,
            "scenesay {}: paused: {}",
            s.version,
            s.paused_by.join(", ")
        )
    } else {
        writeln!(o, "scenesay {}: {}", s.version, s.state)
    };
    let _ = writeln!(o, "  up for       {:.0} s", s.uptime_s);
    let _ = writeln!(o, "  source       {} ({})", s.source, s.source_state);
    if !s.session.is_empty() {
        let _ = writeln!(o, "  session      {}", s.session);
    }
    let _ = writeln!(
        o,
        "  speech       {}: {}",
        s.speech_backend,
        speech_text(&s.speech)
    );
    let _ = writeln!(
        o,
        "  frames       {} captured, {} watched, {} described, {} dropped",
        s.frames.captured, s.frames.watched, s.frames.described, s.frames.dropped
    );
    let _ = writeln!(
        o,
        "  scene watch  {} encoded, {} gated out (unchanged view); pace {}",
        s.frames.encoded, s.frames.gated, s.pace
    );
    if s.frames.bad > 0 {
        let _ = writeln!(
            o,
            "  bad frames   {} skipped (could not be decoded)",
            s.frames.bad
        );
    }
    let _ = match &s.cpu {
        Some(c) => writeln!(
            o,
            "  processor    {:.1} % of one core over the last {:.0} s",
            c.percent_of_one_core, c.window_s
        ),
        None => writeln!(o, "  processor    not measured yet"),
    };
    let _ = match &s.last_narration {
        Some(l) => writeln!(
            o,
            "  last         [{}] {} ({})",
            l.kind.name(),
            l.text,
            l.time
        ),
        None => writeln!(o, "  last         nothing said yet"),
    };
    for r in &s.recent_latencies {
        let f = |x: Option<f64>| {
            x.map(|v| format!("{v:.0} ms"))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            o,
            "  latency      {:<7} first words {}, generation {}",
            r.kind.name(),
            f(r.latency_ms.first_speech),
            f(r.latency_ms.generation)
        );
    }
    o
}
