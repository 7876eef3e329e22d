//! The espeak-ng backend for real: speech written to WAV files (measured with soxi), the rate
//! setting taking effect, stopping mid-utterance, and the daemon narrating through espeak-ng.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use scenesay::config::SpeechConfig;
use scenesay::narration::{Kind, Priority};
use scenesay::speech::espeak::{EspeakNg, Output};
use scenesay::speech::SpeechSink;
use support::*;

fn wait_done(s: &mut EspeakNg) {
    let t = Instant::now();
    while s.is_speaking().unwrap() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "espeak-ng did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn seconds(wav: &Path) -> f64 {
    let out = Command::new("soxi").arg("-D").arg(wav).output().unwrap();
    assert!(out.status.success(), "soxi {}: {:?}", wav.display(), out);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn say(rate: i32, text: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpeechConfig {
        rate,
        language: "en".into(),
        ..Default::default()
    };
    let mut s = EspeakNg::open(&cfg, Output::WavDir(dir.path().to_path_buf())).unwrap();
    s.speak(text, Kind::Scene, Priority::Scene).unwrap();
    wait_done(&mut s);
    seconds(&dir.path().join("utterance-1.wav"))
}

#[test]
fn espeak_ng_speaks_into_a_wav_file_at_the_configured_rate() {
    let text = "A kitchen with a table, two chairs and a window on the left.";
    let normal = say(0, text);
    assert!(normal > 1.0, "{normal} s for a whole sentence");
    let slow = say(-100, text);
    let fast = say(100, text);
    assert!(
        slow > normal && normal > fast,
        "slow {slow}, normal {normal}, fast {fast}"
    );
}

#[test]
fn text_that_looks_like_an_option_is_spoken_not_obeyed() {
    assert!(say(0, "--version") > 0.2);
}

#[test]
fn espeak_ng_stops_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = EspeakNg::open(
        &SpeechConfig::default(),
        Output::WavDir(dir.path().to_path_buf()),
    )
    .unwrap();
    let long = "This sentence goes on and on. ".repeat(400);
    s.speak(&long, Kind::Detail, Priority::User).unwrap();
    assert!(
        s.is_speaking().unwrap(),
        "a long text takes a while to synthesise"
    );
    let pid = s.pid().expect("an espeak-ng process says it");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    s.stop().unwrap();
    // the process itself is gone (killed and reaped), not just forgotten
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "espeak-ng {pid} still runs after stop"
    );
    // and it can speak again afterwards
    s.speak("Again.", Kind::Notice, Priority::Notice).unwrap();
    wait_done(&mut s);
    assert!(seconds(&dir.path().join("utterance-2.wav")) > 0.2);
}

#[test]
fn the_daemon_narrates_through_espeak_ng() {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames(dir.path(), &[("1.png", "landscape_640x480.png")]);
    let cfg = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 5\nloop = false\nrepeat_each = 3",
            frames.display()
        ),
        "[scene]\nchange_threshold = 0.02\n\n[describe]\nscene_max_tokens = 6",
    )
    .replace("backend = \"log\"", "backend = \"espeak-ng\"");
    let mut d = Daemon::start(dir, &cfg);
    wait_for(Duration::from_secs(60), "the scene narration", || {
        d.records().iter().any(|r| r["kind"] == "scene")
    });
    let s = d.status();
    assert_eq!(s["speech_backend"], "espeak-ng", "{s}");
    d.stop();
    let records = d.records();
    let scene = of_kind(&records, "scene");
    assert_eq!(scene.len(), 1, "{records:#?}");
    assert_eq!(scene[0]["status"], "spoken", "{}", scene[0]);
    assert!(
        !d.stdout().contains("[scene]"),
        "espeak-ng speaks; it does not print"
    );
}
