//! `scenesay check`: is everything the daemon needs in place? One line per item — OK, WARN or
//! FAIL — and for each problem, what to do. Items: config, weights (files present, shards
//! complete, each file as long as its header says), model (loads: tensor names and shapes match
//! config.json), source, ffmpeg, speech, hotkey, socket, log.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::capture;
use crate::config::{Config, SourceKind, SpeechBackend};
use crate::control::{client, hotkey, protocol};
use crate::exit;

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

struct Report {
    fails: usize,
}

impl Report {
    fn line(&mut self, level: Level, item: &str, what: &str, todo: Option<&str>) {
        let tag = match level {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => {
                self.fails += 1;
                "FAIL"
            }
        };
        let mut text = format!("{tag:<5} {item:<9} {what}\n");
        if let Some(t) = todo {
            text.push_str(&format!("{:<15} → {t}\n", ""));
        }
        // a reader that went away (`| head`) is not an error
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes()).and_then(|_| o.flush());
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut r = Report { fails: 0 };
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
    check_model(&mut r, &config, a.model.as_deref());
    check_source(&mut r, &config);
    check_ffmpeg(&mut r);
    check_speech(&mut r, &config);
    check_hotkey(&mut r, &config);
    check_socket(&mut r, &config);
    check_log(&mut r, &config);
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
                    _ => "set `[capture] path` to a video file; the video source needs ffmpeg (`sudo apt install ffmpeg`)",
                };
                r.line(Level::Fail, "source", &e.to_string(), Some(todo))
            }
        },
    }
}

fn check_speech(r: &mut Report, config: &Config) {
    let b = config.speech.backend;
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
                .speak("scenesay speech check.", crate::narration::Kind::Notice)
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    let t = std::time::Instant::now();
                    while t.elapsed() < Duration::from_secs(10) {
                        match s.is_speaking() {
                            Ok(false) => return Ok(()),
                            Ok(true) => std::thread::sleep(Duration::from_millis(20)),
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    let _ = s.stop();
                    Err("it never finished saying a test sentence".to_string())
                });
            match said {
                Ok(()) => r.line(
                    Level::Ok,
                    "speech",
                    &format!("{} said \"scenesay speech check\"", s.name()),
                    None,
                ),
                Err(e) => r.line(
                    Level::Fail,
                    "speech",
                    &format!("{}: {e}", s.name()),
                    Some("check the audio output (speech-dispatcher: `spd-say -w hello`; its audio method in ~/.config/speech-dispatcher/speechd.conf)"),
                ),
            }
        }
        Err(e) => {
            let fallback = match b {
                SpeechBackend::SpeechDispatcher => {
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
