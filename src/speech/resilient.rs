//! Speech that outlives its backend: a [`SpeechSink`] wrapping the configured backend that notices
//! when it dies (speech-dispatcher killed or restarted: its calls fail) or goes mute (an utterance
//! that never ends: a server with broken audio), reconnects once, else falls back along
//! speech-dispatcher → espeak-ng → log, says so in the log, and later tries the configured backend
//! again (after 30 s, then less and less often) so a restarted speech-dispatcher is used again.
//! A backend that went mute again right after such a return is tried again twice as late each
//! time (at most every 10 minutes), so a speech-dispatcher with broken audio costs one lost
//! utterance per try, less and less often. An utterance lost that way is reported as
//! [`Progress::Cut`], never as said. The backend left behind is dropped (its connection closed).
//!
//! Only [`SpeechSink::speak`] switches backends, so an utterance is never split between two.

use std::time::{Duration, Instant};

use super::{open_backend, Progress, SpeechError, SpeechSink, Voice};
use crate::config::{SpeechBackend, SpeechConfig};
use crate::narration::{Kind, Priority};

/// Opens one backend.
pub type Opener = Box<dyn FnMut(SpeechBackend) -> Result<Box<dyn SpeechSink>, SpeechError>>;

/// Told the backend's name whenever the backend in use changes.
pub type OnSwitch = Box<dyn FnMut(&'static str)>;

/// A backend that failed again within this time of its last failure is not reconnected to: the
/// next one in the fallback order is used.
const RECONNECT_WINDOW: Duration = Duration::from_secs(60);
/// First wait before trying the configured backend again; it doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
pub const MAX_RETRY: Duration = Duration::from_secs(600);

/// The backends to try, the configured one first.
pub fn fallback_order(backend: SpeechBackend) -> Vec<SpeechBackend> {
    match backend {
        SpeechBackend::SpeechDispatcher => vec![
            SpeechBackend::SpeechDispatcher,
            SpeechBackend::EspeakNg,
            SpeechBackend::Log,
        ],
        SpeechBackend::Tts => vec![
            SpeechBackend::Tts,
            SpeechBackend::EspeakNg,
            SpeechBackend::Log,
        ],
        SpeechBackend::EspeakNg => vec![SpeechBackend::EspeakNg, SpeechBackend::Log],
        SpeechBackend::Log => vec![SpeechBackend::Log],
    }
}

pub struct Resilient {
    order: Vec<SpeechBackend>,
    open: Opener,
    on_switch: OnSwitch,
    current: Box<dyn SpeechSink>,
    /// Index in `order` of the backend in use.
    at: usize,
    last_failure: Vec<Option<Instant>>,
    /// When to try the configured backend again (while a fallback is in use).
    retry_at: Option<Instant>,
    first_retry: Duration,
    retry_wait: Duration,
    /// When the configured backend was last returned to after a fallback.
    returned_at: Option<Instant>,
    /// Settings changed while running, applied to every backend opened later.
    voice: Option<Voice>,
}

impl Resilient {
    /// The configured backend (or the first fallback that opens), with the real backends. Returns
    /// the sink and, when it is not the configured backend, why.
    pub fn open(cfg: &SpeechConfig, on_switch: OnSwitch) -> (Self, Option<String>) {
        let cfg = cfg.clone();
        let order = fallback_order(cfg.backend);
        let opener: Opener = Box::new(move |b| open_backend(b, &cfg));
        match Self::with_opener(order, opener, FIRST_RETRY, on_switch) {
            Ok(r) => r,
            Err(e) => unreachable!("the log backend always opens: {e}"),
        }
    }

    /// A sink over `order` (the configured backend first) opened by `open`; `first_retry` is the
    /// first wait before the configured backend is tried again after a fallback.
    pub fn with_opener(
        order: Vec<SpeechBackend>,
        mut open: Opener,
        first_retry: Duration,
        on_switch: OnSwitch,
    ) -> Result<(Self, Option<String>), SpeechError> {
        let mut why = vec![];
        for (at, b) in order.iter().enumerate() {
            match open(*b) {
                Ok(current) => {
                    let note = (!why.is_empty())
                        .then(|| format!("{}; using {} instead", why.join("; "), current.name()));
                    let now = Instant::now();
                    let n = order.len();
                    return Ok((
                        Self {
                            order,
                            open,
                            on_switch,
                            current,
                            at,
                            last_failure: vec![None; n],
                            retry_at: (at > 0).then(|| now + first_retry),
                            first_retry,
                            retry_wait: first_retry,
                            returned_at: None,
                            voice: None,
                        },
                        note,
                    ));
                }
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(SpeechError::Unavailable {
            backend: "speech",
            message: why.join("; "),
        })
    }

    fn switch_to(&mut self, at: usize, mut sink: Box<dyn SpeechSink>) {
        if let Some(v) = &self.voice {
            if let Err(e) = sink.adjust(v) {
                tracing::warn!("speech: {e}");
            }
        }
        // the old sink is dropped here, its connection or process with it
        self.current = sink;
        self.at = at;
        (self.on_switch)(self.current.name());
    }

    /// The backend in use failed: reconnect to it once, else fall back.
    fn failed(&mut self, why: &str, mute: bool) {
        let now = Instant::now();
        let name = self.order[self.at].name();
        let again = self.last_failure[self.at].is_some_and(|t| now - t < RECONNECT_WINDOW);
        self.last_failure[self.at] = Some(now);
        let first = if mute || again { self.at + 1 } else { self.at };
        tracing::warn!("speech: {name} failed: {why}");
        for i in first..self.order.len() {
            let b = self.order[i];
            match (self.open)(b) {
                Ok(sink) => {
                    if i == self.at {
                        tracing::info!("speech: reconnected to {}", b.name());
                    } else {
                        // failing again soon after a return: wait longer before the next one
                        let soon = self.at == 0
                            && self.returned_at.is_some_and(|t| now - t < RECONNECT_WINDOW);
                        self.retry_wait = if soon {
                            (self.retry_wait * 2).min(MAX_RETRY)
                        } else {
                            self.first_retry
                        };
                        self.retry_at = Some(now + self.retry_wait);
                        tracing::warn!(
                            "speech: falling back to {}; {} will be tried again in {} s",
                            b.name(),
                            self.order[0].name(),
                            self.retry_wait.as_secs()
                        );
                    }
                    self.switch_to(i, sink);
                    return;
                }
                Err(e) => tracing::warn!("speech: {e}"),
            }
        }
        tracing::warn!("speech: no other backend works; staying with {name}");
    }

    /// While a fallback is in use, tries the configured backend again when it is time.
    fn maybe_return(&mut self) {
        if self.at == 0 {
            return;
        }
        let now = Instant::now();
        if self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let preferred = self.order[0];
        match (self.open)(preferred) {
            Ok(sink) => {
                tracing::info!("speech: {} works again; using it", preferred.name());
                self.retry_at = None;
                self.returned_at = Some(now);
                self.switch_to(0, sink);
            }
            Err(e) => {
                self.retry_wait = (self.retry_wait * 2).min(MAX_RETRY);
                self.retry_at = Some(now + self.retry_wait);
                tracing::debug!("speech: {e}; next try in {} s", self.retry_wait.as_secs());
            }
        }
    }
}

impl SpeechSink for Resilient {
    fn name(&self) -> &'static str {
        self.current.name()
    }

    fn speak(&mut self, text: &str, kind: Kind, priority: Priority) -> Result<(), SpeechError> {
        self.maybe_return();
        match self.current.speak(text, kind, priority) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed(&e.to_string(), false);
                // the same utterance on whatever works now
                self.current.speak(text, kind, priority)
            }
        }
    }

    fn stop(&mut self) -> Result<(), SpeechError> {
        if let Err(e) = self.current.stop() {
            self.failed(&e.to_string(), false);
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<Progress, SpeechError> {
        match self.current.poll() {
            Ok(p) => Ok(p),
            Err(SpeechError::Stuck {
                backend, message, ..
            }) => {
                let _ = self.current.stop();
                self.failed(&message, true);
                // a backend that never finishes has no working audio: nothing of it was heard
                Ok(Progress::Cut {
                    began: false,
                    why: format!("not heard: {backend} {message}"),
                })
            }
            Err(e) => {
                let why = format!("not heard in full: {e}");
                self.failed(&e.to_string(), false);
                Ok(Progress::Cut { began: true, why })
            }
        }
    }

    fn adjust(&mut self, voice: &Voice) -> Result<(), SpeechError> {
        let r = self.current.adjust(voice);
        if r.is_ok() {
            self.voice = Some(voice.clone());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// How the fake backends behave, shared with the test.
    #[derive(Default)]
    struct World {
        /// Backends that cannot be opened.
        down: Vec<SpeechBackend>,
        /// Backends whose open connections fail every call.
        broken: Vec<SpeechBackend>,
        /// Backends whose utterances never end.
        mute: Vec<SpeechBackend>,
        /// (backend, text) of every utterance accepted.
        said: Vec<(&'static str, String)>,
        opened: Vec<&'static str>,
        switches: Vec<&'static str>,
        /// Sinks opened and not yet dropped.
        alive: usize,
    }

    struct FakeSink {
        b: SpeechBackend,
        world: Rc<RefCell<World>>,
        speaking: bool,
    }

    impl Drop for FakeSink {
        fn drop(&mut self) {
            self.world.borrow_mut().alive -= 1;
        }
    }

    fn err(b: SpeechBackend) -> SpeechError {
        SpeechError::Failed {
            backend: b.name(),
            message: "connection lost".into(),
        }
    }

    impl SpeechSink for FakeSink {
        fn name(&self) -> &'static str {
            self.b.name()
        }
        fn speak(&mut self, text: &str, _kind: Kind, _p: Priority) -> Result<(), SpeechError> {
            let mut w = self.world.borrow_mut();
            if w.broken.contains(&self.b) {
                return Err(err(self.b));
            }
            w.said.push((self.b.name(), text.to_string()));
            self.speaking = true;
            Ok(())
        }
        fn stop(&mut self) -> Result<(), SpeechError> {
            self.speaking = false;
            if self.world.borrow().broken.contains(&self.b) {
                return Err(err(self.b));
            }
            Ok(())
        }
        fn poll(&mut self) -> Result<Progress, SpeechError> {
            let w = self.world.borrow();
            if w.broken.contains(&self.b) {
                return Err(err(self.b));
            }
            if self.speaking && w.mute.contains(&self.b) {
                // the backend's own time limit has passed
                return Err(SpeechError::Stuck {
                    backend: self.b.name(),
                    message: "never finished it".into(),
                    began: true,
                });
            }
            self.speaking = false;
            Ok(Progress::Finished)
        }
        fn adjust(&mut self, _v: &Voice) -> Result<(), SpeechError> {
            Ok(())
        }
    }

    fn sink(world: &Rc<RefCell<World>>, retry: Duration) -> (Resilient, Option<String>) {
        let (w1, w2) = (world.clone(), world.clone());
        let open: Opener = Box::new(move |b| {
            if w1.borrow().down.contains(&b) {
                return Err(SpeechError::Unavailable {
                    backend: b.name(),
                    message: "no server".into(),
                });
            }
            w1.borrow_mut().opened.push(b.name());
            w1.borrow_mut().alive += 1;
            Ok(Box::new(FakeSink {
                b,
                world: w1.clone(),
                speaking: false,
            }))
        });
        Resilient::with_opener(
            fallback_order(SpeechBackend::SpeechDispatcher),
            open,
            retry,
            Box::new(move |n| w2.borrow_mut().switches.push(n)),
        )
        .unwrap()
    }

    const SD: SpeechBackend = SpeechBackend::SpeechDispatcher;
    const ES: SpeechBackend = SpeechBackend::EspeakNg;

    #[test]
    fn a_lost_connection_is_reconnected_and_the_utterance_still_said() {
        let world = Rc::new(RefCell::new(World::default()));
        let (mut s, note) = sink(&world, Duration::from_secs(30));
        assert!(note.is_none());
        s.speak("one", Kind::Scene, Priority::Scene).unwrap();
        // the server restarts: the old connection is dead, a new one works
        world.borrow_mut().broken.push(SD);
        assert!(
            matches!(s.poll().unwrap(), Progress::Cut { .. }),
            "a dead backend is not speaking"
        );
        world.borrow_mut().broken.clear();
        s.speak("two", Kind::Scene, Priority::Scene).unwrap();
        let w = world.borrow();
        assert_eq!(w.opened, ["speech-dispatcher", "speech-dispatcher"]);
        assert_eq!(
            w.said,
            [
                ("speech-dispatcher", "one".to_string()),
                ("speech-dispatcher", "two".to_string())
            ]
        );
        assert_eq!(s.name(), "speech-dispatcher");
    }

    #[test]
    fn a_dead_server_falls_back_and_is_used_again_when_it_returns() {
        let world = Rc::new(RefCell::new(World::default()));
        let (mut s, _) = sink(&world, Duration::from_millis(50));
        world.borrow_mut().broken.push(SD);
        world.borrow_mut().down.push(SD);
        // the utterance is not lost: it is said by the fallback
        s.speak("hello", Kind::Detail, Priority::User).unwrap();
        assert_eq!(s.name(), "espeak-ng");
        assert_eq!(world.borrow().said, [("espeak-ng", "hello".to_string())]);
        // too early to try again
        s.speak("next", Kind::Scene, Priority::Scene).unwrap();
        assert_eq!(s.name(), "espeak-ng");
        std::thread::sleep(Duration::from_millis(60));
        // still down: the next try waits twice as long
        s.speak("later", Kind::Scene, Priority::Scene).unwrap();
        assert_eq!(s.name(), "espeak-ng");
        world.borrow_mut().down.clear();
        world.borrow_mut().broken.clear();
        std::thread::sleep(Duration::from_millis(60));
        s.speak("still later", Kind::Scene, Priority::Scene)
            .unwrap();
        assert_eq!(s.name(), "espeak-ng", "the wait doubled to 100 ms");
        std::thread::sleep(Duration::from_millis(60));
        s.speak("back", Kind::Scene, Priority::Scene).unwrap();
        assert_eq!(s.name(), "speech-dispatcher");
        assert_eq!(world.borrow().switches, ["espeak-ng", "speech-dispatcher"]);
        assert_eq!(
            world.borrow().said.last().unwrap(),
            &("speech-dispatcher", "back".to_string())
        );
    }

    #[test]
    fn a_mute_backend_is_left_without_reconnecting_and_its_utterance_is_not_said() {
        let world = Rc::new(RefCell::new(World::default()));
        let (mut s, _) = sink(&world, Duration::from_secs(30));
        world.borrow_mut().mute.push(SD);
        s.speak("x", Kind::Scene, Priority::Scene).unwrap();
        match s.poll().unwrap() {
            Progress::Cut { began: false, why } => {
                assert!(why.contains("never finished"), "{why}")
            }
            other => panic!("an unheard utterance is not {other:?}"),
        }
        assert_eq!(s.name(), "espeak-ng");
        assert_eq!(world.borrow().opened, ["speech-dispatcher", "espeak-ng"]);
        assert_eq!(world.borrow().alive, 1, "the mute connection is closed");
    }

    #[test]
    fn a_backend_that_stays_mute_is_tried_less_and_less_often_and_nothing_leaks() {
        let world = Rc::new(RefCell::new(World::default()));
        let retry = Duration::from_millis(20);
        let (mut s, _) = sink(&world, retry);
        world.borrow_mut().mute.push(SD);
        let mut tries = vec![];
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(400) {
            s.speak("x", Kind::Scene, Priority::Scene).unwrap();
            if s.name() == "speech-dispatcher" {
                tries.push(start.elapsed());
                assert!(matches!(s.poll().unwrap(), Progress::Cut { .. }));
            } else {
                assert_eq!(s.poll().unwrap(), Progress::Finished);
            }
            assert!(world.borrow().alive <= 1, "one backend open at a time");
            std::thread::sleep(Duration::from_millis(2));
        }
        // first at once, then after ≥ 20, 40, 80, 160 ms: at most 5 tries in 400 ms
        assert!(tries.len() >= 3 && tries.len() <= 5, "{tries:?}");
        let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
        for (i, g) in gaps.iter().enumerate() {
            assert!(*g >= retry * (1 << i), "{gaps:?}");
        }
    }

    #[test]
    fn a_backend_failing_again_soon_after_a_reconnect_is_given_up() {
        let world = Rc::new(RefCell::new(World::default()));
        let (mut s, _) = sink(&world, Duration::from_secs(30));
        world.borrow_mut().broken.push(SD);
        // first failure: reconnect (which opens but is broken too), speak fails there again…
        let r = s.speak("a", Kind::Scene, Priority::Scene);
        assert!(r.is_err());
        assert_eq!(s.name(), "speech-dispatcher");
        // …second failure within the window: fall back
        s.speak("b", Kind::Scene, Priority::Scene).unwrap();
        assert_eq!(s.name(), "espeak-ng");
        assert_eq!(world.borrow().said, [("espeak-ng", "b".to_string())]);
    }

    #[test]
    fn an_unavailable_backend_at_start_is_noted_and_retried() {
        let world = Rc::new(RefCell::new(World::default()));
        world.borrow_mut().down = vec![SD, ES];
        let (mut s, note) = sink(&world, Duration::from_millis(10));
        let note = note.unwrap();
        assert!(note.contains("using log instead"), "{note}");
        assert_eq!(s.name(), "log");
        world.borrow_mut().down.clear();
        std::thread::sleep(Duration::from_millis(20));
        s.speak("hi", Kind::Notice, Priority::Notice).unwrap();
        assert_eq!(s.name(), "speech-dispatcher");
    }
}
