//! The speech-dispatcher backend for real, beside a screen reader. A private speech-dispatcher
//! runs a recording output module (it "speaks" by sleeping 30 ms per character and writes when
//! each utterance started — with its language, rate and volume — and when it ended or was
//! cancelled). A second SSIP client plays the screen reader (as Orca does: its own connection, at
//! priority `message`). What is asserted is what speech-dispatcher did with the utterances:
//! scenesay's scene narration never cuts the screen reader short and gives way to it; a user's
//! request cuts scenesay's scene narration short; hush stops speech at once; rate, volume and
//! language reach the speech engine. One test only: it sets process-wide environment variables.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

mod speechd;

use scenesay::config::SpeechConfig;
use scenesay::narration::{Kind, NarrationId, NarrationLog, Priority};
use scenesay::speech::dispatcher::Dispatcher;
use scenesay::speech::ledger::{NarrationEnd, NarrationMeta};
use scenesay::speech::service::{Speaker, SpeechService, SpeechSettings, VoiceChange};
use scenesay::speech::ssip::Client;
use scenesay::speech::{Progress, SpeechSink, Voice};
use scenesay::status::{Clock, Stats};
use speechd::{now_s, Recorder, Server, Utterance};

const LONG: Duration = Duration::from_secs(20);

/// Waits for the end of what `d` is saying.
fn outcome(d: &mut Dispatcher) -> Progress {
    let t = Instant::now();
    loop {
        match d.poll().unwrap() {
            Progress::Speaking => {
                assert!(
                    t.elapsed() < LONG,
                    "speech-dispatcher never reported an end"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            p => return p,
        }
    }
}

/// The screen reader: its own connection at priority `message`.
fn screen_reader(root: &Path) -> Client {
    let mut c = Client::connect(&Server::socket(root)).unwrap();
    c.command("SET self CLIENT_NAME user:orca:speech").unwrap();
    c.command("SET self PRIORITY message").unwrap();
    c
}

fn started(rec: &Recorder, text: &str) -> Utterance {
    rec.wait_for(text, LONG, |_| true)
        .unwrap_or_else(|| panic!("{text:?} never started: {:?}", rec.utterances()))
}

/// The utterance once it ended (and speech-dispatcher has seen its module end: the recorder
/// writes just before).
fn finished(rec: &Recorder, text: &str) -> Utterance {
    let u = finished_now(rec, text);
    std::thread::sleep(Duration::from_millis(200));
    u
}

fn finished_now(rec: &Recorder, text: &str) -> Utterance {
    rec.wait_for(text, LONG, |u| u.end.is_some() || u.cancelled.is_some())
        .filter(|u| u.end.is_some() || u.cancelled.is_some())
        .unwrap_or_else(|| panic!("{text:?} never ended: {:?}", rec.utterances()))
}

fn meta(kind: Kind, priority: Priority) -> NarrationMeta {
    NarrationMeta {
        id: NarrationId::next(),
        kind,
        priority,
        trigger: Instant::now(),
        wall: SystemTime::now(),
        frame: Some(1),
        resolution: Some(256),
        question: None,
        repeat: false,
    }
}

/// Sends a narration of `sentences` (not yet ended) and returns its id.
fn narrate(speaker: &Speaker, kind: Kind, priority: Priority, sentences: &[&str]) -> NarrationId {
    let m = meta(kind, priority);
    let id = m.id;
    speaker.begin(m);
    for s in sentences {
        speaker.text(id, *s);
    }
    id
}

fn end(speaker: &Speaker, id: NarrationId, text: &str) {
    speaker.end(NarrationEnd {
        id,
        text: text.into(),
        ..Default::default()
    });
}

/// The narration log's lines, waiting until there are `n`.
fn log_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let t = Instant::now();
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(t.elapsed() < LONG, "only {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn speech_takes_turns_with_the_screen_reader_on_a_real_speech_dispatcher() {
    let root = tempfile::tempdir().unwrap();
    let (_server, rec) = Server::start_recording(root.path(), 30);

    // --- settings and language reach the engine: SET self LANGUAGE zh, RATE, VOLUME
    let cfg = SpeechConfig {
        rate: 40,
        volume: -20,
        language: "zh".into(),
        ..Default::default()
    };
    let mut d = Dispatcher::open(&cfg).unwrap();
    assert_eq!(d.name(), "speech-dispatcher");
    d.speak("你好。这是一个测试。", Kind::Notice, Priority::Notice)
        .unwrap();
    assert_eq!(outcome(&mut d), Progress::Finished);
    let u = finished(&rec, "你好");
    // (speech-dispatcher turns punctuation into pauses before the engine sees the text)
    assert!(
        u.text.starts_with("你好") && u.text.contains("这是一个测试"),
        "{u:?}"
    );
    assert_eq!(u.language, "zh");
    assert!(u.rate.starts_with("40"), "{u:?}");
    assert!(u.volume.starts_with("-20"), "{u:?}");
    assert!(u.end.is_some() && u.cancelled.is_none(), "{u:?}");

    // --- a scene while the screen reader speaks: dropped, the screen reader is not cut short
    let mut sr = screen_reader(root.path());
    let orca1 = "Orca one: reading the document, paragraph one, slowly.";
    sr.speak(orca1).unwrap();
    started(&rec, "Orca one");
    d.speak(
        "Scene one: a desk by a window.",
        Kind::Scene,
        Priority::Scene,
    )
    .unwrap();
    match outcome(&mut d) {
        Progress::Cut { began: false, why } => assert!(why.contains("screen reader"), "{why}"),
        other => panic!("a scene while the screen reader speaks is dropped, not {other:?}"),
    }
    let o = finished(&rec, "Orca one");
    assert!(
        o.end.is_some() && o.cancelled.is_none(),
        "the screen reader was cut short: {o:?}"
    );
    assert!(
        rec.utterances()
            .iter()
            .all(|u| !u.text.contains("Scene one")),
        "the scene was said over the screen reader: {:?}",
        rec.utterances()
    );
    // a notice as well
    sr.speak("Orca two: another paragraph of the document.")
        .unwrap();
    started(&rec, "Orca two");
    d.speak("Camera view is dark.", Kind::Notice, Priority::Notice)
        .unwrap();
    assert!(matches!(
        outcome(&mut d),
        Progress::Cut { began: false, .. }
    ));
    let o = finished(&rec, "Orca two");
    assert!(o.end.is_some() && o.cancelled.is_none(), "{o:?}");

    // --- the screen reader starts while a scene is said: the scene gives way at once
    d.speak(
        "Scene two: a kitchen with a red kettle on the stove and a table.",
        Kind::Scene,
        Priority::Scene,
    )
    .unwrap();
    started(&rec, "Scene two");
    sr.speak("Orca three: a key was pressed.").unwrap();
    match outcome(&mut d) {
        Progress::Cut { began: true, .. } => {}
        other => panic!("the scene gives way to the screen reader, not {other:?}"),
    }
    let scene = finished(&rec, "Scene two");
    assert!(scene.cancelled.is_some(), "{scene:?}");
    let o = finished(&rec, "Orca three");
    assert!(o.end.is_some() && o.cancelled.is_none(), "{o:?}");

    // --- a user request while the screen reader speaks waits for it: never cuts it short
    sr.speak("Orca four: reading a line of text.").unwrap();
    started(&rec, "Orca four");
    d.speak("Detail: a mug on the left.", Kind::Detail, Priority::User)
        .unwrap();
    assert_eq!(outcome(&mut d), Progress::Finished);
    let o = finished(&rec, "Orca four");
    let detail = finished(&rec, "Detail: a mug");
    assert!(o.end.is_some() && o.cancelled.is_none(), "{o:?}");
    assert!(detail.start >= o.end.unwrap() - 0.05, "{o:?} {detail:?}");
    drop(d);

    // --- through the speech thread: a request interrupts scene narration, hush, run-time rate
    let log_path = root.path().join("narration.jsonl");
    let stats = Arc::new(Stats::new(Clock::new()));
    let (tx, rx) = crossbeam_channel::unbounded();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (st, lp) = (stats.clone(), log_path.clone());
    let cfg2 = SpeechConfig::default();
    let thread = std::thread::spawn(move || {
        let d = Dispatcher::open(&cfg2).unwrap();
        SpeechService::new(
            Box::new(d),
            SpeechSettings {
                stale_after: Duration::from_secs(10),
                acknowledge: None,
                voice: Voice::from_config(&cfg2),
            },
            NarrationLog::open(&lp).unwrap(),
            st,
        )
        .run(rx, stop_rx)
    });
    let speaker = Speaker::new(tx);

    let scene = narrate(
        &speaker,
        Kind::Scene,
        Priority::Scene,
        &[
            "Scene three: a long hallway with many doors on both sides.",
            "Scene three, second sentence: a window at the far end.",
        ],
    );
    end(&speaker, scene, "Scene three.");
    started(&rec, "Scene three: a long");
    let detail = narrate(
        &speaker,
        Kind::Detail,
        Priority::User,
        &["Your request: a hallway."],
    );
    end(&speaker, detail, "Your request: a hallway.");
    let cut = finished(&rec, "Scene three: a long");
    assert!(
        cut.cancelled.is_some(),
        "the request cuts the scene short: {cut:?}"
    );
    let asked = finished(&rec, "Your request");
    assert!(
        asked.end.is_some() && asked.cancelled.is_none(),
        "{asked:?}"
    );
    assert!(
        rec.utterances()
            .iter()
            .all(|u| !u.text.contains("second sentence")),
        "the rest of the scene is dropped"
    );
    let lines = log_lines(&log_path, 2);
    assert_eq!(lines[0]["kind"], "detail");
    assert_eq!(lines[0]["status"], "spoken");
    assert_eq!(lines[1]["kind"], "scene");
    assert_eq!(lines[1]["status"], "interrupted");

    // a notice that found the screen reader speaking is said once it is done, not dropped
    sr.speak("Orca five: a menu item, then another menu item.")
        .unwrap();
    started(&rec, "Orca five");
    let notice = speaker.notice("Camera back.");
    let orca5 = finished(&rec, "Orca five");
    assert!(orca5.cancelled.is_none(), "{orca5:?}");
    let n = finished(&rec, "Camera back");
    assert!(
        n.end.is_some() && n.start >= orca5.end.unwrap() - 0.05,
        "{n:?}"
    );
    let lines = log_lines(&log_path, 3);
    assert_eq!(lines[2]["id"], notice.0);
    assert_eq!(lines[2]["status"], "spoken", "{}", lines[2]);

    // hush: what is being said stops now, what waits is dropped, narration goes on
    // (long, so that a slow, loaded machine still shows the difference between cut and finished)
    let text =
        "Hush me: this sentence would take eight seconds or more to say to the end, because it \
                goes on and on about nothing at all, a chair, a table, a window, a door, a lamp, \
                a shelf of books, a rug on the floor and a plant by the wall.";
    let id = narrate(
        &speaker,
        Kind::Detail,
        Priority::User,
        &[text, "Never said after the hush."],
    );
    let begun = started(&rec, "Hush me");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = now_s();
    speaker.hush();
    end(&speaker, id, text);
    let hushed = finished(&rec, "Hush me");
    let natural = begun.start + text.chars().count() as f64 * 0.030;
    let stopped = hushed
        .cancelled
        .unwrap_or_else(|| panic!("hush did not stop it: {hushed:?}"));
    eprintln!(
        "hush → speech stopped in {:.0} ms (it would have gone on for {:.0} ms)",
        (stopped - t0) * 1e3,
        (natural - stopped) * 1e3
    );
    assert!(
        stopped < natural - 1.0,
        "cut short, not finished: {hushed:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(rec
        .utterances()
        .iter()
        .all(|u| !u.text.contains("Never said")));
    let lines = log_lines(&log_path, 4);
    assert_eq!(lines[3]["status"], "interrupted");
    assert_eq!(lines[3]["reason"], "hushed");

    // run-time rate and volume: the next utterance has them, and status shows them
    let v = speaker
        .adjust(
            VoiceChange {
                rate: Some(-30),
                volume: Some(10),
                ..Default::default()
            },
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!((v.rate, v.volume), (-30, 10));
    assert_eq!(stats.report().speech.rate, -30);
    let bad = speaker.adjust(
        VoiceChange {
            voice: Some("no-such-voice".into()),
            ..Default::default()
        },
        Duration::from_secs(5),
    );
    assert!(bad.unwrap_err().contains("no voice named"));
    assert_eq!(
        stats.report().speech.voice,
        "",
        "a refused voice is not taken"
    );
    speaker.notice("After the change.");
    let u = finished(&rec, "After the change");
    assert!(u.rate.starts_with("-30"), "{u:?}");
    assert!(u.volume.starts_with("10"), "{u:?}");

    drop(stop_tx);
    thread.join().unwrap();
}
