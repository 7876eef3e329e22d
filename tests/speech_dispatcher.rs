//! The speech-dispatcher backend for real, against a private speech-dispatcher started by the
//! test with a null audio output (the only way it runs headless): utterances begin and end, the
//! end is noticed, stop works, a voice is chosen by language, and a narration goes through the
//! speech thread into the log as spoken. One test only: it sets process-wide environment variables.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

mod speechd;

use scenesay::config::SpeechConfig;
use scenesay::narration::{Kind, NarrationId, NarrationLog, Priority};
use scenesay::speech::dispatcher::Dispatcher;
use scenesay::speech::ledger::{NarrationEnd, NarrationMeta};
use scenesay::speech::service::{Speaker, SpeechService, SpeechSettings};
use scenesay::speech::SpeechSink;
use scenesay::status::{Clock, Stats};
use speechd::Server;

fn wait_silent(d: &mut Dispatcher) {
    let t = Instant::now();
    while d.is_speaking().unwrap() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "speech-dispatcher never reported the end of the utterance"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn speech_dispatcher_speaks_stops_and_narrates_for_real() {
    let root = tempfile::tempdir().unwrap();
    let _server = Server::start(root.path());

    let cfg = SpeechConfig {
        rate: 40,
        language: "en".into(),
        ..Default::default()
    };
    let mut d = Dispatcher::open(&cfg).unwrap();
    let cfg = cfg.clone();
    assert!(d.voice.is_some(), "a voice was chosen for language en");
    assert_eq!(d.name(), "speech-dispatcher");

    for text in ["Hello from the scenesay tests.", "A second sentence."] {
        d.speak(text, Kind::Notice).unwrap();
        wait_silent(&mut d);
    }

    // stopping a long utterance: afterwards the backend takes new text and finishes it
    d.speak(&"This goes on for a long time. ".repeat(50), Kind::Detail)
        .unwrap();
    d.stop().unwrap();
    assert!(!d.is_speaking().unwrap());
    d.speak("After the stop.", Kind::Notice).unwrap();
    wait_silent(&mut d);

    // a narration through the speech thread ends in the log as spoken
    let log_path = root.path().join("narration.jsonl");
    let stats = Arc::new(Stats::new(Clock::new()));
    let (tx, rx) = crossbeam_channel::unbounded();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (st, lp) = (stats.clone(), log_path.clone());
    // the tts handle is not Send: like the daemon, open it in the thread that uses it
    let thread = std::thread::spawn(move || {
        let d = Dispatcher::open(&cfg).unwrap();
        let service = SpeechService::new(
            Box::new(d),
            SpeechSettings {
                stale_after: Duration::from_secs(10),
                acknowledge: None,
            },
            NarrationLog::open(&lp).unwrap(),
            st,
        );
        service.run(rx, stop_rx)
    });
    let speaker = Speaker::new(tx);
    let id = NarrationId::next();
    speaker.begin(NarrationMeta {
        id,
        kind: Kind::Scene,
        priority: Priority::Scene,
        trigger: Instant::now(),
        wall: SystemTime::now(),
        frame: Some(1),
        resolution: Some(256),
        question: None,
        repeat: false,
    });
    speaker.text(id, "A desk by a window.");
    speaker.text(id, "A lamp is on.");
    speaker.end(NarrationEnd {
        id,
        text: "A desk by a window. A lamp is on.".into(),
        ..Default::default()
    });
    let t = Instant::now();
    while std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(t.elapsed() < Duration::from_secs(20), "no log line");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stop_tx);
    thread.join().unwrap();
    let line = std::fs::read_to_string(&log_path).unwrap();
    let r: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(r["status"], "spoken", "{r}");
    assert_eq!(r["text"], "A desk by a window. A lamp is on.");
    assert!(r["latency_ms"]["first_speech"].as_f64().is_some(), "{r}");
    assert_eq!(stats.report().speech_backend, "speech-dispatcher");
    assert_eq!(
        stats.report().last_narration.unwrap().text,
        "A desk by a window. A lamp is on."
    );
}
