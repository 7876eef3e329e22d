//! The audio-description track of `scenesay narrate`: the daemon's scene watch run over the timed
//! frames of a video or picture sequence at its own pace (media time, not wall time), each new
//! scene described, and the descriptions turned into subtitle cues that follow the media.
//!
//! Cue timing ([`cue_end`]) is pure: a cue starts at the media time of the frame that was described
//! and lasts for its reading time ([`reading_time`]), cut short by the next scene and by the end of
//! the media — never past it. The driver ([`narrate`]) owns no files, clocks or signals: frames come
//! from an iterator, the model through the [`Describer`] seam, and what happened goes to an
//! [`Observer`] (the command writes the files and draws the progress bar there).

use std::path::PathBuf;
use std::time::Duration;

use image::RgbImage;

use crate::describer::{DescribeRequest, Describer, Timings};
use crate::policy::scene::{SceneParams, SceneWatch, Verbosity, Verdict};
use crate::subtitles::Cue;

/// Characters per second a cue is given for reading (a usual subtitling pace; speech at the normal
/// rate is a little faster).
pub const READING_CPS: f64 = 15.0;
/// The shortest time a cue is shown, unless the next scene or the end of the media comes first.
pub const MIN_CUE: Duration = Duration::from_millis(1500);

/// How long `text` takes to read: [`READING_CPS`] characters a second, [`MIN_CUE`] at least.
pub fn reading_time(text: &str) -> Duration {
    let chars = text.trim().chars().count() as f64;
    Duration::from_millis((chars / READING_CPS * 1000.0).round() as u64).max(MIN_CUE)
}

/// When a cue that starts at `start` ends: after its reading time, but no later than the next
/// scene and the end of the media (and never before its start).
pub fn cue_end(
    start: Duration,
    text: &str,
    next: Option<Duration>,
    media_end: Option<Duration>,
) -> Duration {
    let mut end = start + reading_time(text);
    if let Some(n) = next {
        end = end.min(n);
    }
    if let Some(e) = media_end {
        end = end.min(e);
    }
    end.max(start)
}

/// `t` rounded to whole milliseconds (the precision of subtitle files).
pub fn millis(t: Duration) -> Duration {
    Duration::from_millis((t.as_secs_f64() * 1000.0).round() as u64)
}

/// `t` cut to whole milliseconds: an end rounded this way is never later than `t`.
fn millis_down(t: Duration) -> Duration {
    Duration::from_millis(t.as_millis() as u64)
}

/// One described scene of the track.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// 1, 2, 3 … in media order.
    pub number: usize,
    /// Media time of the described frame.
    pub start: Duration,
    /// See [`cue_end`]; provisional for the last scene until the next one or the end.
    pub end: Duration,
    /// The described frame: 1, 2, 3 … among the frames looked at.
    pub frame: u64,
    /// The picture file, for picture sequences.
    pub file: Option<PathBuf>,
    /// Cosine distance to the previously described scene (`None` for the first).
    pub change: Option<f32>,
    pub text: String,
    pub tokens: usize,
    pub timings: Timings,
}

/// The scenes described so far, with cue ends kept consistent as scenes arrive.
#[derive(Debug, Clone, Default)]
pub struct Track {
    media_end: Option<Duration>,
    scenes: Vec<Scene>,
}

impl Track {
    /// An empty track for media that lasts `media_end` (if known).
    pub fn new(media_end: Option<Duration>) -> Self {
        Self {
            media_end: media_end.map(millis_down),
            scenes: vec![],
        }
    }

    pub fn media_end(&self) -> Option<Duration> {
        self.media_end
    }

    pub fn scenes(&self) -> &[Scene] {
        &self.scenes
    }

    /// Adds the next scene (its `end` is computed here); returns the scene before it, whose end is
    /// now final.
    pub fn push(&mut self, mut scene: Scene) -> Option<Scene> {
        scene.start = millis(scene.start);
        let finalized = self.scenes.last_mut().map(|prev| {
            prev.end = cue_end(prev.start, &prev.text, Some(scene.start), self.media_end);
            prev.clone()
        });
        scene.end = cue_end(scene.start, &scene.text, None, self.media_end);
        self.scenes.push(scene);
        finalized
    }

    /// The media is over (or the work stopped): the last scene's end becomes final. `fallback_end`
    /// is where the media ends when its duration was not known beforehand.
    pub fn finish(&mut self, fallback_end: Option<Duration>) -> Option<Scene> {
        if self.media_end.is_none() {
            self.media_end = fallback_end.map(millis_down);
        }
        let media_end = self.media_end;
        self.scenes.last_mut().map(|last| {
            last.end = cue_end(last.start, &last.text, None, media_end);
            last.clone()
        })
    }

    /// The subtitle cues, in time order.
    pub fn cues(&self) -> Vec<Cue> {
        self.scenes
            .iter()
            .map(|s| Cue {
                start: s.start,
                end: s.end,
                text: s.text.clone(),
            })
            .collect()
    }
}

/// One frame of the media with its time.
#[derive(Debug, Clone)]
pub struct TimedFrame {
    /// Media time from the start.
    pub time: Duration,
    pub image: RgbImage,
    /// The picture file, for picture sequences.
    pub file: Option<PathBuf>,
}

/// How to watch and what to ask.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The daemon's scene-change rules (`[scene]`), applied in media time.
    pub scene: SceneParams,
    /// Square side frames are encoded at for the scene watch.
    pub watch_resolution: u32,
    /// What to ask about each new scene.
    pub request: DescribeRequest,
    /// Media time between two frames: where the media ends when its duration is unknown (one
    /// interval after the last frame).
    pub frame_interval: Duration,
}

/// What the driver reports as it goes. Every method has a do-nothing default.
pub trait Observer {
    /// Frame `number` (1, 2, 3 …) at media time `time` is being looked at.
    fn frame(&mut self, _number: u64, _time: Duration) {}
    /// Scene `number` at `time` is being described.
    fn describing(&mut self, _number: usize, _time: Duration) {}
    /// One frame could not be read, encoded or described; the others continue.
    fn problem(&mut self, _time: Option<Duration>, _message: &str) {}
    /// The track changed: a scene was added (`finalized` is the one before it, whose end is now
    /// final), or the track was finished (`finalized` is the last scene). An error stops the work.
    fn track(&mut self, _track: &Track, _finalized: Option<&Scene>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Frames looked at.
    pub frames: u64,
    /// Frames that could not be read, encoded or described.
    pub problems: usize,
    /// Stopped by `cancel` before the end of the media.
    pub interrupted: bool,
    /// Media time of the last frame looked at.
    pub reached: Option<Duration>,
}

/// Watches `frames` with the scene watch and describes every new scene into `track`, until the
/// frames end or `cancel` returns true; then finishes the track. A description cut short by
/// `cancel` is left out (nothing half-done goes into the track).
pub fn narrate(
    describer: &mut dyn Describer,
    frames: impl Iterator<Item = anyhow::Result<TimedFrame>>,
    settings: &Settings,
    track: &mut Track,
    cancel: &dyn Fn() -> bool,
    observer: &mut dyn Observer,
) -> anyhow::Result<Summary> {
    let mut watch = SceneWatch::new(settings.scene.clone());
    let mut sum = Summary::default();
    for item in frames {
        if cancel() {
            sum.interrupted = true;
            break;
        }
        let f = match item {
            Ok(f) => f,
            Err(e) => {
                sum.problems += 1;
                observer.problem(None, &format!("{e:#}"));
                continue;
            }
        };
        let time = millis(f.time);
        if track.media_end().is_some_and(|end| time >= end) {
            // a frame at or past the declared end: nothing shown there fits in the track
            continue;
        }
        sum.frames += 1;
        sum.reached = Some(time);
        observer.frame(sum.frames, time);
        let embedding = match describer.embed(&f.image, settings.watch_resolution) {
            Ok(e) => e,
            Err(e) => {
                sum.problems += 1;
                observer.problem(Some(time), &format!("cannot encode the frame: {e:#}"));
                continue;
            }
        };
        let verdict = watch.observe(&embedding, time);
        tracing::debug!("frame {} at {time:?}: {verdict:?}", sum.frames);
        let Verdict::Narrate { distance, .. } = verdict else {
            continue;
        };
        let number = track.scenes().len() + 1;
        observer.describing(number, time);
        match describer.describe(&f.image, &settings.request, &mut |_| {}, cancel) {
            Ok(d) if d.cancelled => {
                sum.interrupted = true;
                break;
            }
            Ok(d) => {
                // the track always holds full (normal) descriptions, whatever the pace
                watch.narrated(embedding, time, Verbosity::Normal);
                let finalized = track.push(Scene {
                    number,
                    start: time,
                    end: time,
                    frame: sum.frames,
                    file: f.file,
                    change: (number > 1).then_some(distance),
                    text: d.text.trim().to_string(),
                    tokens: d.token_ids.len(),
                    timings: d.timings,
                });
                observer.track(track, finalized.as_ref())?;
            }
            Err(e) => {
                // not marked as narrated: the scene watch asks again on the next frame
                sum.problems += 1;
                observer.problem(Some(time), &format!("description failed: {e:#}"));
            }
        }
    }
    let last = track.finish(sum.reached.map(|t| t + settings.frame_interval));
    observer.track(track, last.as_ref())?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describer::Description;
    use crate::subtitles;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn s(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn reading_time_grows_with_the_text_from_a_minimum() {
        assert_eq!(reading_time(""), MIN_CUE);
        assert_eq!(reading_time("A cat."), MIN_CUE);
        // 60 characters at 15 a second
        assert_eq!(reading_time(&"x".repeat(60)), s(4000));
        assert_eq!(
            reading_time(&"é".repeat(60)),
            s(4000),
            "characters, not bytes"
        );
    }

    #[test]
    fn cue_ends_at_the_next_scene_reading_time_or_media_end() {
        let text = "x".repeat(60); // 4 s to read
        assert_eq!(cue_end(s(1000), &text, None, None), s(5000));
        assert_eq!(cue_end(s(1000), &text, Some(s(3000)), None), s(3000));
        assert_eq!(
            cue_end(s(1000), &text, Some(s(9000)), Some(s(2500))),
            s(2500)
        );
        assert_eq!(
            cue_end(s(1000), &text, Some(s(9000)), Some(s(8000))),
            s(5000)
        );
        assert_eq!(cue_end(s(3000), &text, None, Some(s(2000))), s(3000));
    }

    fn scene(start_ms: u64, text: &str) -> Scene {
        Scene {
            number: 0,
            start: s(start_ms),
            end: s(start_ms),
            frame: 0,
            file: None,
            change: None,
            text: text.into(),
            tokens: 0,
            timings: Timings::default(),
        }
    }

    #[test]
    fn the_track_finalises_each_cue_when_the_next_scene_arrives() {
        let long = "y".repeat(150); // 10 s to read
        let mut t = Track::new(Some(s(20_000)));
        assert_eq!(t.push(scene(500, &long)), None);
        assert_eq!(t.scenes()[0].end, s(10_500), "provisional: reading time");
        let fin = t.push(scene(4000, "short")).unwrap();
        assert_eq!(fin.end, s(4000), "cut at the next scene");
        assert_eq!(t.scenes()[1].end, s(5500));
        let fin = t.push(scene(19_000, &long)).unwrap();
        assert_eq!(fin.end, s(5500), "reading time, the next scene is later");
        let last = t.finish(None).unwrap();
        assert_eq!(last.end, s(20_000), "never past the end of the media");
        let cues = t.cues();
        assert_eq!(cues.len(), 3);
        assert_eq!(
            subtitles::parse_srt(&subtitles::to_srt(&cues)).unwrap(),
            cues
        );
    }

    #[test]
    fn the_media_end_is_never_rounded_up() {
        let t = Track::new(Some(Duration::from_micros(4_012_700)));
        assert_eq!(t.media_end(), Some(s(4012)));
    }

    #[test]
    fn unknown_media_end_comes_from_the_last_frame() {
        let mut t = Track::new(None);
        t.push(scene(1000, "a scene"));
        assert_eq!(t.finish(Some(s(1800))).unwrap().end, s(1800));
        assert_eq!(t.media_end(), Some(s(1800)));
    }

    proptest! {
        /// Whatever the scenes and texts, the cues are in order, never overlap, never start after
        /// they end and never pass the end of the media.
        #[test]
        fn cues_stay_ordered_and_inside_the_media(
            gaps in proptest::collection::vec((1u64..20_000, 0usize..400), 0..12),
            tail in 1u64..30_000,
            known in any::<bool>(),
        ) {
            let mut start = 0u64;
            let mut scenes = vec![];
            for (gap, len) in &gaps {
                start += gap;
                scenes.push(scene(start, &"z".repeat(*len)));
            }
            let end = s(start + tail);
            let mut t = Track::new(known.then_some(end));
            for sc in scenes {
                t.push(sc);
            }
            t.finish(Some(end));
            let cues = t.cues();
            for (i, c) in cues.iter().enumerate() {
                prop_assert!(c.start <= c.end);
                prop_assert!(c.end <= end);
                if let Some(n) = cues.get(i + 1) {
                    prop_assert!(c.end <= n.start);
                    prop_assert!(c.start < n.start);
                }
            }
        }
    }

    /// A scripted model: the embedding of a frame is its first pixel's colour (so solid frames of
    /// the same colour are the same scene), the description names the colour. Description number
    /// `fail_call` fails; during number `cancel_call` the user presses Ctrl-C (`stop` is raised).
    #[derive(Default)]
    struct Fake {
        calls: usize,
        fail_call: Option<usize>,
        cancel_call: Option<usize>,
        stop: Arc<AtomicBool>,
    }

    impl Describer for Fake {
        fn embed(&mut self, image: &RgbImage, _resolution: u32) -> anyhow::Result<Vec<f32>> {
            let p = image.get_pixel(0, 0);
            Ok(vec![p[0] as f32, p[1] as f32, p[2] as f32])
        }

        fn describe(
            &mut self,
            image: &RgbImage,
            _request: &DescribeRequest,
            _on_text: &mut dyn FnMut(&str),
            cancel: &dyn Fn() -> bool,
        ) -> anyhow::Result<Description> {
            self.calls += 1;
            if self.fail_call == Some(self.calls) {
                anyhow::bail!("scripted failure");
            }
            if self.cancel_call == Some(self.calls) {
                self.stop.store(true, Ordering::SeqCst);
            }
            let colour = match image.get_pixel(0, 0).0 {
                [255, 0, 0] => "red",
                [0, 255, 0] => "green",
                _ => "blue",
            };
            Ok(Description {
                text: format!(" A {colour} wall. "),
                token_ids: vec![1, 2, 3],
                cancelled: cancel(),
                ..Default::default()
            })
        }
    }

    /// Frames every 500 ms: `r` red, `g` green, `b` blue.
    fn frames(script: &str) -> Vec<anyhow::Result<TimedFrame>> {
        script
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let rgb = match c {
                    'r' => [255, 0, 0],
                    'g' => [0, 255, 0],
                    'b' => [0, 0, 255],
                    _ => return Err(anyhow::anyhow!("frame {i}: unreadable")),
                };
                Ok(TimedFrame {
                    time: s(500 * i as u64),
                    image: RgbImage::from_pixel(2, 2, image::Rgb(rgb)),
                    file: None,
                })
            })
            .collect()
    }

    fn settings(cooldown_ms: u64) -> Settings {
        Settings {
            scene: SceneParams {
                change_threshold: 0.1,
                stable_frames: 2,
                cooldown: s(cooldown_ms),
                max_per_minute: 0,
                settle: s(20_000),
                settle_detail: false,
            },
            watch_resolution: 64,
            request: DescribeRequest {
                prompt: "Describe.".into(),
                resolution: 64,
                max_tokens: 8,
            },
            frame_interval: s(500),
        }
    }

    #[derive(Default)]
    struct Log {
        updates: Vec<(usize, Option<usize>)>,
        problems: Vec<String>,
        frames: u64,
    }

    impl Observer for Log {
        fn frame(&mut self, number: u64, _time: Duration) {
            self.frames = number;
        }
        fn problem(&mut self, _time: Option<Duration>, message: &str) {
            self.problems.push(message.to_string());
        }
        fn track(&mut self, track: &Track, finalized: Option<&Scene>) -> anyhow::Result<()> {
            self.updates
                .push((track.scenes().len(), finalized.map(|s| s.number)));
            Ok(())
        }
    }

    #[test]
    fn each_settled_scene_is_described_once_at_its_media_time() {
        let mut fake = Fake::default();
        let mut track = Track::new(Some(s(6000)));
        let mut log = Log::default();
        let sum = narrate(
            &mut fake,
            frames("rrrrggggbbbb").into_iter(),
            &settings(0),
            &mut track,
            &|| false,
            &mut log,
        )
        .unwrap();
        assert_eq!(sum.frames, 12);
        assert!(!sum.interrupted);
        let cues = track.cues();
        let got: Vec<(u64, u64, &str)> = cues
            .iter()
            .map(|c| {
                (
                    c.start.as_millis() as u64,
                    c.end.as_millis() as u64,
                    c.text.as_str(),
                )
            })
            .collect();
        // each colour settles on its second frame; a cue lasts its reading time (1.5 s at least)
        // unless the next scene or the end of the media comes first
        assert_eq!(
            got,
            [
                (500, 2000, "A red wall."),
                (2500, 4000, "A green wall."),
                (4500, 6000, "A blue wall.")
            ]
        );
        assert_eq!(track.scenes()[0].change, None);
        assert!(track.scenes()[1].change.unwrap() > 0.1);
        assert_eq!(track.scenes()[1].frame, 6);
        // an update per scene (finalising the one before), then the finishing one
        assert_eq!(
            log.updates,
            [(1, None), (2, Some(1)), (3, Some(2)), (3, Some(3))]
        );
    }

    #[test]
    fn the_cooldown_counts_in_media_time() {
        let mut fake = Fake::default();
        let mut track = Track::new(None);
        narrate(
            &mut fake,
            frames("rrrrggggbbbbbbbbbbbb").into_iter(),
            &settings(4000),
            &mut track,
            &|| false,
            &mut Log::default(),
        )
        .unwrap();
        let starts: Vec<u128> = track.cues().iter().map(|c| c.start.as_millis()).collect();
        // red at 0.5 s; green settles at 2.5 s but waits for the cooldown; blue from 4.5 s
        assert_eq!(starts, [500, 4500]);
        assert_eq!(track.media_end(), Some(s(10_000)), "last frame + interval");
    }

    #[test]
    fn bad_frames_and_failed_descriptions_are_reported_and_skipped() {
        // the second description fails; the scene is described on its next frame
        let mut fake = Fake {
            fail_call: Some(2),
            ..Default::default()
        };
        let mut track = Track::new(Some(s(4000)));
        let mut log = Log::default();
        let sum = narrate(
            &mut fake,
            frames("rr?rgggg").into_iter(),
            &settings(0),
            &mut track,
            &|| false,
            &mut log,
        )
        .unwrap();
        assert_eq!(sum.problems, 2, "{:?}", log.problems);
        assert!(log.problems[0].contains("unreadable"));
        assert!(log.problems[1].contains("description failed"));
        let starts: Vec<u128> = track.cues().iter().map(|c| c.start.as_millis()).collect();
        assert_eq!(starts, [500, 3000]);
    }

    #[test]
    fn frames_past_the_declared_end_are_ignored() {
        let mut fake = Fake::default();
        let mut track = Track::new(Some(s(2000)));
        let sum = narrate(
            &mut fake,
            frames("rrrrgggg").into_iter(),
            &settings(0),
            &mut track,
            &|| false,
            &mut Log::default(),
        )
        .unwrap();
        assert_eq!(sum.frames, 4);
        assert_eq!(track.cues().len(), 1);
        assert_eq!(track.cues()[0].end, s(2000));
    }

    #[test]
    fn cancel_stops_cleanly_with_the_track_so_far() {
        // Ctrl-C while the second scene is being described: it is left out
        let mut fake = Fake {
            cancel_call: Some(2),
            ..Default::default()
        };
        let stop = fake.stop.clone();
        let cancel = move || stop.load(Ordering::SeqCst);
        let mut track = Track::new(Some(s(6000)));
        let mut log = Log::default();
        let sum = narrate(
            &mut fake,
            frames("rrrrggggbbbb").into_iter(),
            &settings(0),
            &mut track,
            &cancel,
            &mut log,
        )
        .unwrap();
        assert!(sum.interrupted);
        assert_eq!(track.cues().len(), 1);
        assert_eq!(track.cues()[0].text, "A red wall.");
        assert_eq!(track.cues()[0].end, s(2000), "reading time, then stopped");
        assert_eq!(log.updates.last(), Some(&(1, Some(1))), "finished");
    }
}
