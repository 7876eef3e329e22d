//! `scenesay check`: is everything the daemon needs in place? One line per item — OK, WARN or
//! FAIL — and for each problem, what to do. Items: config, weights (files present, shards
//! complete, each file as long as its header says), model (loads: tensor names and shapes match
//! config.json), source, ffmpeg, speech, hotkey, socket, log. Every probe has a time limit
//! (speech: 10 s): a probe that hangs is reported as a failure and the check goes on, so `check`
//! always returns.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::capture;
use crate::config::{Config, SourceKind, SpeechBackend};
use crate::control::{client, hotkey, protocol};
use crate::exit;
use crate::speech::{Progress, SpeechError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file to check (same search as `scenesay run`).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The model, as for `scenesay run` (default: $SCENESAY_MODEL, else `[model] path`, else
    /// apple/FastVLM-0.5B from the cache).
    #[arg(long, value_name = "DIR|REPO", env = "SCENESAY_MODEL")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// The lines of a check. A probe running on its own thread collects them (`buffer`); the main
/// report prints them as they come.
#[derive(Default)]
struct Report {
    fails: usize,
    buffer: Option<Vec<(Level, String)>>,
}

/// How long each probe may take.
const MODEL_LIMIT: Duration = Duration::from_secs(600);
const SPEECH_LIMIT: Duration = Duration::from_secs(10);
const QUICK_LIMIT: Duration = Duration::from_secs(15);

impl Report {
    fn line(&mut self, level: Level, item: &str, what: &str, todo: Option<&str>) {
        let tag = match level {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let mut text = format!("{tag:<5} {item:<9} {what}\n");
        if let Some(t) = todo {
            text.push_str(&format!("{:<15} → {t}\n", ""));
        }
        self.emit(level, text);
    }

    fn emit(&mut self, level: Level, text: String) {
        if let Some(b) = self.buffer.as_mut() {
            b.push((level, text));
            return;
        }
        if level == Level::Fail {
            self.fails += 1;
        }
        // a reader that went away (`| head`) is not an error
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes()).and_then(|_| o.flush());
    }

    /// Runs `probe` on its own thread, at most `limit` (plus a little for its own time limits);
    /// a probe that does not return in time is a failure of `item` with `todo`.
    fn timed(
        &mut self,
        item: &str,
        limit: Duration,
        todo: &str,
        probe: impl FnOnce(&mut Report) + Send + 'static,
    ) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name(format!("check {item}"))
            .spawn(move || {
                let mut r = Report {
                    fails: 0,
                    buffer: Some(vec![]),
                };
                probe(&mut r);
                let _ = tx.send(r.buffer.unwrap_or_default());
            });
        if let Err(e) = spawned {
            self.line(
                Level::Fail,
                item,
                &format!("cannot run the check: {e}"),
                None,
            );
            return;
        }
        // the probe's own limits come first; this one catches whatever else could hang
        match rx.recv_timeout(limit + Duration::from_secs(2)) {
            Ok(lines) => {
                for (level, text) in lines {
                    self.emit(level, text);
                }
            }
            Err(_) => self.line(
                Level::Fail,
                item,
                &format!("did not answer within {} s", limit.as_secs()),
                Some(todo),
            ),
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut r = Report::default();
    let config = match Config::load(a.config.as_deref()) {
        Ok((c, Some(p))) => {
            r.line(Level::Ok, "config", &p.display().to_string(), None);
            c
        }
        Ok((c, None)) => {
            r.line(
                Level::Ok,
                "config",
                "no configuration file; built-in defaults",
                Some("copy config.toml from the source tree to ~/.config/scenesay/config.toml to change settings"),
            );
            c
        }
        Err(e) => {
            r.line(
                Level::Fail,
                "config",
                &e.to_string().replace('\n', "\n                "),
                Some("fix the configuration (the remaining checks use the built-in defaults)"),
            );
            let mut c = Config::default();
            c.resolve_paths(None);
            c
        }
    };
    let (c, model) = (config.clone(), a.model.clone());
    r.timed(
        "model",
        MODEL_LIMIT,
        "check that the model folder is on a local, readable disk",
        move |r| check_model(r, &c, model.as_deref()),
    );
    let c = config.clone();
    r.timed(
        "source",
        QUICK_LIMIT,
        "the frame source hangs: unplug and replug the camera, or check `[capture] path`",
        move |r| check_source(r, &c),
    );
    let c = config.clone();
    r.timed(
        "cameras",
        QUICK_LIMIT,
        "a camera does not answer: unplug and replug it",
        move |r| check_cameras(r, &c),
    );
    r.timed(
        "ffmpeg",
        QUICK_LIMIT,
        "`ffmpeg -version` hangs: reinstall it (`sudo apt install --reinstall ffmpeg`)",
        check_ffmpeg,
    );
    let c = config.clone();
    r.timed("speech", SPEECH_LIMIT, SPEECH_TODO, move |r| {
        check_speech(r, &c)
    });
    let c = config.clone();
    r.timed(
        "hotkey",
        QUICK_LIMIT,
        "reading the keyboards hangs: set `[hotkey] device` to one keyboard",
        move |r| check_hotkey(r, &c),
    );
    let c = config.clone();
    r.timed(
        "socket",
        QUICK_LIMIT,
        "the running scenesay does not answer: restart it (`systemctl --user restart scenesay`)",
        move |r| check_socket(r, &c),
    );
    let c = config.clone();
    r.timed(
        "log",
        QUICK_LIMIT,
        "the narration log's disk hangs: set `[log] path` to a local disk",
        move |r| check_log(r, &c),
    );
    Ok(if r.fails == 0 {
        exit::OK
    } else {
        exit::FAILURE
    })
}

fn check_model(r: &mut Report, config: &Config, cli: Option<&str>) {
    let dir = match super::run::model_dir(config, cli) {
        Ok(d) => d,
        Err(e) => {
            r.line(
                Level::Fail,
                "model",
                &format!("{e:#}"),
                Some("`scenesay model fetch` downloads apple/FastVLM-0.5B; or set `[model] path` (or --model) to a FastVLM checkpoint directory"),
            );
            return;
        }
    };
    // the files first, cheaply: present, complete, each as long as its header says
    let files = crate::model_store::check_checkpoint(&dir)
        .map_err(|missing| vec![format!("missing or unusable: {}", missing.join(", "))])
        .and_then(|_| crate::model_store::check_weights(&dir));
    match files {
        Ok(w) => r.line(
            Level::Ok,
            "weights",
            &format!(
                "{}: {} weight file(s), {}, {} tensors, none cut off; config.json and tokenizer present",
                dir.display(),
                w.files,
                indicatif::HumanBytes(w.bytes),
                w.tensors
            ),
            None,
        ),
        Err(problems) => {
            r.line(
                Level::Fail,
                "weights",
                &format!("{}: {}", dir.display(), problems.join("; ")),
                Some("download the checkpoint again: `scenesay model fetch REPO` resumes and completes a download in the cache; a directory copied by hand needs every file copied again"),
            );
            r.line(
                Level::Fail,
                "model",
                "not loaded: its files are incomplete (above)",
                None,
            );
            return;
        }
    }
    // loading checks every tensor's name and shape against config.json, and the tokenizer
    match super::run::load_model(&dir, config) {
        Ok(m) => r.line(
            Level::Ok,
            "model",
            &format!(
                "loads: every tensor's name and shape matches config.json ({:?} layout, {} language layers, native {} px)",
                m.config.layout,
                m.config.text.num_hidden_layers,
                m.config.native_resolution
            ),
            None,
        ),
        Err(e) => r.line(
            Level::Fail,
            "model",
            &format!("{e:#}"),
            Some("point `[model] path` at a complete FastVLM checkpoint directory (e.g. a download of apple/FastVLM-0.5B)"),
        ),
    }
}

/// ffmpeg decodes videos for `[capture] source = "video"` and `scenesay narrate`.
fn check_ffmpeg(r: &mut Report) {
    let version = |program: &str| {
        std::process::Command::new(program)
            .arg("-version")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.split(" Copyright").next().unwrap_or(l).to_string())
            })
    };
    match (version("ffmpeg"), version("ffprobe")) {
        (Some(v), Some(_)) => r.line(
            Level::Ok,
            "ffmpeg",
            &format!("{v} (videos: `scenesay narrate`, `[capture] source = \"video\"`)"),
            None,
        ),
        (f, p) => r.line(
            Level::Warn,
            "ffmpeg",
            &format!(
                "{} not found: videos cannot be read (pictures and cameras work)",
                match (f, p) {
                    (None, None) => "ffmpeg and ffprobe",
                    (None, _) => "ffmpeg",
                    _ => "ffprobe",
                }
            ),
            Some("sudo apt install ffmpeg"),
        ),
    }
}

fn check_source(r: &mut Report, config: &Config) {
    let c = &config.capture;
    match c.source {
        SourceKind::TestPattern => r.line(
            Level::Ok,
            "source",
            &format!("test-pattern {}x{} at {} fps", c.width, c.height, c.fps),
            None,
        ),
        _ => match capture::open_source(c).and_then(|mut s| {
            let f = s.next_frame()?;
            Ok((s.name(), f))
        }) {
            Ok((name, Some(img))) => r.line(
                Level::Ok,
                "source",
                &format!("{name}: first frame {}x{}", img.width(), img.height()),
                None,
            ),
            Ok((name, None)) => r.line(
                Level::Fail,
                "source",
                &format!("{name}: delivered no frame"),
                None,
            ),
            Err(e) => {
                let todo = match c.source {
                    SourceKind::Camera => "plug in a camera and check `ls /dev/video*` (you need to be in the `video` group), set `[capture] device`, or use `source = \"images\"` / `\"test-pattern\"`",
                    SourceKind::Images => "set `[capture] path` to a folder of pictures, a glob or one picture",
                    SourceKind::Stream => "check `[capture] url` (open it in a browser or `ffplay URL`); the phone or camera must be on the same network; the stream source needs ffmpeg (`sudo apt install ffmpeg`)",
                    SourceKind::Pipewire | SourceKind::Gstreamer => "check the camera with `gst-launch-1.0 pipewiresrc ! videoconvert ! autovideosink` (or your `[capture] pipeline`); `sudo apt install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-pipewire` (gstreamer1.0-libcamera for libcamerasrc)",
                    _ => "set `[capture] path` to a video file; the video source needs ffmpeg (`sudo apt install ffmpeg`)",
                };
                r.line(Level::Fail, "source", &e.to_string(), Some(todo))
            }
        },
    }
}

/// Every camera of the machine: its formats and sizes, and the modes scenesay would use it in
/// (watch and still), with why; the configured one is marked.
fn check_cameras(r: &mut Report, config: &Config) {
    use crate::capture::camera;
    let c = &config.capture;
    let nodes = camera::device_nodes(std::path::Path::new("/dev"));
    if nodes.is_empty() {
        let level = if c.source == SourceKind::Camera {
            Level::Warn
        } else {
            Level::Ok
        };
        r.line(
            level,
            "cameras",
            "none (no /dev/video* device)",
            (c.source == SourceKind::Camera).then_some("plug in a camera; `lsusb` should list it"),
        );
        return;
    }
    let configured = std::fs::canonicalize(camera::device_path(&c.device)).ok();
    for p in nodes {
        let mark = if configured.is_some() && std::fs::canonicalize(&p).ok() == configured {
            " ← [capture] device"
        } else {
            ""
        };
        match camera::probe(&p) {
            Ok(info) => {
                let mut lines = camera::report_lines(&info, c);
                lines[0].push_str(mark);
                r.line(
                    Level::Ok,
                    "cameras",
                    &lines.join("\n                "),
                    None,
                )
            }
            Err(e) => r.line(
                Level::Warn,
                "cameras",
                &format!("{}: {e}{mark}", p.display()),
                None,
            ),
        }
    }
}

/// What to do about speech-dispatcher that takes text and never says it.
const SPEECH_TODO: &str = "speech-dispatcher has no working audio output: `spd-say -w hello` should be heard and return (it hangs the same way); set its audio output (`AudioOutputMethod \"pulse\"` or `\"alsa\"` in ~/.config/speech-dispatcher/speechd.conf) and restart it (`killall speech-dispatcher`), or set `[speech] backend = \"espeak-ng\"`";

fn check_speech(r: &mut Report, config: &Config) {
    let b = config.speech.backend;
    let started = std::time::Instant::now();
    match crate::speech::open_backend(b, &config.speech) {
        Ok(_) if b == SpeechBackend::Log => r.line(
            Level::Ok,
            "speech",
            "log: narrations are printed, not spoken",
            None,
        ),
        Ok(mut s) => {
            // say a short sentence and wait for the backend to report its end: a backend that
            // accepts text but never finishes has no working audio output
            let said = s
                .speak(
                    "scenesay speech check.",
                    crate::narration::Kind::Notice,
                    crate::narration::Priority::User,
                )
                .map_err(|e| (e.to_string(), false))
                .and_then(|_| loop {
                    if started.elapsed() >= SPEECH_LIMIT {
                        let _ = s.stop();
                        break Err((
                            "accepted the sentence but never finished it (no audio output?)"
                                .to_string(),
                            true,
                        ));
                    }
                    match s.poll() {
                        Ok(Progress::Speaking) => std::thread::sleep(Duration::from_millis(20)),
                        Ok(Progress::Finished) => break Ok(()),
                        Ok(Progress::Cut { why, .. }) => break Err((why, false)),
                        Err(SpeechError::Stuck { .. }) => {
                            break Err((
                                "accepted the sentence but never finished it (no audio output?)"
                                    .to_string(),
                                true,
                            ))
                        }
                        Err(e) => break Err((e.to_string(), false)),
                    }
                });
            match said {
                Ok(()) => r.line(
                    Level::Ok,
                    "speech",
                    &format!(
                        "{} said \"scenesay speech check\" ({:.1} s)",
                        s.name(),
                        started.elapsed().as_secs_f64()
                    ),
                    None,
                ),
                Err((e, mute)) => r.line(
                    Level::Fail,
                    "speech",
                    &format!("{} {e}", s.name()),
                    Some(if mute {
                        SPEECH_TODO
                    } else {
                        "check speech-dispatcher (`spd-say -w hello`; its log in ~/.cache/speech-dispatcher/log) or set `[speech] backend`"
                    }),
                ),
            }
        }
        Err(e) => {
            let fallback = match b {
                SpeechBackend::SpeechDispatcher | SpeechBackend::Tts => {
                    match crate::speech::open_backend(SpeechBackend::EspeakNg, &config.speech) {
                        Ok(_) => "scenesay would speak with espeak-ng instead",
                        Err(_) => "scenesay would only print (espeak-ng is missing too)",
                    }
                }
                _ => "scenesay would only print",
            };
            r.line(
                Level::Fail,
                "speech",
                &format!("{e}; {fallback}"),
                Some("install speech-dispatcher and espeak-ng (`sudo apt install speech-dispatcher espeak-ng`) or set `[speech] backend`"),
            )
        }
    }
}

fn check_hotkey(r: &mut Report, config: &Config) {
    let mapper = match hotkey::KeyMapper::from_config(&config.hotkey) {
        Ok(m) if m.is_empty() => {
            r.line(Level::Ok, "hotkey", "no hotkey configured", None);
            return;
        }
        Ok(m) => m,
        Err(e) => {
            r.line(Level::Fail, "hotkey", &e.to_string(), None);
            return;
        }
    };
    match hotkey::open_keyboards(&config.hotkey.device, &mapper.main_keys()) {
        Ok(found) => {
            let names: Vec<String> = found
                .iter()
                .map(|(p, d)| format!("{} ({})", p.display(), d.name().unwrap_or("?")))
                .collect();
            r.line(
                Level::Ok,
                "hotkey",
                &format!("{} watched on {}", config.hotkey.key, names.join(", ")),
                None,
            )
        }
        Err(p) => r.line(
            Level::Warn,
            "hotkey",
            &format!("{p}; the daemon runs without the hotkey"),
            Some(match p {
                hotkey::HotkeyProblem::PermissionDenied(_) => {
                    "sudo usermod -aG input $USER, then log out and back in"
                }
                _ => "use `scenesay ctl describe` or SIGUSR1 instead, or set `[hotkey] device`",
            }),
        ),
    }
}

fn check_socket(r: &mut Report, config: &Config) {
    let path = config.socket_path();
    match client::request(&path, &protocol::Request::Status {}, Duration::from_secs(3)) {
        Ok(protocol::Response::Status(s)) => r.line(
            Level::Ok,
            "socket",
            &format!(
                "{}: scenesay is running ({}, up {:.0} s)",
                path.display(),
                s.state,
                s.uptime_s
            ),
            None,
        ),
        Ok(other) => r.line(
            Level::Warn,
            "socket",
            &format!("{}: unexpected answer {other:?}", path.display()),
            None,
        ),
        Err(_) => {
            let dir = path.parent().map(|d| d.to_path_buf()).unwrap_or_default();
            if dir.is_dir() {
                if let Err(e) = crate::control::server::check_folder(&dir) {
                    r.line(
                        Level::Fail,
                        "socket",
                        &e.to_string(),
                        Some("chmod 700 that folder, or set `[control] socket` to a path in a private folder"),
                    );
                    return;
                }
            }
            let usable = dir.is_dir() || std::fs::create_dir_all(&dir).is_ok();
            if usable {
                r.line(
                    Level::Ok,
                    "socket",
                    &format!("{}: free (scenesay is not running)", path.display()),
                    None,
                )
            } else {
                r.line(
                    Level::Fail,
                    "socket",
                    &format!("{}: its folder cannot be created", dir.display()),
                    Some("set `[control] socket` to a path in a folder you own"),
                )
            }
        }
    }
}

fn check_log(r: &mut Report, config: &Config) {
    let Some(p) = config.log_path() else {
        r.line(Level::Ok, "log", "narration log off", None);
        return;
    };
    let ok = p
        .parent()
        .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
        && std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .is_ok();
    if ok {
        r.line(Level::Ok, "log", &p.display().to_string(), None)
    } else {
        r.line(
            Level::Warn,
            "log",
            &format!(
                "{}: cannot be written; narration works without it",
                p.display()
            ),
            Some("set `[log] path` to a writable file"),
        )
    }
}
