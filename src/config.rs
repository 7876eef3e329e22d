//! The daemon's configuration: serde structs mirroring `config.toml` (every key documented there,
//! with its default), the file search order, path resolution and validation. Errors name the file,
//! the line and column, the key, and what is allowed.
//!
//! Extending: add the field to its section struct (with `#[serde(default)]` coming from the
//! section's `Default`), document it in `config.toml` at the repository root, and add its range
//! check to [`Config::validate`] as an [`Invalid`] naming the dotted key — the loader turns that into
//! `file:line:column`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Precision;

/// Where `scenesay run` looks for its configuration, after `--config FILE`.
pub fn search_path() -> Vec<PathBuf> {
    let mut v = vec![];
    if let Some(d) = xdg_dir("XDG_CONFIG_HOME", ".config") {
        v.push(d.join("scenesay/config.toml"));
    }
    v.push(PathBuf::from("/etc/scenesay/config.toml"));
    v
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub model: ModelConfig,
    pub capture: CaptureConfig,
    pub scene: SceneConfig,
    pub describe: DescribeConfig,
    pub speech: SpeechConfig,
    pub hotkey: HotkeyConfig,
    pub control: ControlConfig,
    pub log: LogConfig,
    /// `[watch]`: `scenesay ctl watch "CONDITION"`: yes/no checks of the view.
    pub watch: WatchConfig,
    /// `[memory]`: what was seen, for `scenesay ctl recall`.
    pub memory: MemoryConfig,
    /// `[guards]`: when the view is too dark, covered, bright or blurred to describe.
    pub guards: crate::policy::guard::GuardConfig,
    pub session: SessionConfig,
}

/// `[model]`: which checkpoint to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Checkpoint directory; empty = apple/FastVLM-0.5B from the Hugging Face cache.
    /// `--model` / `$SCENESAY_MODEL` take precedence.
    pub path: String,
    /// Weight precision of the language model.
    pub dtype: Precision,
}

/// Where frames come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    #[default]
    Camera,
    Images,
    Video,
    TestPattern,
    /// A network camera: `url` (RTSP, MJPEG over HTTP …) through ffmpeg.
    Stream,
    /// A camera through PipeWire (`pipewire_target`), via GStreamer's pipewiresrc.
    Pipewire,
    /// Any GStreamer pipeline that produces video (`pipeline`).
    Gstreamer,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Camera => "camera",
            SourceKind::Images => "images",
            SourceKind::Video => "video",
            SourceKind::TestPattern => "test-pattern",
            SourceKind::Stream => "stream",
            SourceKind::Pipewire => "pipewire",
            SourceKind::Gstreamer => "gstreamer",
        }
    }
}

/// A camera: an index (0 = `/dev/video0`) or a device path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CameraDevice {
    Index(u32),
    Path(String),
}

impl Default for CameraDevice {
    fn default() -> Self {
        CameraDevice::Index(0)
    }
}

impl std::fmt::Display for CameraDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CameraDevice::Index(i) => write!(f, "/dev/video{i}"),
            CameraDevice::Path(p) => f.write_str(p),
        }
    }
}

impl<'de> Deserialize<'de> for CameraDevice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CameraDevice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a camera index such as 0, or a device path such as \"/dev/video0\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CameraDevice, E> {
                u32::try_from(v)
                    .map(CameraDevice::Index)
                    .map_err(|_| E::custom(format!("camera index {v} is out of range (0, 1, 2 …)")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CameraDevice, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CameraDevice, E> {
                if v.trim().is_empty() {
                    return Err(E::custom(
                        "empty camera device: use an index such as 0 or a path such as \"/dev/video0\"",
                    ));
                }
                Ok(match v.trim().parse::<u32>() {
                    Ok(i) => CameraDevice::Index(i),
                    Err(_) => CameraDevice::Path(v.to_string()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `[capture]`: the frame source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    pub source: SourceKind,
    pub device: CameraDevice,
    pub width: u32,
    pub height: u32,
    /// Frames per second handed to the model, at most.
    pub fps: f64,
    /// `images`: a folder, a glob or one file; `video`: a file.
    pub path: String,
    /// `images` / `video`: start again at the end.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// `images`: each picture is delivered this many times in a row.
    pub repeat_each: u32,
    /// Frames per second while the view is static (the change gate has stayed closed for
    /// `idle_after_s`): camera and test pattern only; back to `fps` the moment the view changes.
    /// Never faster than `fps`.
    pub idle_fps: f64,
    /// Seconds of a static view before the capture slows to `idle_fps`.
    pub idle_after_s: f64,
    /// Random sensor-like noise added to every frame, up to ± this many levels (0–64; 0 = none):
    /// for trying the scene watch on pictures or the test pattern as a real camera would see them.
    pub noise: u8,
    /// `stream`: the network camera's URL (rtsp://…, http://…/video).
    pub url: String,
    /// `gstreamer`: the part of a GStreamer pipeline that produces video (scenesay appends the
    /// conversion to RGB frames).
    pub pipeline: String,
    /// `pipewire`: the camera's PipeWire node (name or serial); empty = the default camera.
    pub pipewire_target: String,
    /// camera: a detail, read or ask request takes one frame at the camera's highest resolution
    /// (the camera switches to it and back) instead of the watch's frame.
    pub still: bool,
    /// camera: undecodable frames in a row that count as a camera failure (1–1000); fewer are
    /// skipped and counted (`scenesay ctl status`).
    pub bad_frames: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            source: SourceKind::Camera,
            device: CameraDevice::Index(0),
            width: 640,
            height: 480,
            fps: 2.0,
            path: String::new(),
            looping: true,
            repeat_each: 1,
            idle_fps: 1.0,
            idle_after_s: 3.0,
            noise: 0,
            url: String::new(),
            pipeline: String::new(),
            pipewire_target: String::new(),
            still: true,
            bad_frames: 15,
        }
    }
}

/// `[scene]`: when the view counts as a new scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SceneConfig {
    /// Square side the scene watch encodes frames at (a multiple of 64).
    pub resolution: u32,
    /// Cosine distance to the last narrated scene above which the view has changed.
    pub change_threshold: f64,
    /// Consecutive changed (and mutually similar) frames needed before narrating.
    pub stable_frames: u32,
    /// Least number of seconds between two scene narrations.
    pub cooldown_s: f64,
    /// Most scene narrations in any minute.
    pub max_per_minute: u32,
    /// Seconds after which an unchanged view counts as settled: a scene that stayed for less is
    /// followed by a brief description (`[describe] brief_prompt`).
    pub settle_s: f64,
    /// Once the view has settled, describe it once more, in full (`detail_prompt`).
    pub settle_detail: bool,
    /// A scene description at least this similar (0–1, shared content words) to the last one said
    /// is not spoken; 0 = off.
    pub repeat_similarity: f64,
    /// The change gate: a frame is encoded only when it could show a different scene.
    pub gate: bool,
    /// A cell of the gate's 32 × 24 grid differs when a colour moved by more than this (levels).
    pub gate_cell_change: f64,
    /// The gate opens when at least this fraction of the view differs.
    pub gate_area: f64,
    /// A frame is encoded at least this often (seconds), whatever the gate says.
    pub max_unseen_s: f64,
    /// `change`: describe the view when it changes; `periodic`: every `period_s` seconds,
    /// changed or not.
    pub mode: SceneMode,
    /// `mode = "periodic"`: seconds between two descriptions of the view.
    pub period_s: f64,
}

/// When scenes are narrated (`[scene] mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SceneMode {
    /// When the view changes (the scene watch).
    #[default]
    Change,
    /// Every `period_s` seconds, whether the view changed or not.
    Periodic,
}

impl SceneMode {
    pub fn name(self) -> &'static str {
        match self {
            SceneMode::Change => "change",
            SceneMode::Periodic => "periodic",
        }
    }
}

/// How the built-in prompts ask for where things are (`[describe] positions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// Left, right, ahead, near or far.
    #[default]
    Sides,
    /// Clock-face directions: "a cup at 2 o'clock" (12 o'clock straight ahead).
    Clock,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            resolution: 256,
            change_threshold: 0.10,
            stable_frames: 2,
            cooldown_s: 10.0,
            max_per_minute: 4,
            settle_s: 20.0,
            settle_detail: false,
            repeat_similarity: 0.7,
            gate: true,
            gate_cell_change: 12.0,
            gate_area: 0.005,
            max_unseen_s: 10.0,
            mode: SceneMode::Change,
            period_s: 30.0,
        }
    }
}

/// `[describe]`: what the model is asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DescribeConfig {
    pub scene_prompt: String,
    pub scene_max_tokens: usize,
    /// While scenes change quickly (see `[scene] settle_s`); at most `scene_max_tokens` tokens.
    pub brief_prompt: String,
    pub brief_max_tokens: usize,
    pub detail_resolution: u32,
    pub detail_prompt: String,
    /// Also the limit for answers to `scenesay ctl ask`, `changed` and `read`.
    pub detail_max_tokens: usize,
    /// `scenesay ctl changed`: `{previous}` is replaced by the last description said.
    pub changed_prompt: String,
    /// `scenesay ctl read`: the text in view.
    pub read_prompt: String,
    pub read_resolution: u32,
    /// 1.0 = off; 1.1 discourages the model from repeating itself.
    pub repetition_penalty: f64,
    /// `scenesay ctl ask` within this many seconds of an answer about the same view goes on with
    /// that conversation (the model keeps the picture and the turns so far); 0 = every question
    /// is asked afresh.
    pub followup_s: f64,
    /// `sides` (left, right, ahead) or `clock` ("a cup at 2 o'clock"): how the built-in prompts
    /// ask for where things are.
    pub positions: Positions,
}

/// The placeholder of `[describe] changed_prompt`.
pub const PREVIOUS: &str = "{previous}";

impl Default for DescribeConfig {
    fn default() -> Self {
        Self {
            scene_prompt: "In one short sentence, tell a blind person what is in front of them: \
                           the main thing first, where it is (left, right or ahead), and any \
                           sign or text in view."
                .into(),
            scene_max_tokens: 40,
            brief_prompt: "In a few words, name the main thing in front of a blind person and \
                           where it is: left, right or ahead."
                .into(),
            brief_max_tokens: 12,
            detail_resolution: 1024,
            detail_prompt: "Describe this view for a blind person, briefly and concretely: the \
                            main objects and where they are (left, right, ahead, near or far), \
                            any people and what they are doing, and read out any text."
                .into(),
            detail_max_tokens: 256,
            changed_prompt: "A moment ago a blind person was told: \"{previous}\" Look at the \
                             view now and tell them in one or two short sentences only what is \
                             different: what appeared, what is gone, what moved (left, right, \
                             ahead). If nothing is different, say: Nothing has changed."
                .into(),
            read_prompt: "Read out all the text in view, exactly as written, from top to \
                          bottom and left to right. If there is no text, say: No text in view."
                .into(),
            read_resolution: 1024,
            repetition_penalty: 1.0,
            followup_s: 60.0,
            positions: Positions::Sides,
        }
    }
}

/// Which speech output to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SpeechBackend {
    /// speech-dispatcher (what the Orca screen reader uses), spoken to over its socket with a
    /// priority per kind of speech.
    #[default]
    SpeechDispatcher,
    /// The platform's speech service through the `tts` crate (one fixed priority).
    Tts,
    /// The espeak-ng program, run directly.
    EspeakNg,
    /// No audio: print each utterance on standard output.
    Log,
}

impl SpeechBackend {
    pub fn name(self) -> &'static str {
        match self {
            SpeechBackend::SpeechDispatcher => "speech-dispatcher",
            SpeechBackend::Tts => "tts",
            SpeechBackend::EspeakNg => "espeak-ng",
            SpeechBackend::Log => "log",
        }
    }
}

/// `[speech]`: how narrations are spoken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechConfig {
    pub backend: SpeechBackend,
    /// -100 (slowest) … 0 (the backend's normal speed) … 100 (fastest).
    pub rate: i32,
    /// -100 (quietest) … 0 (the backend's own volume) … 100 (loudest); speech-dispatcher only.
    pub volume: i32,
    /// Backend voice name; empty = the backend's default.
    pub voice: String,
    /// Language code such as "en"; empty = the backend's default.
    pub language: String,
    /// A scene narration still waiting to be spoken after this many seconds is dropped.
    pub stale_s: f64,
    /// Say "Looking." the moment a detail request or a question arrives.
    pub acknowledge: bool,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        Self {
            backend: SpeechBackend::SpeechDispatcher,
            rate: 0,
            volume: 0,
            voice: String::new(),
            language: String::new(),
            stale_s: 10.0,
            acknowledge: true,
        }
    }
}

/// `[hotkey]`: keys read passively from the keyboard (never grabbed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotkeyConfig {
    /// Detailed description; empty = no hotkey at all.
    pub key: String,
    /// Say the last narration again; empty = none.
    pub repeat_key: String,
    /// Pause / resume scene narration; empty = none.
    pub pause_key: String,
    /// What changed since the last description; empty = none.
    pub changed_key: String,
    /// Read the text in view; empty = none.
    pub read_key: String,
    /// Stop speaking now (narration goes on); empty = none.
    pub hush_key: String,
    /// Say the watches that are set; empty = none.
    pub watches_key: String,
    /// "Have I seen this view before?" (recall by the view's embedding); empty = none.
    pub recall_key: String,
    /// An input device path; empty = every keyboard under /dev/input.
    pub device: String,
    /// Start a new conversation (the next question is not a follow-up); empty = none.
    pub new_key: String,
    /// Switch between narrating changes and periodic narration; empty = none.
    pub mode_key: String,
}

impl Default for HotkeyConfig {
    fn default() -> Self {
        Self {
            key: "KEY_F12".into(),
            repeat_key: String::new(),
            pause_key: String::new(),
            changed_key: String::new(),
            read_key: String::new(),
            hush_key: String::new(),
            watches_key: String::new(),
            recall_key: String::new(),
            device: String::new(),
            new_key: String::new(),
            mode_key: String::new(),
        }
    }
}

/// `[control]`: the local control socket used by `scenesay ctl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Socket path; empty = `$XDG_RUNTIME_DIR/scenesay.sock`.
    pub socket: String,
}

/// `[log]`: the narration log (JSON lines; never any image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub enabled: bool,
    /// Empty = `$XDG_STATE_HOME/scenesay/narration.jsonl`.
    pub path: String,
    /// The file is rotated (`narration.jsonl.1` …) before a line would take it past this many
    /// megabytes; 0 = no cap.
    pub max_mb: f64,
    /// Rotated files kept; 0 = none (the full file is dropped).
    pub keep: u32,
    /// Lines older than this many days are dropped; 0 = kept forever.
    pub keep_days: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: String::new(),
            max_mb: 10.0,
            keep: 3,
            keep_days: 30.0,
        }
    }
}

/// `[watch]`: watches set with `scenesay ctl watch` (they last until scenesay stops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// On a view that does not change, the watches are checked at most this often (seconds);
    /// after a scene change they are checked at once.
    pub interval_s: f64,
    /// The yes/no question; `{condition}` stands for the watched condition.
    pub question: String,
    /// Square side the model looks at for a check (a multiple of 64; the scene watch's reuses its
    /// encoding).
    pub resolution: u32,
    /// A check scoring at least this (P(yes) / (P(yes) + P(no))) counts as true.
    pub on: f64,
    /// A watch that turned true is armed again once a check scores at most this.
    pub off: f64,
    /// Checks in a row at least `on` before a watch turns true and is announced.
    pub confirm: u32,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            interval_s: 5.0,
            question: "Is this true in the picture: {condition}? Answer yes or no.".into(),
            resolution: 256,
            on: 0.7,
            off: 0.3,
            confirm: 2,
        }
    }
}

impl WatchConfig {
    pub fn params(&self) -> crate::policy::watch::WatchParams {
        crate::policy::watch::WatchParams {
            on: self.on,
            off: self.off,
            confirm: self.confirm,
        }
    }
}

/// `[memory]`: every finished scene narration and detailed description, with its frame's scene
/// embedding (never the frame), for `scenesay ctl recall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    pub enabled: bool,
    /// Empty = `$XDG_STATE_HOME/scenesay/memory.jsonl`.
    pub path: String,
    /// Before a line would take the file past this many megabytes, the oldest lines are dropped;
    /// 0 = no cap.
    pub max_mb: f64,
    /// Lines older than this many days are dropped; 0 = kept until the cap drops them.
    pub keep_days: f64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: String::new(),
            max_mb: 20.0,
            keep_days: 30.0,
        }
    }
}

impl MemoryConfig {
    pub fn limits(&self) -> crate::memory::MemoryLimits {
        crate::memory::MemoryLimits {
            max_bytes: (self.max_mb * 1024.0 * 1024.0) as u64,
            keep_days: self.keep_days,
        }
    }
}

impl LogConfig {
    pub fn limits(&self) -> crate::narration::LogLimits {
        crate::narration::LogLimits {
            max_bytes: (self.max_mb * 1024.0 * 1024.0) as u64,
            keep: self.keep,
            keep_days: self.keep_days,
        }
    }
}

/// `[session]`: following the login session (screen lock, lid, sleep) through systemd-logind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Pause narration (and release the camera) while the screen is locked, the lid is closed,
    /// the machine sleeps or another session has the screen.
    pub follow_logind: bool,
    /// The D-Bus address logind is found on; empty = the system bus (another one is for tests).
    pub bus: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            follow_logind: true,
            bus: String::new(),
        }
    }
}

/// One invalid value: the dotted key it belongs to and what is wrong / allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        key,
        message: message.into(),
    }
}

/// One located problem in a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based; 0 when the problem has no place in the file.
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The offending line of the file, for display.
    pub source_line: Option<String>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut s = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        if p.line > 0 {
            s.push_str(&format!(
                "{}:{}:{}: {}",
                path.display(),
                p.line,
                p.column,
                p.message
            ));
            if let Some(l) = &p.source_line {
                s.push_str(&format!(
                    "\n    {l}\n    {}^",
                    " ".repeat(p.column.saturating_sub(1))
                ));
            }
        } else {
            s.push_str(&format!("{}: {}", path.display(), p.message));
        }
    }
    s
}

impl ConfigError {
    /// The located problems (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

const MAX_RESOLUTION: u32 = 2048;

fn check_resolution(key: &'static str, r: u32, out: &mut Vec<Invalid>) {
    if r == 0 || !r.is_multiple_of(64) || r > MAX_RESOLUTION {
        out.push(invalid(
            key,
            format!("resolution {r} is not allowed: use a multiple of 64 from 64 to {MAX_RESOLUTION} (256, 512 or 1024 are usual)"),
        ));
    }
}

fn check_tokens(key: &'static str, n: usize, out: &mut Vec<Invalid>) {
    if n == 0 || n > 4096 {
        out.push(invalid(
            key,
            format!("{n} tokens is not allowed: use 1 to 4096"),
        ));
    }
}

impl Config {
    /// Reads the configuration: `explicit` if given (it must exist), else the first file of
    /// [`search_path`] that exists, else the built-in defaults. Returns the file used.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => search_path().into_iter().find(|p| p.is_file()),
        };
        match path {
            None => {
                let mut c = Config::default();
                c.resolve_paths(None);
                Ok((c, None))
            }
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                let c = Config::from_toml(&text, &p)?;
                Ok((c, Some(p)))
            }
        }
    }

    /// Parses and validates `text` (read from `path`, which is used in messages and as the base of
    /// relative paths).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![locate(text, e.span(), &toml_message(text, &e))],
        })?;
        if let Err(list) = c.validate() {
            let problems = list
                .into_iter()
                .map(|inv| {
                    let span = key_span(text, inv.key);
                    locate(text, span, &format!("`{}`: {}", inv.key, inv.message))
                })
                .collect();
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
        c.resolve_paths(base.as_deref());
        c.apply_language();
        c.apply_positions();
        Ok(c)
    }

    /// With `[speech] language` set to a language with a built-in prompt set, every `[describe]`
    /// prompt left at its (English) default becomes that language's; prompts written by the user
    /// stay as they are.
    pub fn apply_language(&mut self) {
        let Some(p) = crate::policy::phrasing::prompts(&self.speech.language) else {
            return;
        };
        let en = DescribeConfig::default();
        let d = &mut self.describe;
        for (mine, default, theirs) in [
            (&mut d.scene_prompt, &en.scene_prompt, p.scene),
            (&mut d.brief_prompt, &en.brief_prompt, p.brief),
            (&mut d.detail_prompt, &en.detail_prompt, p.detail),
            (&mut d.changed_prompt, &en.changed_prompt, p.changed),
            (&mut d.read_prompt, &en.read_prompt, p.read),
        ] {
            if mine == default {
                *mine = theirs.to_string();
            }
        }
    }

    /// With `[describe] positions = "clock"`, every prompt that says where things are and is left
    /// at a built-in text (English, or the narration language's) asks for clock-face directions
    /// instead; prompts written by the user stay as they are.
    pub fn apply_positions(&mut self) {
        if self.describe.positions != Positions::Clock {
            return;
        }
        use crate::policy::phrasing::{clock_prompts, prompts};
        let (Some(en), Some(en_clock)) = (prompts("en"), clock_prompts("en")) else {
            return;
        };
        let lang = prompts(&self.speech.language).zip(clock_prompts(&self.speech.language));
        let d = &mut self.describe;
        let pick = |p: &crate::policy::phrasing::Prompts| [p.scene, p.brief, p.detail, p.changed];
        let pick_clock =
            |c: &crate::policy::phrasing::ClockPrompts| [c.scene, c.brief, c.detail, c.changed];
        for (i, mine) in [
            &mut d.scene_prompt,
            &mut d.brief_prompt,
            &mut d.detail_prompt,
            &mut d.changed_prompt,
        ]
        .into_iter()
        .enumerate()
        {
            if mine.as_str() == pick(en)[i] {
                *mine = pick_clock(en_clock)[i].to_string();
            } else if let Some((_, c)) = lang.filter(|(p, _)| mine.as_str() == pick(p)[i]) {
                *mine = pick_clock(c)[i].to_string();
            }
        }
    }

    /// The cue said when a request begins, in the narration language (`None`: switched off).
    pub fn acknowledgement(&self) -> Option<String> {
        self.speech.acknowledge.then(|| {
            crate::policy::phrasing::prompts(&self.speech.language)
                .or(crate::policy::phrasing::prompts("en"))
                .map(|p| p.acknowledge.to_string())
                .unwrap_or_default()
        })
    }

    /// Checks every value's range and the combinations of values; one [`Invalid`] per problem.
    pub fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut out = vec![];
        let cap = &self.capture;
        if !(cap.fps > 0.0 && cap.fps <= 60.0) {
            out.push(invalid(
                "capture.fps",
                format!("{} frames per second is not allowed: use a number above 0 and at most 60 (e.g. 2)", cap.fps),
            ));
        }
        if !(16..=8192).contains(&cap.width) {
            out.push(invalid(
                "capture.width",
                format!("width {} is not allowed: use 16 to 8192 pixels", cap.width),
            ));
        }
        if !(16..=8192).contains(&cap.height) {
            out.push(invalid(
                "capture.height",
                format!(
                    "height {} is not allowed: use 16 to 8192 pixels",
                    cap.height
                ),
            ));
        }
        if cap.repeat_each == 0 || cap.repeat_each > 10_000 {
            out.push(invalid(
                "capture.repeat_each",
                format!("{} is not allowed: use 1 to 10000", cap.repeat_each),
            ));
        }
        if !(cap.idle_fps > 0.0 && cap.idle_fps <= 60.0) {
            out.push(invalid(
                "capture.idle_fps",
                format!(
                    "{} frames per second is not allowed: use a number above 0 and at most 60 (e.g. 1; above fps it means fps)",
                    cap.idle_fps
                ),
            ));
        }
        if !(cap.idle_after_s >= 0.0 && cap.idle_after_s <= 86_400.0) {
            out.push(invalid(
                "capture.idle_after_s",
                format!(
                    "{} is not allowed: seconds from 0 to 86400",
                    cap.idle_after_s
                ),
            ));
        }
        if !(1..=1000).contains(&cap.bad_frames) {
            out.push(invalid(
                "capture.bad_frames",
                format!(
                    "{} is not allowed: undecodable frames in a row, 1 to 1000",
                    cap.bad_frames
                ),
            ));
        }
        if cap.noise > 64 {
            out.push(invalid(
                "capture.noise",
                format!("{} is not allowed: 0 (none) to 64 levels", cap.noise),
            ));
        }
        if matches!(cap.source, SourceKind::Images | SourceKind::Video)
            && cap.path.trim().is_empty()
        {
            out.push(invalid(
                "capture.source",
                format!(
                    "source = \"{}\" needs `path` in [capture]: {}",
                    cap.source.name(),
                    if cap.source == SourceKind::Images {
                        "a folder of pictures, a glob such as \"~/pictures/*.jpg\", or one file"
                    } else {
                        "a video file"
                    }
                ),
            ));
        }
        if cap.source == SourceKind::Stream && crate::capture::stream::scheme(&cap.url).is_none() {
            out.push(invalid(
                if cap.url.trim().is_empty() {
                    "capture.source"
                } else {
                    "capture.url"
                },
                if cap.url.trim().is_empty() {
                    "source = \"stream\" needs `url` in [capture]: e.g. \"rtsp://192.168.1.20:554/stream1\" (an IP camera) or \"http://192.168.1.5:8080/video\" (a phone's IP-camera app)".to_string()
                } else {
                    format!(
                        "{:?} is not a stream URL: it must start with rtsp://, rtsps://, http://, https://, rtmp://, udp://, tcp:// or srt:// (a video file is source = \"video\")",
                        crate::capture::stream::redact(cap.url.trim())
                    )
                },
            ));
        }
        if cap.source == SourceKind::Gstreamer && cap.pipeline.trim().is_empty() {
            out.push(invalid(
                "capture.source",
                "source = \"gstreamer\" needs `pipeline` in [capture]: the part that produces video, e.g. \"libcamerasrc\" (scenesay adds the conversion)",
            ));
        }
        let sc = &self.scene;
        check_resolution("scene.resolution", sc.resolution, &mut out);
        if !(sc.change_threshold > 0.0 && sc.change_threshold <= 2.0) {
            out.push(invalid(
                "scene.change_threshold",
                format!(
                    "{} is not allowed: a cosine distance above 0 and at most 2 (e.g. 0.1)",
                    sc.change_threshold
                ),
            ));
        }
        if sc.stable_frames == 0 || sc.stable_frames > 1000 {
            out.push(invalid(
                "scene.stable_frames",
                format!("{} is not allowed: use 1 to 1000", sc.stable_frames),
            ));
        }
        if !(sc.cooldown_s >= 0.0 && sc.cooldown_s <= 86_400.0) {
            out.push(invalid(
                "scene.cooldown_s",
                format!("{} is not allowed: seconds from 0 to 86400", sc.cooldown_s),
            ));
        }
        if sc.max_per_minute == 0 || sc.max_per_minute > 600 {
            out.push(invalid(
                "scene.max_per_minute",
                format!("{} is not allowed: use 1 to 600", sc.max_per_minute),
            ));
        }
        if !(sc.settle_s > 0.0 && sc.settle_s <= 86_400.0) {
            out.push(invalid(
                "scene.settle_s",
                format!(
                    "{} is not allowed: seconds above 0, at most 86400",
                    sc.settle_s
                ),
            ));
        }
        if !(0.0..=1.0).contains(&sc.repeat_similarity) {
            out.push(invalid(
                "scene.repeat_similarity",
                format!(
                    "{} is not allowed: 0 (off) to 1 (only the very same words); 0.7 is usual",
                    sc.repeat_similarity
                ),
            ));
        }
        if !(sc.gate_cell_change > 0.0 && sc.gate_cell_change <= 255.0) {
            out.push(invalid(
                "scene.gate_cell_change",
                format!(
                    "{} is not allowed: levels above 0, at most 255 (e.g. 12)",
                    sc.gate_cell_change
                ),
            ));
        }
        if !(sc.gate_area > 0.0 && sc.gate_area <= 1.0) {
            out.push(invalid(
                "scene.gate_area",
                format!(
                    "{} is not allowed: a fraction of the view above 0, at most 1 (e.g. 0.005)",
                    sc.gate_area
                ),
            ));
        }
        if !(sc.max_unseen_s > 0.0 && sc.max_unseen_s <= 3600.0) {
            out.push(invalid(
                "scene.max_unseen_s",
                format!(
                    "{} is not allowed: seconds above 0, at most 3600 (e.g. 10)",
                    sc.max_unseen_s
                ),
            ));
        }
        let d = &self.describe;
        for (key, prompt) in [
            ("describe.scene_prompt", &d.scene_prompt),
            ("describe.brief_prompt", &d.brief_prompt),
            ("describe.detail_prompt", &d.detail_prompt),
            ("describe.changed_prompt", &d.changed_prompt),
            ("describe.read_prompt", &d.read_prompt),
        ] {
            if prompt.trim().is_empty() {
                out.push(invalid(key, "the prompt is empty"));
            }
        }
        if !d.changed_prompt.trim().is_empty() && !d.changed_prompt.contains(PREVIOUS) {
            out.push(invalid(
                "describe.changed_prompt",
                format!("the prompt must contain {PREVIOUS}, where the last description said goes"),
            ));
        }
        check_tokens("describe.scene_max_tokens", d.scene_max_tokens, &mut out);
        check_tokens("describe.brief_max_tokens", d.brief_max_tokens, &mut out);
        check_tokens("describe.detail_max_tokens", d.detail_max_tokens, &mut out);
        check_resolution("describe.detail_resolution", d.detail_resolution, &mut out);
        check_resolution("describe.read_resolution", d.read_resolution, &mut out);
        if !(d.followup_s >= 0.0 && d.followup_s <= 86_400.0) {
            out.push(invalid(
                "describe.followup_s",
                format!(
                    "{} is not allowed: seconds from 0 (every question afresh) to 86400, e.g. 60",
                    d.followup_s
                ),
            ));
        }
        if !(sc.period_s >= 1.0 && sc.period_s <= 86_400.0) {
            out.push(invalid(
                "scene.period_s",
                format!(
                    "{} is not allowed: seconds from 1 to 86400 between two descriptions, e.g. 30",
                    sc.period_s
                ),
            ));
        }
        if !(d.repetition_penalty > 0.0 && d.repetition_penalty <= 10.0) {
            out.push(invalid(
                "describe.repetition_penalty",
                format!(
                    "{} is not allowed: above 0 and at most 10 (1.0 = off, 1.1 = mild)",
                    d.repetition_penalty
                ),
            ));
        }
        let s = &self.speech;
        if !(-100..=100).contains(&s.rate) {
            out.push(invalid(
                "speech.rate",
                format!(
                    "{} is not allowed: -100 (slowest) to 100 (fastest), 0 = normal",
                    s.rate
                ),
            ));
        }
        if !(-100..=100).contains(&s.volume) {
            out.push(invalid(
                "speech.volume",
                format!(
                    "{} is not allowed: -100 (quietest) to 100 (loudest), 0 = the backend's own",
                    s.volume
                ),
            ));
        }
        if !(s.stale_s > 0.0 && s.stale_s <= 3600.0) {
            out.push(invalid(
                "speech.stale_s",
                format!(
                    "{} is not allowed: seconds above 0, at most 3600",
                    s.stale_s
                ),
            ));
        }
        if s.voice.starts_with('-') || s.language.starts_with('-') {
            let key = if s.voice.starts_with('-') {
                "speech.voice"
            } else {
                "speech.language"
            };
            out.push(invalid(key, "must not start with '-'"));
        }
        let h = &self.hotkey;
        for (key, value) in [
            ("hotkey.key", &h.key),
            ("hotkey.repeat_key", &h.repeat_key),
            ("hotkey.pause_key", &h.pause_key),
            ("hotkey.changed_key", &h.changed_key),
            ("hotkey.read_key", &h.read_key),
            ("hotkey.hush_key", &h.hush_key),
            ("hotkey.watches_key", &h.watches_key),
            ("hotkey.recall_key", &h.recall_key),
            ("hotkey.new_key", &h.new_key),
            ("hotkey.mode_key", &h.mode_key),
        ] {
            if !value.trim().is_empty() {
                if let Err(e) = crate::control::hotkey::Combo::parse(value) {
                    out.push(invalid(key, e.to_string()));
                }
            }
        }
        let l = &self.log;
        if !(0.0..=100_000.0).contains(&l.max_mb) {
            out.push(invalid(
                "log.max_mb",
                format!(
                    "{} is not allowed: megabytes from 0 (no cap) to 100000, e.g. 10",
                    l.max_mb
                ),
            ));
        } else if l.max_mb > 0.0 && l.max_mb * 1024.0 * 1024.0 < 1024.0 {
            out.push(invalid(
                "log.max_mb",
                format!(
                    "{} is too small: at least 0.001 (1 KiB), or 0 for no cap",
                    l.max_mb
                ),
            ));
        }
        if l.keep > 100 {
            out.push(invalid(
                "log.keep",
                format!("{} is not allowed: keep 0 to 100 rotated files", l.keep),
            ));
        }
        if !(0.0..=36_500.0).contains(&l.keep_days) {
            out.push(invalid(
                "log.keep_days",
                format!(
                    "{} is not allowed: days from 0 (keep forever) to 36500, e.g. 30",
                    l.keep_days
                ),
            ));
        }
        let w = &self.watch;
        if !(w.interval_s >= 0.5 && w.interval_s <= 86_400.0) {
            out.push(invalid(
                "watch.interval_s",
                format!(
                    "{} is not allowed: seconds from 0.5 to 86400, e.g. 5",
                    w.interval_s
                ),
            ));
        }
        if !w.question.contains(crate::policy::watch::CONDITION) {
            out.push(invalid(
                "watch.question",
                "must contain {condition} (where the watched condition goes)",
            ));
        }
        check_resolution("watch.resolution", w.resolution, &mut out);
        if !(0.0..=1.0).contains(&w.on) || w.on <= 0.5 {
            out.push(invalid(
                "watch.on",
                format!(
                    "{} is not allowed: use a score above 0.5 and at most 1, e.g. 0.7",
                    w.on
                ),
            ));
        } else if !(0.0..=1.0).contains(&w.off) || w.off >= w.on {
            out.push(invalid(
                "watch.off",
                format!(
                    "{} is not allowed: use a score from 0 to below `on` ({}), e.g. 0.3",
                    w.off, w.on
                ),
            ));
        }
        if !(1..=100).contains(&w.confirm) {
            out.push(invalid(
                "watch.confirm",
                format!("{} is not allowed: use 1 to 100 checks", w.confirm),
            ));
        }
        let m = &self.memory;
        if !(0.0..=100_000.0).contains(&m.max_mb) {
            out.push(invalid(
                "memory.max_mb",
                format!(
                    "{} is not allowed: megabytes from 0 (no cap) to 100000, e.g. 20",
                    m.max_mb
                ),
            ));
        } else if m.max_mb > 0.0 && m.max_mb * 1024.0 * 1024.0 < 64.0 * 1024.0 {
            out.push(invalid(
                "memory.max_mb",
                format!(
                    "{} is too small: at least 0.0625 (64 KiB, a few views), or 0 for no cap",
                    m.max_mb
                ),
            ));
        }
        if !(0.0..=36_500.0).contains(&m.keep_days) {
            out.push(invalid(
                "memory.keep_days",
                format!(
                    "{} is not allowed: days from 0 (keep until the cap) to 36500, e.g. 30",
                    m.keep_days
                ),
            ));
        }
        let g = &self.guards;
        for (key, v, max) in [
            ("guards.dark_mean", g.dark_mean, 255.0),
            ("guards.covered_std", g.covered_std, 255.0),
            ("guards.covered_max_mean", g.covered_max_mean, 255.0),
            ("guards.overexposed_fraction", g.overexposed_fraction, 1.0),
            ("guards.blur_sharpness", g.blur_sharpness, 100_000.0),
        ] {
            if !(0.0..=max).contains(&v) {
                out.push(invalid(
                    key,
                    format!("{v} is not allowed: use 0 to {max} (0 turns this check off)"),
                ));
            }
        }
        if g.hold_frames == 0 || g.hold_frames > 1000 {
            out.push(invalid(
                "guards.hold_frames",
                format!("{} is not allowed: use 1 to 1000", g.hold_frames),
            ));
        }
        let bus = self.session.bus.trim();
        if !bus.is_empty() {
            if let Err(e) = bus.parse::<zbus::Address>() {
                out.push(invalid(
                    "session.bus",
                    format!(
                        "`{bus}` is not a D-Bus address ({e}): leave it empty for the system bus, or write one such as \"unix:path=/run/dbus/system_bus_socket\""
                    ),
                ));
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(out)
        }
    }

    /// Expands `~/` and makes relative paths relative to `base` (the configuration's folder).
    pub fn resolve_paths(&mut self, base: Option<&Path>) {
        for p in [
            &mut self.model.path,
            &mut self.capture.path,
            &mut self.control.socket,
            &mut self.log.path,
            &mut self.hotkey.device,
            &mut self.memory.path,
        ] {
            *p = resolve_path(p, base);
        }
        if let CameraDevice::Path(p) = &mut self.capture.device {
            *p = resolve_path(p, base);
        }
    }

    /// The configured model directory (`[model] path`), if any. Commands resolve the model with
    /// [`crate::model_store::resolve_model`]: `--model` / `$SCENESAY_MODEL` first, then this, then
    /// apple/FastVLM-0.5B from the Hugging Face cache.
    pub fn model_dir(&self) -> Option<PathBuf> {
        (!self.model.path.is_empty()).then(|| PathBuf::from(&self.model.path))
    }

    /// The control socket path: `[control] socket`, else `$XDG_RUNTIME_DIR/scenesay.sock`, else a
    /// private folder under /tmp.
    pub fn socket_path(&self) -> PathBuf {
        if !self.control.socket.is_empty() {
            return PathBuf::from(&self.control.socket);
        }
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d).join("scenesay.sock"),
            None => private_tmp_dir().join("scenesay.sock"),
        }
    }

    /// The narration log path, or `None` when the log is off.
    pub fn log_path(&self) -> Option<PathBuf> {
        if !self.log.enabled {
            return None;
        }
        if !self.log.path.is_empty() {
            return Some(PathBuf::from(&self.log.path));
        }
        Some(match xdg_dir("XDG_STATE_HOME", ".local/state") {
            Some(d) => d.join("scenesay/narration.jsonl"),
            None => private_tmp_dir().join("narration.jsonl"),
        })
    }
}

impl Config {
    /// The memory file, or `None` when the memory is off: `[memory] path`, else `memory.jsonl`
    /// beside the narration log (in its folder), else in the state folder.
    pub fn memory_path(&self) -> Option<PathBuf> {
        if !self.memory.enabled {
            return None;
        }
        if !self.memory.path.is_empty() {
            return Some(PathBuf::from(&self.memory.path));
        }
        // beside a log file, not beside a device such as /dev/full
        let log = self
            .log_path()
            .filter(|p| !std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_file()));
        if let Some(dir) = log.as_deref().and_then(Path::parent) {
            if !dir.as_os_str().is_empty() {
                return Some(dir.join("memory.jsonl"));
            }
        }
        Some(match xdg_dir("XDG_STATE_HOME", ".local/state") {
            Some(d) => d.join("scenesay/memory.jsonl"),
            None => private_tmp_dir().join("memory.jsonl"),
        })
    }
}

/// `/tmp/scenesay-UID`: used when neither `XDG_RUNTIME_DIR` nor `HOME` is set.
pub fn private_tmp_dir() -> PathBuf {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("scenesay-{uid}"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// An XDG base directory: `$VAR`, else `$HOME/fallback`.
fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home().map(|h| h.join(fallback)))
}

fn resolve_path(p: &str, base: Option<&Path>) -> String {
    if p.is_empty() {
        return String::new();
    }
    let expanded = if p == "~" {
        home()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home().map(|h| h.join(rest))
    } else {
        None
    };
    let path = expanded.unwrap_or_else(|| PathBuf::from(p));
    let path = match base {
        Some(b) if path.is_relative() => b.join(path),
        _ => path,
    };
    path.to_string_lossy().into_owned()
}

/// The TOML parser's message, or — where it has none (a control character, even in a comment) —
/// what is wrong at that place.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let m = e.message().trim();
    if !m.is_empty() {
        return m.to_string();
    }
    let at = e
        .span()
        .and_then(|r| text.get(floor_char_boundary(text, r.start)..))
        .and_then(|rest| rest.chars().next());
    match at {
        Some(c) if c.is_control() => format!(
            "control character U+{:04X} is not allowed in a TOML file (not even in a comment): delete it",
            c as u32
        ),
        Some(c) => format!("unexpected character {c:?}"),
        None => "the file ends too early".to_string(),
    }
}

/// The byte span of the value of a dotted key (`scene.stable_frames`) in a TOML text, falling back
/// to the key, then to its table.
pub fn key_span(text: &str, dotted: &str) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut parts = dotted.split('.').peekable();
    let mut best = None;
    while let Some(part) = parts.next() {
        let (key, item) = table.get_key_value(part)?;
        let span = item.span().or_else(|| key.span());
        if span.is_some() {
            best = span;
        }
        if parts.peek().is_none() {
            return best;
        }
        table = item.as_table_like()?;
    }
    best
}

/// Turns a byte span into a 1-based line and column (columns count characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn locate(text: &str, span: Option<Range<usize>>, message: &str) -> Problem {
    match span {
        Some(r) => {
            let (line, column) = line_col(text, r.start);
            Problem {
                line,
                column,
                message: message.to_string(),
                source_line: text.lines().nth(line - 1).map(|l| l.to_string()),
            }
        }
        None => Problem {
            line: 0,
            column: 0,
            message: message.to_string(),
            source_line: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_chooses_the_prompts_and_the_users_own_win() {
        let en = crate::policy::phrasing::prompts("en").unwrap();
        let d = DescribeConfig::default();
        assert_eq!(
            (
                d.scene_prompt.as_str(),
                d.brief_prompt.as_str(),
                d.detail_prompt.as_str()
            ),
            (en.scene, en.brief, en.detail)
        );
        assert_eq!(
            (d.changed_prompt.as_str(), d.read_prompt.as_str()),
            (en.changed, en.read)
        );
        let zh = crate::policy::phrasing::prompts("zh").unwrap();
        let c = Config::from_toml(
            "[speech]\nlanguage = \"zh\"\n[describe]\ndetail_prompt = \"My own prompt.\"\n",
            Path::new("/etc/scenesay/config.toml"),
        )
        .unwrap();
        assert_eq!(c.describe.scene_prompt, zh.scene);
        assert_eq!(c.describe.read_prompt, zh.read);
        assert_eq!(c.describe.detail_prompt, "My own prompt.");
        assert_eq!(c.acknowledgement().as_deref(), Some("正在看。"));
        // the shipped file writes every English default out: those still become Chinese
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .unwrap()
            .replace("language = \"\"", "language = \"zh\"");
        let c = Config::from_toml(&shipped, Path::new("/etc/scenesay/config.toml")).unwrap();
        assert_eq!(c.describe.brief_prompt, zh.brief);
        // a language without a prompt set keeps the English prompts
        let c = Config::from_toml(
            "[speech]\nlanguage = \"it\"\n",
            Path::new("/etc/scenesay/config.toml"),
        )
        .unwrap();
        assert_eq!(c.describe.scene_prompt, en.scene);
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/scenesay/config.toml"))
    }

    #[test]
    fn clock_positions_change_the_built_in_prompts_in_every_language() {
        use crate::policy::phrasing::{clock_prompts, prompts, LANGUAGES};
        for lang in LANGUAGES {
            let sides = parse(&format!("[speech]\nlanguage = \"{lang}\"\n")).unwrap();
            let clock = parse(&format!(
                "[speech]\nlanguage = \"{lang}\"\n[describe]\npositions = \"clock\"\n"
            ))
            .unwrap();
            let (p, c) = (prompts(lang).unwrap(), clock_prompts(lang).unwrap());
            let (a, b) = (&sides.describe, &clock.describe);
            assert_eq!(a.scene_prompt, p.scene, "{lang}");
            assert_eq!(b.scene_prompt, c.scene, "{lang}");
            assert_eq!(b.brief_prompt, c.brief, "{lang}");
            assert_eq!(b.detail_prompt, c.detail, "{lang}");
            assert_eq!(b.changed_prompt, c.changed, "{lang}");
            assert_ne!(a.detail_prompt, b.detail_prompt, "{lang}");
            // reading text has no positions to ask for
            assert_eq!(a.read_prompt, b.read_prompt, "{lang}");
        }
        // the shipped file (every English default written out) changes too; prompts of the
        // user's own stay; a language without built-in prompts gets the English clock prompts
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .unwrap()
            .replace("positions = \"sides\"", "positions = \"clock\"")
            .replace("language = \"\"", "language = \"it\"");
        let c = parse(&shipped).unwrap();
        assert_eq!(c.describe.positions, Positions::Clock);
        assert_eq!(c.describe.scene_prompt, clock_prompts("en").unwrap().scene);
        let own = parse("[describe]\npositions = \"clock\"\nscene_prompt = \"Mine.\"\n").unwrap();
        assert_eq!(own.describe.scene_prompt, "Mine.");
        assert_eq!(
            own.describe.brief_prompt,
            clock_prompts("en").unwrap().brief
        );
    }

    #[test]
    fn followup_period_and_mode_keys_are_checked_and_located() {
        let c = parse("[scene]\nmode = \"periodic\"\nperiod_s = 5\n[describe]\nfollowup_s = 0\n")
            .unwrap();
        assert_eq!(c.scene.mode, SceneMode::Periodic);
        assert_eq!(c.scene.period_s, 5.0);
        assert_eq!(c.describe.followup_s, 0.0);
        let d = Config::default();
        assert_eq!(
            (d.scene.mode, d.scene.period_s, d.describe.followup_s),
            (SceneMode::Change, 30.0, 60.0)
        );
        let e = parse("[scene]\nperiod_s = 0.5\n[describe]\nfollowup_s = -1\n[hotkey]\nnew_key = \"KEY_NOPE\"\n")
            .unwrap_err();
        let p = e.problems();
        assert_eq!(p.len(), 3, "{e}");
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert!(
            lines.contains(&2) && lines.contains(&4) && lines.contains(&6),
            "{e}"
        );
        assert!(e.to_string().contains("`scene.period_s`"), "{e}");
        assert!(e.to_string().contains("`describe.followup_s`"), "{e}");
        assert!(e.to_string().contains("`hotkey.new_key`"), "{e}");
        let m = only_problem("[scene]\nmode = \"sometimes\"\n");
        assert!(m.message.contains("periodic"), "{}", m.message);
    }

    fn only_problem(text: &str) -> Problem {
        let e = parse(text).unwrap_err();
        let p = e.problems();
        assert_eq!(p.len(), 1, "{e}");
        p[0].clone()
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("").unwrap();
        let mut d = Config::default();
        d.resolve_paths(Some(Path::new("/etc/scenesay")));
        assert_eq!(c, d);
        assert_eq!(c.scene.resolution, 256);
        assert_eq!(c.describe.detail_resolution, 1024);
        assert_eq!(c.speech.backend, SpeechBackend::SpeechDispatcher);
        assert_eq!(c.hotkey.key, "KEY_F12");
    }

    #[test]
    fn unknown_key_is_located_and_lists_the_allowed_keys() {
        let p = only_problem("[scene]\nresolution = 256\nthreshold = 0.2\n");
        assert_eq!((p.line, p.column), (3, 1));
        assert!(
            p.message.contains("unknown field `threshold`"),
            "{}",
            p.message
        );
        assert!(p.message.contains("change_threshold"), "{}", p.message);
    }

    #[test]
    fn unknown_section_is_located() {
        let p = only_problem("[model]\npath = \"x\"\n\n[cammera]\nfps = 1\n");
        assert_eq!(p.line, 4, "{p:?}");
        assert!(
            p.message.contains("unknown field `cammera`"),
            "{}",
            p.message
        );
    }

    #[test]
    fn bad_enum_value_names_the_choices() {
        let p = only_problem("[speech]\nbackend = \"festival\"\n");
        assert_eq!((p.line, p.column), (2, 11));
        for b in ["speech-dispatcher", "espeak-ng", "log"] {
            assert!(p.message.contains(b), "{}", p.message);
        }
    }

    #[test]
    fn wrong_type_is_located() {
        let p = only_problem("[capture]\nfps = \"fast\"\n");
        assert_eq!((p.line, p.column), (2, 7));
        assert!(p.message.contains("invalid type"), "{}", p.message);
    }

    #[test]
    fn out_of_range_values_are_located_at_the_value() {
        let e = parse("[scene]\nresolution = 300\nstable_frames = 0\n\n[speech]\nrate = 500\n")
            .unwrap_err();
        let p = e.problems();
        assert_eq!(p.len(), 3, "{e}");
        assert_eq!((p[0].line, p[0].column), (2, 14));
        assert!(p[0].message.contains("multiple of 64"), "{}", p[0].message);
        assert_eq!((p[1].line, p[1].column), (3, 17));
        assert_eq!((p[2].line, p[2].column), (6, 8));
        assert!(p[2].message.contains("-100"), "{}", p[2].message);
        let shown = e.to_string();
        assert!(
            shown.starts_with("/etc/scenesay/config.toml:2:14: `scene.resolution`"),
            "{shown}"
        );
        assert!(
            shown.contains("    resolution = 300\n                 ^"),
            "{shown}"
        );
    }

    #[test]
    fn missing_path_for_images_points_at_the_source() {
        let p = only_problem("[capture]\nsource = \"images\"\n");
        assert_eq!((p.line, p.column), (2, 10));
        assert!(p.message.contains("needs `path`"), "{}", p.message);
    }

    #[test]
    fn network_and_pipeline_cameras_need_their_keys() {
        let p = only_problem("[capture]\nsource = \"stream\"\n");
        assert_eq!((p.line, p.column), (2, 10));
        assert!(p.message.contains("needs `url`"), "{}", p.message);
        let p = only_problem("[capture]\nsource = \"stream\"\nurl = \"ftp://me:pw@cam/x\"\n");
        assert_eq!(p.line, 3);
        assert!(p.message.contains("not a stream URL"), "{}", p.message);
        assert!(!p.message.contains("pw@"), "{}", p.message);
        let p = only_problem("[capture]\nsource = \"gstreamer\"\n");
        assert!(p.message.contains("needs `pipeline`"), "{}", p.message);
        let c = parse("[capture]\nsource = \"stream\"\nurl = \"rtsp://192.168.1.20/stream1\"\n")
            .unwrap();
        assert_eq!(c.capture.source, SourceKind::Stream);
        // the default PipeWire camera needs nothing more
        let c = parse("[capture]\nsource = \"pipewire\"\n").unwrap();
        assert_eq!(c.capture.source.name(), "pipewire");
    }

    #[test]
    fn bad_hotkey_is_located() {
        let p = only_problem("[hotkey]\nkey = \"KEY_LEFTMETA+KEY_DD\"\n");
        assert_eq!(p.line, 2);
        assert!(p.message.contains("KEY_DD"), "{}", p.message);
    }

    #[test]
    fn inline_tables_and_dotted_keys_are_located_too() {
        let p = only_problem("scene = { resolution = 100 }\n");
        assert_eq!((p.line, p.column), (1, 24));
        let p = only_problem("scene.cooldown_s = -1\n");
        assert_eq!((p.line, p.column), (1, 20));
    }

    #[test]
    fn camera_device_is_an_index_or_a_path() {
        let c = parse("[capture]\ndevice = 2\n").unwrap();
        assert_eq!(c.capture.device, CameraDevice::Index(2));
        let c = parse("[capture]\ndevice = \"/dev/video3\"\n").unwrap();
        assert_eq!(c.capture.device, CameraDevice::Path("/dev/video3".into()));
        let c = parse("[capture]\ndevice = \"1\"\n").unwrap();
        assert_eq!(c.capture.device, CameraDevice::Index(1));
        let p = only_problem("[capture]\ndevice = -1\n");
        assert_eq!(p.line, 2);
        assert!(p.message.contains("out of range"), "{}", p.message);
        let p = only_problem("[capture]\ndevice = 1.5\n");
        assert!(p.message.contains("camera index"), "{}", p.message);
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = Config::from_toml(
            "[model]\npath = \"demo-model\"\n[capture]\nsource = \"images\"\npath = \"/abs/frames\"\n",
            Path::new("/nonexistent/dir/demo.toml"),
        )
        .unwrap();
        assert_eq!(c.model.path, "/nonexistent/dir/demo-model");
        assert_eq!(c.capture.path, "/abs/frames");
        assert_eq!(
            c.model_dir(),
            Some(PathBuf::from("/nonexistent/dir/demo-model"))
        );
    }

    #[test]
    fn a_control_character_is_named() {
        let p = only_problem("[scene]\n# a comment with a \u{b} in it\n");
        assert_eq!((p.line, p.column), (2, 20));
        assert!(
            p.message.contains("control character U+000B"),
            "{}",
            p.message
        );
    }

    #[test]
    fn narration_policy_keys_are_checked_and_located() {
        let e = parse(
            "[scene]\nmax_per_minute = 0\nrepeat_similarity = 1.5\n\n[describe]\nchanged_prompt = \"What changed?\"\n\n[guards]\ndark_mean = 300\nhold_frames = 0\n",
        )
        .unwrap_err();
        let p = e.problems();
        assert_eq!(p.len(), 5, "{e}");
        let at: Vec<(usize, &str)> = p
            .iter()
            .map(|p| (p.line, p.message.split('`').nth(1).unwrap()))
            .collect();
        assert_eq!(
            at,
            [
                (2, "scene.max_per_minute"),
                (3, "scene.repeat_similarity"),
                (6, "describe.changed_prompt"),
                (9, "guards.dark_mean"),
                (10, "guards.hold_frames"),
            ]
        );
        assert!(p[2].message.contains("{previous}"), "{}", p[2].message);
        let p = only_problem("[guards]\ndark = 10\n");
        assert_eq!((p.line, p.column), (2, 1));
        assert!(p.message.contains("dark_mean"), "{}", p.message);
        let p = only_problem("[hotkey]\nread_key = \"KEY_NOPE\"\n");
        assert!(p.message.contains("KEY_NOPE"), "{}", p.message);
        let c = parse(
            "[scene]\nsettle_detail = true\nrepeat_similarity = 0\n[guards]\nenabled = false\n",
        )
        .unwrap();
        assert!(c.scene.settle_detail && !c.guards.enabled);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 0), (1, 1));
    }

    #[test]
    fn explicit_missing_file_is_a_read_error() {
        let e = Config::load(Some(Path::new("/nonexistent/scenesay.toml"))).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/scenesay.toml"));
    }

    #[test]
    fn a_bad_session_bus_address_is_located_and_explained() {
        let p = only_problem("[session]\nbus = \"the system bus\"\n");
        assert_eq!(p.line, 2, "{}", p.message);
        assert!(p.message.contains("session.bus"), "{}", p.message);
        assert!(p.message.contains("not a D-Bus address"), "{}", p.message);
        assert!(p.message.contains("leave it empty"), "{}", p.message);
        let c = parse("[session]\nbus = \"unix:path=/run/dbus/system_bus_socket\"\n").unwrap();
        assert!(c.session.follow_logind);
        let c = parse("[session]\nfollow_logind = false\n").unwrap();
        assert!(!c.session.follow_logind);
        assert_eq!(c.session.bus, "");
    }
}
