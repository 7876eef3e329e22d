//! Session awareness: while the screen is locked, the lid is closed, the machine is going to
//! sleep or the login session is not the one in front of the user, scene narration pauses (and
//! with it the camera is released); it resumes once every one of those reasons is gone — but never
//! over a pause the user asked for by hand (`scenesay ctl pause`, the pause key).
//!
//! Each change is said once: "Paused while the screen is locked." when a reason pauses narration,
//! "Watching again." when the last one goes; a second reason while paused, or one of two reasons
//! going away, says nothing. A resume by hand while a reason holds (the user wants narration at a
//! locked screen) wins until a new reason comes.
//!
//! Pure: events from logind (see [`crate::session`]) and the user's pause and resume in, the
//! change of the pause and what to say out. Tested as a script → transcript.

/// Why logind says narration should pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The session's screen is locked (`Lock` signal, `LockedHint`).
    Locked,
    /// The laptop lid is closed (`LidClosed`).
    LidClosed,
    /// The machine is about to suspend or hibernate (`PrepareForSleep(true)`).
    Sleep,
    /// Another session has the seat (`Active` false: a switch of user or console).
    Inactive,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Locked,
        Reason::LidClosed,
        Reason::Sleep,
        Reason::Inactive,
    ];

    /// As `scenesay ctl status` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Locked => "screen locked",
            Reason::LidClosed => "lid closed",
            Reason::Sleep => "going to sleep",
            Reason::Inactive => "session in the background",
        }
    }

    /// Said when this reason pauses narration.
    pub fn notice(self) -> &'static str {
        match self {
            Reason::Locked => "Paused while the screen is locked.",
            Reason::LidClosed => "Paused while the lid is closed.",
            Reason::Sleep => "Paused while the computer sleeps.",
            Reason::Inactive => "Paused while another session is in use.",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A change logind reported. Repeats are harmless (a `Lock` signal followed by `LockedHint`
/// true is one lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// `Lock` / `Unlock` signals of the session, or its `LockedHint`.
    Locked(bool),
    /// The manager's `LidClosed`.
    LidClosed(bool),
    /// `PrepareForSleep(true)` before suspending, `(false)` after waking.
    Sleeping(bool),
    /// The session's `Active`.
    Active(bool),
}

impl SessionEvent {
    /// The reason it concerns, and whether that reason now holds.
    pub fn reason(self) -> (Reason, bool) {
        match self {
            SessionEvent::Locked(b) => (Reason::Locked, b),
            SessionEvent::LidClosed(b) => (Reason::LidClosed, b),
            SessionEvent::Sleeping(b) => (Reason::Sleep, b),
            SessionEvent::Active(b) => (Reason::Inactive, !b),
        }
    }
}

/// What the worker does with its pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Pause,
    Resume,
}

/// The outcome of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub change: Option<Change>,
    /// Said once, with the change (or alone).
    pub notice: Option<&'static str>,
    /// The answer to a request by hand (`scenesay ctl pause` / `resume`).
    pub reply: &'static str,
}

impl Step {
    fn nothing(reply: &'static str) -> Self {
        Step {
            change: None,
            notice: None,
            reply,
        }
    }
}

/// Said when the screen is unlocked (the last reason goes) but the user had paused by hand.
pub const STAYS_PAUSED: &str = "Narration stays paused.";
/// Said when the last reason goes.
pub const WATCHING_AGAIN: &str = "Watching again.";
pub const PAUSED_BY_HAND: &str = "Narration paused.";
pub const RESUMED_BY_HAND: &str = "Narration resumed.";

/// The pause state: the reasons that hold and what the user asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPolicy {
    reasons: u8,
    by_hand: bool,
    /// The user resumed while a reason held: narration runs until a new reason comes.
    overridden: bool,
}

impl SessionPolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether narration is paused (by hand, or by a reason not overridden).
    pub fn paused(&self) -> bool {
        self.by_hand || (self.reasons != 0 && !self.overridden)
    }

    /// Whether the user paused by hand.
    pub fn paused_by_hand(&self) -> bool {
        self.by_hand
    }

    pub fn holds(&self, r: Reason) -> bool {
        self.reasons & r.bit() != 0
    }

    /// Why narration is paused, for `scenesay ctl status` ("by hand", "screen locked" …); empty
    /// while it runs.
    pub fn why(&self) -> Vec<&'static str> {
        if !self.paused() {
            return vec![];
        }
        let mut v = vec![];
        if self.by_hand {
            v.push("by hand");
        }
        if !self.overridden {
            v.extend(
                Reason::ALL
                    .into_iter()
                    .filter(|r| self.holds(*r))
                    .map(Reason::name),
            );
        }
        v
    }

    /// A change reported by logind.
    pub fn session(&mut self, ev: SessionEvent) -> Step {
        let (reason, on) = ev.reason();
        if self.holds(reason) == on {
            return Step::nothing("");
        }
        let was = self.paused();
        if on {
            self.reasons |= reason.bit();
            // a new reason counts again, whatever the user resumed over before
            self.overridden = false;
        } else {
            self.reasons &= !reason.bit();
            if self.reasons == 0 {
                self.overridden = false;
            }
        }
        match (was, self.paused()) {
            (false, true) => Step {
                change: Some(Change::Pause),
                notice: Some(reason.notice()),
                reply: "",
            },
            (true, false) => Step {
                change: Some(Change::Resume),
                notice: Some(WATCHING_AGAIN),
                reply: "",
            },
            // the last reason went, the pause by hand stays: say so, or the user waits for
            // narration that does not come
            (true, true) if self.reasons == 0 => Step {
                change: None,
                notice: Some(STAYS_PAUSED),
                reply: "",
            },
            _ => Step::nothing(""),
        }
    }

    /// `scenesay ctl pause`.
    pub fn pause_by_hand(&mut self) -> Step {
        let was = self.paused();
        self.by_hand = true;
        if was {
            Step::nothing("already paused")
        } else {
            Step {
                change: Some(Change::Pause),
                notice: Some(PAUSED_BY_HAND),
                reply: "paused",
            }
        }
    }

    /// `scenesay ctl resume`: narration runs, over any reason that holds now.
    pub fn resume_by_hand(&mut self) -> Step {
        let was = self.paused();
        self.by_hand = false;
        if self.reasons != 0 {
            self.overridden = true;
        }
        if was {
            Step {
                change: Some(Change::Resume),
                notice: Some(RESUMED_BY_HAND),
                reply: "resumed",
            }
        } else {
            Step::nothing("not paused")
        }
    }

    /// The pause key: resume when paused, pause when running.
    pub fn toggle_by_hand(&mut self) -> Step {
        if self.paused() {
            self.resume_by_hand()
        } else {
            self.pause_by_hand()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: [&str; 11] = [
        "lock", "unlock", "close", "open", "sleep", "wake", "away", "back", "pause", "resume",
        "toggle",
    ];

    fn step(p: &mut SessionPolicy, tok: &str) -> Step {
        match tok {
            "lock" => p.session(SessionEvent::Locked(true)),
            "unlock" => p.session(SessionEvent::Locked(false)),
            "close" => p.session(SessionEvent::LidClosed(true)),
            "open" => p.session(SessionEvent::LidClosed(false)),
            "sleep" => p.session(SessionEvent::Sleeping(true)),
            "wake" => p.session(SessionEvent::Sleeping(false)),
            "away" => p.session(SessionEvent::Active(false)),
            "back" => p.session(SessionEvent::Active(true)),
            "pause" => p.pause_by_hand(),
            "resume" => p.resume_by_hand(),
            "toggle" => p.toggle_by_hand(),
            _ => panic!("unknown token {tok}"),
        }
    }

    fn letter(s: &Step) -> String {
        match (s.change, s.notice) {
            (Some(Change::Pause), Some(n)) => format!("P({n})"),
            (Some(Change::Resume), Some(n)) => format!("R({n})"),
            (None, Some(n)) => format!("say({n})"),
            (None, None) => ".".into(),
            (Some(c), None) => panic!("a change without a notice: {c:?}"),
        }
    }

    /// Events `lock unlock close open sleep wake away back` (from logind) and `pause resume
    /// toggle` (by hand) → one entry per event: `P(notice)` pause, `R(notice)` resume,
    /// `say(notice)` only a notice, `.` nothing.
    fn run(script: &str) -> String {
        entries(script).join(" ")
    }

    fn entries(script: &str) -> Vec<String> {
        let mut p = SessionPolicy::new();
        script
            .split_whitespace()
            .map(|t| letter(&step(&mut p, t)))
            .collect()
    }

    /// The same, with only the changes: `P`, `R`, `!` (a notice alone), `.`.
    fn brief(script: &str) -> String {
        entries(script)
            .iter()
            .map(|e| match &e[..1] {
                "P" => "P",
                "R" => "R",
                "s" => "!",
                _ => ".",
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_lock_pauses_and_the_unlock_resumes_saying_each_once() {
        assert_eq!(
            run("lock unlock"),
            "P(Paused while the screen is locked.) R(Watching again.)"
        );
        assert_eq!(
            run("close open"),
            "P(Paused while the lid is closed.) R(Watching again.)"
        );
        assert_eq!(
            run("sleep wake"),
            "P(Paused while the computer sleeps.) R(Watching again.)"
        );
        assert_eq!(
            run("away back"),
            "P(Paused while another session is in use.) R(Watching again.)"
        );
    }

    #[test]
    fn repeated_events_change_nothing() {
        // a Lock signal and then LockedHint true: one pause; Unlock and LockedHint false: one resume
        assert_eq!(brief("lock lock unlock unlock"), "P . R .");
        assert_eq!(brief("unlock open wake back"), ". . . .");
        assert_eq!(brief("close close sleep sleep open wake"), "P . . . . R");
    }

    #[test]
    fn narration_resumes_only_when_every_reason_is_gone() {
        assert_eq!(brief("lock close unlock open"), "P . . R");
        assert_eq!(brief("lock close open unlock"), "P . . R");
        // suspend with the screen locked, wake to the lock screen: still paused until unlocked
        assert_eq!(brief("lock sleep wake unlock"), "P . . R");
        assert_eq!(brief("sleep lock wake unlock"), "P . . R");
        assert_eq!(brief("away lock sleep back wake unlock"), "P . . . . R");
    }

    #[test]
    fn a_pause_by_hand_survives_the_unlock() {
        assert_eq!(
            run("pause lock unlock"),
            "P(Narration paused.) . say(Narration stays paused.)"
        );
        assert_eq!(brief("lock pause unlock"), "P . !");
        assert_eq!(brief("lock pause unlock resume"), "P . ! R");
        assert_eq!(brief("pause sleep lock wake unlock"), "P . . . !");
        // the hand's resume ends it
        assert_eq!(
            run("pause resume"),
            "P(Narration paused.) R(Narration resumed.)"
        );
        assert_eq!(brief("toggle lock unlock toggle"), "P . ! R");
    }

    #[test]
    fn a_resume_by_hand_over_a_reason_lasts_until_a_new_reason() {
        assert_eq!(
            run("lock resume unlock"),
            "P(Paused while the screen is locked.) R(Narration resumed.) ."
        );
        assert_eq!(brief("lock resume close"), "P R P");
        assert_eq!(brief("lock toggle lock"), "P R .");
        assert_eq!(brief("lock resume unlock lock"), "P R . P");
        assert_eq!(brief("lock resume close unlock open"), "P R P . R");
        assert_eq!(brief("lock toggle toggle unlock"), "P R P !");
    }

    #[test]
    fn requests_by_hand_are_answered() {
        let mut p = SessionPolicy::new();
        assert_eq!(p.resume_by_hand().reply, "not paused");
        assert_eq!(p.pause_by_hand().reply, "paused");
        assert_eq!(p.pause_by_hand().reply, "already paused");
        assert_eq!(p.resume_by_hand().reply, "resumed");
        p.session(SessionEvent::Locked(true));
        assert_eq!(p.pause_by_hand().reply, "already paused");
        assert_eq!(p.resume_by_hand().reply, "resumed");
    }

    #[test]
    fn status_names_every_reason_that_holds() {
        let mut p = SessionPolicy::new();
        assert!(p.why().is_empty());
        p.session(SessionEvent::Locked(true));
        assert_eq!(p.why(), ["screen locked"]);
        p.session(SessionEvent::LidClosed(true));
        p.pause_by_hand();
        assert_eq!(p.why(), ["by hand", "screen locked", "lid closed"]);
        p.session(SessionEvent::Locked(false));
        assert_eq!(p.why(), ["by hand", "lid closed"]);
        p.resume_by_hand();
        assert!(p.why().is_empty(), "resumed over the lid: {:?}", p.why());
        assert!(p.holds(Reason::LidClosed));
    }

    /// Every script of up to five events, checked against the rules as stated, event by event
    /// (the reasons that hold and what the hand asked last are followed here from the script,
    /// not from the policy).
    #[test]
    fn every_script_of_five_events_keeps_the_rules() {
        let mut scripts = vec![vec![]];
        for _ in 0..5 {
            let mut longer = vec![];
            for s in &scripts {
                for t in TOKENS {
                    let mut s: Vec<&str> = s.clone();
                    s.push(t);
                    longer.push(s);
                }
            }
            check_all(&longer);
            scripts = longer;
        }
        assert_eq!(scripts.len(), 11usize.pow(5));
    }

    fn check_all(scripts: &[Vec<&str>]) {
        for s in scripts {
            let mut p = SessionPolicy::new();
            let mut paused = false;
            let mut reasons: Vec<&str> = vec![];
            let mut hand_paused = false;
            for (i, &t) in s.iter().enumerate() {
                let was = paused;
                let st = step(&mut p, t);
                let shown = s[..=i].join(" ");
                match st.change {
                    Some(Change::Pause) => {
                        assert!(!paused, "paused twice: {shown}");
                        paused = true;
                    }
                    Some(Change::Resume) => {
                        assert!(paused, "resumed while running: {shown}");
                        paused = false;
                    }
                    None => {}
                }
                assert_eq!(
                    st.change.is_some(),
                    st.notice.is_some() && st.notice != Some(STAYS_PAUSED),
                    "a change is said once, and only a change: {shown}"
                );
                assert_eq!(paused, p.paused(), "{shown}");
                let (name, on) = match t {
                    "lock" | "unlock" => ("locked", t == "lock"),
                    "close" | "open" => ("lid", t == "close"),
                    "sleep" | "wake" => ("sleep", t == "sleep"),
                    "away" | "back" => ("away", t == "away"),
                    _ => ("", false),
                };
                let before = reasons.clone();
                match t {
                    "pause" => hand_paused = true,
                    "resume" => hand_paused = false,
                    "toggle" => hand_paused = !was,
                    _ if on => {
                        if !reasons.contains(&name) {
                            reasons.push(name);
                        }
                    }
                    _ => reasons.retain(|r| *r != name),
                }
                match t {
                    "pause" => assert!(paused, "{shown}"),
                    "resume" => assert!(!paused, "{shown}"),
                    "toggle" => assert_ne!(paused, was, "{shown}"),
                    _ => {
                        // a session event never resumes a pause by hand, nor while a reason holds
                        if st.change == Some(Change::Resume) {
                            assert!(!hand_paused, "resumed a pause by hand: {shown}");
                            assert!(reasons.is_empty(), "resumed under {reasons:?}: {shown}");
                        }
                        // a new reason always pauses
                        if on && !before.contains(&name) {
                            assert!(paused, "a new reason did not pause: {shown}");
                        }
                        // a repeat changes nothing
                        if before == reasons {
                            assert_eq!(st, Step::nothing(""), "{shown}");
                        }
                        // the last reason gone: running, unless paused by hand (then said so)
                        if reasons.is_empty() && !before.is_empty() {
                            assert_eq!(paused, hand_paused, "{shown}");
                            if was && hand_paused {
                                assert_eq!(st.notice, Some(STAYS_PAUSED), "{shown}");
                            }
                        }
                    }
                }
                // no reason and no pause by hand: narration runs
                if reasons.is_empty() {
                    assert_eq!(paused, hand_paused, "{shown}");
                }
                if hand_paused {
                    assert!(paused, "{shown}");
                }
            }
        }
    }
}
