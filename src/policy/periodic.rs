//! Periodic narration (`[scene] mode = "periodic"`): a description of the view every `period_s`
//! seconds whether it changed or not, for listeners who want to hear regularly what is in front
//! of them. Pure timing in media time: `now` is the capture time of each frame (on the daemon
//! clock), so a recording, a static view at the idle pace and a test all run the same rule.
//!
//! - The first clear frame is described at once; after that a frame is due once `period` has
//!   passed since the last description of the view began (a scene narration or a description the
//!   user asked for: either tells the listener what is there).
//! - While the listener is in a conversation about the view (follow-up questions), periodic
//!   narration waits: the worker passes `hold`.
//! - Frames arrive at the capture's pace (slower while the view is static), so a description is
//!   given on the first frame at or after the time it is due.

use std::time::Duration;

/// The periodic narration timer.
#[derive(Debug, Clone, PartialEq)]
pub struct Periodic {
    period: Duration,
    last: Option<Duration>,
}

impl Periodic {
    pub fn new(period: Duration) -> Self {
        Self { period, last: None }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// When the next description is due (`None`: at the first frame).
    pub fn next_due(&self) -> Option<Duration> {
        self.last.map(|l| l + self.period)
    }

    /// Should the frame captured at `now` be described? `hold`: not now whatever the time (a
    /// conversation is going on).
    pub fn due(&self, now: Duration, hold: bool) -> bool {
        !hold && self.next_due().is_none_or(|d| now >= d)
    }

    /// A description of the view began at `at`: the next one is due a period later.
    pub fn described(&mut self, at: Duration) {
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::gate::{thumbnail, ChangeGate, Decision, GateParams, Pace};

    /// Frames at the given times (seconds); `h` after a time holds it (a conversation);
    /// `u` marks a description the user asked for at that frame. Transcript: `N` described, `.`
    /// not, `u` the user's.
    fn sim(period_s: f64, script: &str) -> String {
        let mut p = Periodic::new(Duration::from_secs_f64(period_s));
        let mut out = String::new();
        for tok in script.split_whitespace() {
            let (t, flag) = match tok.strip_suffix(['h', 'u']) {
                Some(t) => (t, tok.chars().last()),
                None => (tok, None),
            };
            let now = Duration::from_secs_f64(t.parse().unwrap());
            if flag == Some('u') {
                p.described(now);
                out.push('u');
                continue;
            }
            if p.due(now, flag == Some('h')) {
                p.described(now);
                out.push('N');
            } else {
                out.push('.');
            }
        }
        out
    }

    #[test]
    fn every_period_from_the_first_frame() {
        // frames every half second, a period of 2 s: at 0, 2, 4
        assert_eq!(sim(2.0, "0 0.5 1 1.5 2 2.5 3 3.5 4"), "N...N...N");
    }

    #[test]
    fn slow_frames_are_described_when_the_first_one_after_the_due_time_comes() {
        // the idle pace: a frame a second, a period of 2.5 s; due at 2.5 → the frame at 3; then
        // due at 5.5 → the frame at 6
        assert_eq!(sim(2.5, "0 1 2 3 4 5 6 7"), "N..N..N.");
    }

    #[test]
    fn a_users_description_restarts_the_period() {
        assert_eq!(sim(2.0, "0 1 1.5u 2 3 3.5 4"), "N.u..N.");
    }

    #[test]
    fn a_conversation_holds_it_and_it_comes_once_the_conversation_is_over() {
        assert_eq!(sim(2.0, "0 2h 3h 4h 4.5 5"), "N...N.");
    }

    /// The change gate keeps a static view from the encoder, and the capture slows to its idle
    /// pace; periodic narration goes on regardless, on the frames' own times.
    #[test]
    fn a_static_view_behind_a_closed_gate_is_still_described_every_period() {
        let mut gate = ChangeGate::new(GateParams {
            cell_change: 12.0,
            area: 0.005,
            max_unseen: Duration::from_secs(10),
            idle_after: Duration::from_secs(3),
            enabled: true,
        });
        let mut p = Periodic::new(Duration::from_secs(5));
        let view = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
        });
        let thumb = thumbnail(&view);
        let mut said = vec![];
        let mut skipped = 0;
        // a static view for 30 s: 2 fps for the first 3 s, then 1 fps (the idle pace)
        let times: Vec<f64> = (0..6)
            .map(|i| i as f64 * 0.5)
            .chain((3..=30).map(|s| s as f64))
            .collect();
        for t in times {
            let now = Duration::from_secs_f64(t);
            match gate.check(&thumb, now) {
                Decision::Skip { .. } => skipped += 1,
                _ => gate.encoded(thumb.clone(), now),
            }
            if p.due(now, false) {
                p.described(now);
                said.push(t);
            }
        }
        assert_eq!(said, vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
        assert!(
            skipped > 20,
            "the gate kept the static view closed: {skipped}"
        );
        assert_eq!(gate.pace(Duration::from_secs(30)), Pace::Idle);
    }
}
