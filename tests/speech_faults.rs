//! Speech survives its backend, for real: a private speech-dispatcher (null audio, the only way it
//! runs headless) is killed while scenesay uses it. The next utterance is not lost: the reconnect
//! fails (autospawn is pointed at a missing program), so it is said by espeak-ng, with log lines
//! saying what happened; once speech-dispatcher runs again it is used again. One test only: it sets
//! process-wide environment variables.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod speechd;

use scenesay::config::{SpeechBackend, SpeechConfig};
use scenesay::narration::{Kind, Priority};
use scenesay::speech::dispatcher::Dispatcher;
use scenesay::speech::espeak::{EspeakNg, Output};
use scenesay::speech::resilient::{fallback_order, Opener, Resilient};
use scenesay::speech::stdout::Stdout;
use scenesay::speech::{SpeechError, SpeechSink};
use speechd::Server;

/// Log lines written through `tracing` while the test runs.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn wait_silent(s: &mut Resilient) {
    let t = Instant::now();
    while s.is_speaking().unwrap() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the utterance never ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wavs(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_killed_speech_dispatcher_falls_back_to_espeak_ng_and_is_used_again_later() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    // a reconnect must not quietly start a speech-dispatcher of its own
    std::env::set_var("SPEECHD_CMD", root.path().join("no-such-speech-dispatcher"));
    let lines = Lines::default();
    let w = lines.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );

    let wav_dir = root.path().join("espeak");
    let cfg = SpeechConfig::default();
    let c = cfg.clone();
    let wd = wav_dir.clone();
    let opener: Opener = Box::new(move |b| -> Result<Box<dyn SpeechSink>, SpeechError> {
        Ok(match b {
            SpeechBackend::SpeechDispatcher => Box::new(Dispatcher::open(&c)?),
            SpeechBackend::EspeakNg => Box::new(EspeakNg::open(&c, Output::WavDir(wd.clone()))?),
            SpeechBackend::Tts => Box::new(scenesay::speech::tts_backend::TtsBackend::open(&c)?),
            SpeechBackend::Log => Box::new(Stdout),
        })
    });
    let switches = Arc::new(Mutex::new(vec![]));
    let sw = switches.clone();
    let (mut s, note) = Resilient::with_opener(
        fallback_order(SpeechBackend::SpeechDispatcher),
        opener,
        Duration::from_secs(1),
        Box::new(move |n| sw.lock().unwrap().push(n)),
    )
    .unwrap();
    assert!(note.is_none(), "{note:?}");
    assert_eq!(s.name(), "speech-dispatcher");
    s.speak("Before the crash.", Kind::Notice, Priority::Notice)
        .unwrap();
    wait_silent(&mut s);

    server.kill(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    // the next utterance is said, by espeak-ng
    s.speak("After the crash.", Kind::Scene, Priority::Scene)
        .unwrap();
    assert_eq!(s.name(), "espeak-ng");
    wait_silent(&mut s);
    assert_eq!(wavs(&wav_dir), 1, "espeak-ng wrote the utterance");
    let log = lines.text();
    assert!(log.contains("speech: speech-dispatcher failed"), "{log}");
    assert!(
        log.contains(
            "speech: falling back to espeak-ng; speech-dispatcher will be tried again in 1 s"
        ),
        "{log}"
    );

    // speech-dispatcher comes back: after the retry wait it is used again
    drop(server);
    let _server = Server::start(root.path());
    std::thread::sleep(Duration::from_millis(1100));
    s.speak("Back again.", Kind::Scene, Priority::Scene)
        .unwrap();
    assert_eq!(s.name(), "speech-dispatcher", "{}", lines.text());
    wait_silent(&mut s);
    assert_eq!(wavs(&wav_dir), 1, "not said by espeak-ng");
    assert!(
        lines
            .text()
            .contains("speech: speech-dispatcher works again; using it"),
        "{}",
        lines.text()
    );
    assert_eq!(
        *switches.lock().unwrap(),
        ["espeak-ng", "speech-dispatcher"]
    );
}
