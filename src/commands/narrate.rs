//! `scenesay narrate`: an audio-description track for a video file or a picture sequence — the
//! daemon's scene watch run over the media at its own pace, each new scene described, written as
//! SubRip / WebVTT subtitles and JSON lines as it goes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use serde::Serialize;

use super::model_args::{open_image, ModelArgs};
use crate::capture::{images, video::Video, FrameSource};
use crate::config::Config;
use crate::describer::{DescribeRequest, Timings};
use crate::exit::{self, WithExit};
use crate::jobs::progress;
use crate::jobs::track::{self, Observer, Scene, Settings, TimedFrame, Track};
use crate::policy::scene::SceneParams;
use crate::subtitles;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    scenesay narrate holiday.mp4 --srt holiday.srt --vtt holiday.vtt --jsonl holiday.jsonl\n  \
    scenesay narrate --fps 1 --resolution 1024 --cooldown 5 talk.mkv --srt talk.ad.srt\n  \
    scenesay narrate frames/ --fps 1 --srt frames.srt      (one picture per second, name order)")]
#[command(mut_arg("config", |a| a.help(
    "Configuration file: `[scene]` (how a change is noticed), `[describe]` (what is asked) and \
     `[model] path` (the default model). Default: the one `scenesay run` uses \
     ($XDG_CONFIG_HOME/scenesay/config.toml, then /etc/scenesay/config.toml), else the built-in \
     defaults. narrate always reads it."
)))]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Write the track as SubRip subtitles to this file.
    #[arg(long, value_name = "FILE.srt")]
    pub srt: Option<PathBuf>,

    /// Write the track as WebVTT subtitles to this file.
    #[arg(long, value_name = "FILE.vtt")]
    pub vtt: Option<PathBuf>,

    /// Write one JSON line per described scene to this file (start, end, text, frame, change,
    /// tokens, timings). Without --srt, --vtt or --jsonl the JSON lines go to stdout.
    #[arg(long, value_name = "FILE.jsonl")]
    pub jsonl: Option<PathBuf>,

    /// Frames per second of media looked at: a video is sampled at this rate; the pictures of a
    /// folder are taken as frames this far apart (1 = one picture per second).
    #[arg(
        long,
        default_value_t = 2.0,
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub fps: f64,

    /// What to ask about each new scene. Default: the configuration's `[describe] scene_prompt`.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,

    /// Square side frames are described at, a multiple of 64 (1024 sees more detail, 256 is quick).
    /// Default: the configuration's `[scene] resolution` (256), as the daemon describes scenes.
    #[arg(long, value_name = "N")]
    pub resolution: Option<u32>,

    /// Most tokens per description. Default: the configuration's `[describe] scene_max_tokens`.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,

    /// A frame whose scene embedding is farther than this (cosine distance) from the last
    /// described scene is a change. Default: `[scene] change_threshold`.
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub change_threshold: Option<f64>,

    /// Frames a change must hold before it is described. Default: `[scene] stable_frames`.
    #[arg(long, value_name = "N")]
    pub stable_frames: Option<u32>,

    /// Least media time between two descriptions, in seconds. Default: `[scene] cooldown_s`.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub cooldown: Option<f64>,

    /// A video file (anything ffmpeg reads), or a folder or glob of pictures taken as a sequence
    /// in name order (frame2 before frame10).
    #[arg(value_name = "VIDEO|FOLDER")]
    pub input: String,
}

/// The media being narrated.
enum Media {
    Video(Video),
    Pictures(Vec<PathBuf>),
}

impl Media {
    /// Opens `input`: a folder, a glob or one picture is a picture sequence, anything else a video.
    fn open(input: &str, fps: f64) -> anyhow::Result<Media> {
        let p = Path::new(input);
        let picture = p.is_file()
            && p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| images::EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if picture || p.is_dir() || (!p.exists() && input.contains(['*', '?', '['])) {
            let files = images::list(input).exit_code(exit::NO_INPUT)?;
            return Ok(Media::Pictures(files));
        }
        if !p.exists() {
            return Err(anyhow::anyhow!(
                "{input}: no such video file or folder of pictures"
            ))
            .exit_code(exit::NO_INPUT);
        }
        Video::open(input, fps, false)
            .map(Media::Video)
            .exit_code(exit::NO_INPUT)
    }

    /// The media's length, when known.
    fn duration(&self, fps: f64) -> Option<Duration> {
        match self {
            Media::Video(v) => v
                .info
                .duration_s
                .filter(|d| d.is_finite() && *d > 0.0)
                .map(Duration::from_secs_f64),
            Media::Pictures(files) => Some(Duration::from_secs_f64(files.len() as f64 / fps)),
        }
    }

    /// How many frames will be looked at (an estimate for a video).
    fn frames(&self, fps: f64) -> Option<u64> {
        match self {
            Media::Video(_) => self
                .duration(fps)
                .map(|d| (d.as_secs_f64() * fps).ceil() as u64),
            Media::Pictures(files) => Some(files.len() as u64),
        }
    }

    fn into_frames(self, fps: f64) -> Box<dyn Iterator<Item = anyhow::Result<TimedFrame>>> {
        match self {
            Media::Video(mut v) => Box::new(std::iter::from_fn(move || {
                match v.next_frame() {
                    Ok(Some(image)) => Some(Ok(TimedFrame {
                        time: v.position().unwrap_or_default(),
                        image,
                        file: None,
                    })),
                    Ok(None) => None,
                    // the decoder is gone after an error: the next call ends the frames
                    Err(e) => Some(Err(e.into())),
                }
            })),
            Media::Pictures(files) => Box::new(files.into_iter().enumerate().map(move |(i, f)| {
                let image = open_image(&f)?;
                Ok(TimedFrame {
                    time: Duration::from_secs_f64(i as f64 / fps),
                    image,
                    file: Some(f),
                })
            })),
        }
    }
}

/// One JSON line per scene, written once its end is final.
#[derive(Serialize)]
struct SceneLine<'a> {
    scene: usize,
    /// Seconds of media time.
    start: f64,
    end: f64,
    text: &'a str,
    frame: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    /// Cosine distance to the previous scene (null for the first).
    change: Option<f32>,
    tokens: usize,
    timings: &'a Timings,
}

fn seconds(t: Duration) -> f64 {
    t.as_millis() as f64 / 1000.0
}

/// `1:02:03.5`-style media time for messages.
fn clock(t: Duration) -> String {
    let ms = t.as_millis();
    let (h, m, s, d) = (
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000 / 100,
    );
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{d}")
    } else {
        format!("{m}:{s:02}.{d}")
    }
}

/// Writes `text` to `path` through a temporary file in the same folder and a rename: the file
/// under its name is always complete.
fn write_whole(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "track".into());
    let tmp = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Where the track goes, kept complete after every change; and the progress bar.
struct Outputs {
    srt: Option<PathBuf>,
    vtt: Option<PathBuf>,
    jsonl: Box<dyn Write>,
    pb: ProgressBar,
    scenes: usize,
    duration: Option<Duration>,
}

impl Outputs {
    fn write_tracks(&self, track: &Track) -> anyhow::Result<()> {
        let cues = track.cues();
        if let Some(p) = &self.srt {
            write_whole(p, &subtitles::to_srt(&cues))?;
        }
        if let Some(p) = &self.vtt {
            write_whole(p, &subtitles::to_vtt(&cues))?;
        }
        Ok(())
    }

    fn write_line(&mut self, s: &Scene) -> anyhow::Result<()> {
        let line = SceneLine {
            scene: s.number,
            start: seconds(s.start),
            end: seconds(s.end),
            text: &s.text,
            frame: s.frame,
            image: s.file.as_ref().map(|f| f.display().to_string()),
            change: s.change,
            tokens: s.tokens,
            timings: &s.timings,
        };
        let mut text = serde_json::to_string(&line)?;
        text.push('\n');
        self.jsonl
            .write_all(text.as_bytes())
            .and_then(|_| self.jsonl.flush())
            .context("cannot write the JSON lines")
    }

    fn position(&self, time: Duration) -> String {
        match self.duration {
            Some(d) => format!("{} / {}", clock(time), clock(d)),
            None => clock(time),
        }
    }
}

impl Observer for Outputs {
    fn frame(&mut self, number: u64, time: Duration) {
        if self.pb.length().is_some_and(|l| number > l) {
            self.pb.set_length(number);
        }
        self.pb.set_position(number);
        self.pb
            .set_message(format!("{}, {} scene(s)", self.position(time), self.scenes));
    }

    fn describing(&mut self, number: usize, time: Duration) {
        self.pb.set_message(format!(
            "{}, describing scene {number}",
            self.position(time)
        ));
    }

    fn problem(&mut self, time: Option<Duration>, message: &str) {
        let at = time
            .map(|t| format!("at {}: ", clock(t)))
            .unwrap_or_default();
        self.pb.suspend(|| eprintln!("warning: {at}{message}"));
    }

    fn track(&mut self, track: &Track, finalized: Option<&Scene>) -> anyhow::Result<()> {
        self.scenes = track.scenes().len();
        if let Some(s) = finalized {
            self.write_line(s)?;
        }
        self.write_tracks(track)
    }
}

/// Applies the command-line overrides to `[scene]` / `[describe]` and checks them.
fn apply_overrides(a: &Args, config: &mut Config) -> anyhow::Result<()> {
    if !(a.fps > 0.0 && a.fps <= 60.0) {
        return Err(anyhow::anyhow!(
            "--fps {}: use a number above 0 and at most 60 (e.g. 2)",
            a.fps
        ))
        .exit_code(exit::USAGE);
    }
    let sc = &mut config.scene;
    sc.change_threshold = a.change_threshold.unwrap_or(sc.change_threshold);
    sc.stable_frames = a.stable_frames.unwrap_or(sc.stable_frames);
    sc.cooldown_s = a.cooldown.unwrap_or(sc.cooldown_s);
    let d = &mut config.describe;
    if let Some(p) = &a.prompt {
        d.scene_prompt = p.clone();
    }
    d.scene_max_tokens = a.max_tokens.unwrap_or(d.scene_max_tokens);
    if let Err(problems) = config.validate() {
        let flag = |key: &str| match key {
            "scene.change_threshold" => "--change-threshold",
            "scene.stable_frames" => "--stable-frames",
            "scene.cooldown_s" => "--cooldown",
            "describe.scene_prompt" => "--prompt",
            "describe.scene_max_tokens" => "--max-tokens",
            _ => "the configuration",
        };
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", flag(p.key), p.message))
            .collect();
        return Err(anyhow::anyhow!(text.join("; "))).exit_code(exit::USAGE);
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    // the scene watch and the questions come from the configuration: it is always read here
    let (mut config, config_path) = super::run::load_config(a.model.config.as_deref())?;
    if let Some(p) = &config_path {
        tracing::info!("configuration: {}", p.display());
    }
    apply_overrides(&a, &mut config)?;
    let dir = a.model.resolve_with(config.model_dir().as_deref())?;
    let media = Media::open(&a.input, a.fps)?;
    let duration = media.duration(a.fps);

    let mut model = a.model.load_from(&dir)?;
    if model.tokenizer().is_none() {
        return Err(anyhow::anyhow!(
            "{} has no tokenizer (tokenizer.json, or vocab.json + merges.txt): cannot write text",
            model.dir.display()
        ))
        .exit_code(exit::MODEL_UNAVAILABLE);
    }
    let watch_resolution = config.scene.resolution;
    let resolution = a.resolution.unwrap_or(watch_resolution);
    model
        .check_resolution(watch_resolution)
        .context("`[scene] resolution` does not suit this model")
        .exit_code(exit::CONFIG)?;
    model
        .check_resolution(resolution)
        .context("--resolution")
        .exit_code(exit::USAGE)?;
    model.describe_params.repetition_penalty = config.describe.repetition_penalty as f32;
    let settings = Settings {
        scene: SceneParams::from_config(&config.scene),
        watch_resolution,
        request: DescribeRequest {
            prompt: config.describe.scene_prompt.clone(),
            resolution,
            max_tokens: config.describe.scene_max_tokens,
        },
        frame_interval: Duration::from_secs_f64(1.0 / a.fps),
    };

    let jsonl: Box<dyn Write> = match &a.jsonl {
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("cannot write {}", p.display()))?)
        }
        None if a.srt.is_none() && a.vtt.is_none() => Box::new(std::io::stdout()),
        None => Box::new(std::io::sink()),
    };
    let total = media.frames(a.fps);
    let pb = progress::bar_of(total.unwrap_or(0), "frames");
    let mut out = Outputs {
        srt: a.srt.clone(),
        vtt: a.vtt.clone(),
        jsonl,
        pb: pb.clone(),
        scenes: 0,
        duration,
    };
    let cancel = crate::signals::interrupt_flag();
    let mut track = Track::new(duration);
    // an empty, valid track from the start: the files are complete at every moment
    out.write_tracks(&track)?;

    let frames = media.into_frames(a.fps);
    let sum = track::narrate(
        &mut model,
        frames,
        &settings,
        &mut track,
        &|| cancel.is_set(),
        &mut out,
    )?;
    pb.finish_and_clear();

    let written: Vec<String> = [&a.srt, &a.vtt, &a.jsonl]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    let end = track.media_end().unwrap_or_default();
    eprintln!(
        "{} scene(s) described, {} frames looked at, {} of media{}{}",
        track.scenes().len(),
        sum.frames,
        if sum.interrupted {
            format!(
                "{} of {}",
                clock(sum.reached.unwrap_or_default()),
                clock(end)
            )
        } else {
            clock(end)
        },
        if sum.problems > 0 {
            format!(", {} problem(s)", sum.problems)
        } else {
            String::new()
        },
        if written.is_empty() {
            String::new()
        } else {
            format!("; wrote {}", written.join(", "))
        }
    );
    Ok(if sum.interrupted {
        eprintln!(
            "interrupted at {}: the files hold the track up to there",
            clock(sum.reached.unwrap_or_default())
        );
        exit::INTERRUPTED
    } else if sum.problems == 0 {
        exit::OK
    } else if sum.frames == 0 {
        exit::FAILURE
    } else {
        exit::PARTIAL
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_for_messages() {
        assert_eq!(clock(Duration::from_millis(83_456)), "1:23.4");
        assert_eq!(clock(Duration::from_millis(3_723_000)), "1:02:03.0");
    }

    #[test]
    fn whole_files_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.srt");
        write_whole(&p, "one").unwrap();
        write_whole(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }
}
