//! The portable `tts` backend for real: the `tts` crate's speech-dispatcher client against a
//! private speech-dispatcher whose recording output module writes down what it was asked to say.
//! Asserted: the sentence reaches the engine with the configured rate, the end is reported as
//! finished, and stop cuts a long sentence short (speech-dispatcher records it as cancelled).
//! One test only: it sets process-wide environment variables.

use std::time::{Duration, Instant};

mod speechd;

use scenesay::config::SpeechConfig;
use scenesay::narration::{Kind, Priority};
use scenesay::speech::tts_backend::TtsBackend;
use scenesay::speech::{Progress, SpeechSink};
use speechd::Server;

const LONG: Duration = Duration::from_secs(20);

fn outcome(b: &mut TtsBackend) -> Progress {
    let t = Instant::now();
    loop {
        match b.poll().unwrap() {
            Progress::Speaking => {
                assert!(t.elapsed() < LONG, "the tts backend never reported an end");
                std::thread::sleep(Duration::from_millis(10));
            }
            p => return p,
        }
    }
}

#[test]
fn the_tts_backend_speaks_through_a_real_speech_dispatcher() {
    let root = tempfile::tempdir().unwrap();
    let (_server, rec) = Server::start_recording(root.path(), 20);
    let cfg = SpeechConfig {
        rate: 40,
        ..Default::default()
    };
    let mut b = TtsBackend::open(&cfg).unwrap();
    assert_eq!(b.name(), "tts");
    b.speak("A cup on the table.", Kind::Scene, Priority::Scene)
        .unwrap();
    assert_eq!(outcome(&mut b), Progress::Finished);
    let u = rec
        .wait_for("A cup on the table", LONG, |u| u.end.is_some())
        .unwrap_or_else(|| panic!("never said: {:?}", rec.utterances()));
    assert!(u.cancelled.is_none(), "{u:?}");
    assert!(
        u.rate.starts_with("40"),
        "the rate did not reach the engine: {u:?}"
    );

    let long = "A long sentence about everything in the room, one thing after another, slowly.";
    b.speak(long, Kind::Detail, Priority::User).unwrap();
    rec.wait_for("A long sentence", LONG, |_| true)
        .unwrap_or_else(|| panic!("never started: {:?}", rec.utterances()));
    b.stop().unwrap();
    let u = rec
        .wait_for("A long sentence", LONG, |u| {
            u.cancelled.is_some() || u.end.is_some()
        })
        .unwrap_or_else(|| panic!("never ended: {:?}", rec.utterances()));
    assert!(u.cancelled.is_some(), "stop did not cut it short: {u:?}");
    // after a stop the backend speaks again (the stopped sentence's end event is not taken for
    // the new one's)
    b.speak("Back again.", Kind::Scene, Priority::Scene)
        .unwrap();
    assert_eq!(outcome(&mut b), Progress::Finished);
    let u = rec
        .wait_for("Back again", LONG, |u| u.end.is_some())
        .unwrap_or_else(|| panic!("never said after the stop: {:?}", rec.utterances()));
    assert!(u.cancelled.is_none(), "{u:?}");
}
