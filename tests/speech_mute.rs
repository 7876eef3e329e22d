//! A speech-dispatcher whose audio output is broken, for real: its output module takes every
//! utterance and never finishes it (as speech-dispatcher does with no working audio device).
//! `scenesay check` still returns, within its limit, with a FAIL line saying so and what to do;
//! the fall-back cycle (speech-dispatcher → espeak-ng, tried again later) leaves no connection or
//! thread behind and never counts an unheard utterance as said. One test only: it sets
//! process-wide environment variables.

mod speechd;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use scenesay::config::{SpeechBackend, SpeechConfig};
use scenesay::narration::{Kind, Priority};
use scenesay::speech::dispatcher::Dispatcher;
use scenesay::speech::resilient::{fallback_order, Opener, Resilient};
use scenesay::speech::stdout::Stdout;
use scenesay::speech::{Progress, SpeechError, SpeechSink};
use speechd::Server;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_mute_speech_dispatcher_never_hangs_check_and_leaks_nothing() {
    let root = tempfile::tempdir().unwrap();
    let _server = Server::start_mute(root.path());

    // --- `scenesay check` returns within its speech limit (10 s) with the reason and advice
    let dir = root.path().join("check");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("check.toml");
    let text = support::config_text(&dir, "source = \"test-pattern\"", "")
        .replace("backend = \"log\"", "backend = \"speech-dispatcher\"");
    std::fs::write(&cfg, text).unwrap();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["check", "--config"])
        .arg(&cfg)
        .env("HF_HUB_CACHE", dir.join("empty-cache"))
        .output()
        .unwrap();
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("check took {:.1} s:\n{stdout}", took.as_secs_f64());
    let speech = stdout
        .lines()
        .position(|l| l.split_whitespace().nth(1) == Some("speech"))
        .map(|i| {
            stdout
                .lines()
                .skip(i)
                .take(2)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|| panic!("no speech line: {stdout}"));
    assert!(
        speech.starts_with("FAIL  speech    speech-dispatcher accepted the sentence but never finished it (no audio output?)"),
        "{speech}"
    );
    assert!(speech.contains("AudioOutputMethod"), "what to do: {speech}");
    assert_eq!(out.status.code(), Some(1), "a FAIL is a failing exit");
    // it returned: the speech probe's limit is 10 s; the bound is generous for a loaded machine
    assert!(took < Duration::from_secs(60), "check took {took:?}");

    // --- the fall-back cycle against the mute server: nothing leaks, nothing unheard is "said"
    let cfg = SpeechConfig::default();
    let c = cfg.clone();
    let opener: Opener = Box::new(move |b| -> Result<Box<dyn SpeechSink>, SpeechError> {
        Ok(match b {
            SpeechBackend::SpeechDispatcher => Box::new(
                Dispatcher::open(&c)?
                    .with_limits(Duration::from_millis(300), Duration::from_millis(300)),
            ),
            // the log backend stands in for espeak-ng: no audio here
            _ => Box::new(Stdout),
        })
    });
    let (mut s, note) = Resilient::with_opener(
        fallback_order(SpeechBackend::SpeechDispatcher),
        opener,
        Duration::from_millis(50),
        Box::new(|_| {}),
    )
    .unwrap();
    assert!(note.is_none(), "{note:?}");
    let (fds, thr) = (open_fds(), threads());
    let mut unheard = 0;
    let mut said_elsewhere = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        s.speak("Hello there.", Kind::Scene, Priority::Scene)
            .unwrap();
        let on = s.name();
        let p = loop {
            match s.poll().unwrap() {
                Progress::Speaking => std::thread::sleep(Duration::from_millis(10)),
                p => break p,
            }
        };
        if on == "speech-dispatcher" {
            assert!(
                matches!(p, Progress::Cut { began: false, .. }),
                "an utterance the mute server never finished is not said: {p:?}"
            );
            unheard += 1;
        } else {
            said_elsewhere += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{unheard} tries on the mute server, {said_elsewhere} said by the fallback");
    assert!(unheard >= 3, "speech-dispatcher was tried again: {unheard}");
    assert!(said_elsewhere > unheard, "the tries became rarer");
    assert!(
        open_fds() <= fds + 1,
        "connections leak: {fds} → {}",
        open_fds()
    );
    assert!(threads() <= thr, "threads leak: {thr} → {}", threads());
}
