//! Follow-up questions and periodic narration through the daemon (run in-process), driven over
//! the control socket: which questions go on with the conversation and which start afresh, `ctl
//! new`, and a static view described every period. The model is recorded: a scripted one whose
//! answers come at once (so timing is the daemon's), and the tiny FastVLM itself.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use scenesay::config::Config;
use scenesay::daemon::{self, Shutdown, Stopped};
use scenesay::describer::{DescribeRequest, Describer, Description};
use serde_json::Value;
use support::*;

type Calls = Arc<Mutex<Vec<String>>>;

/// Records what the daemon asks of `inner`: `describe:PROMPT` (a fresh description or question)
/// and `follow_up:QUESTION` (went on with the conversation) or `follow_up-none:QUESTION` (the
/// model had none).
struct Recording<D> {
    inner: D,
    calls: Calls,
}

impl<D: Describer> Describer for Recording<D> {
    fn embed(&mut self, image: &RgbImage, resolution: u32) -> anyhow::Result<Vec<f32>> {
        self.inner.embed(image, resolution)
    }

    fn describe(
        &mut self,
        image: &RgbImage,
        request: &DescribeRequest,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Description> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("describe:{}", request.prompt));
        self.inner.describe(image, request, on_text, cancel)
    }

    fn follow_up(
        &mut self,
        question: &str,
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Option<Description>> {
        let r = self
            .inner
            .follow_up(question, max_tokens, on_text, cancel)?;
        let what = if r.is_some() {
            "follow_up"
        } else {
            "follow_up-none"
        };
        self.calls
            .lock()
            .unwrap()
            .push(format!("{what}:{question}"));
        Ok(r)
    }

    fn end_conversation(&mut self) {
        self.inner.end_conversation()
    }

    fn conversation_room(&self) -> Option<(usize, usize)> {
        self.inner.conversation_room()
    }
}

/// A scripted model with conversations: the embedding is the mean colour; every description
/// begins a conversation, a follow-up goes on with it.
#[derive(Default)]
struct Scripted {
    turns: Option<usize>,
}

impl Describer for Scripted {
    fn embed(&mut self, image: &RgbImage, _resolution: u32) -> anyhow::Result<Vec<f32>> {
        let n = (image.width() * image.height()) as f32;
        let mut v = [0f32; 3];
        for p in image.pixels() {
            for c in 0..3 {
                v[c] += p[c] as f32 / n;
            }
        }
        Ok(vec![v[0] + 1.0, v[1] + 1.0, v[2] + 1.0])
    }

    fn describe(
        &mut self,
        _image: &RgbImage,
        request: &DescribeRequest,
        on_text: &mut dyn FnMut(&str),
        _cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Description> {
        self.turns = Some(1);
        let text = format!("Seen: {}", request.prompt);
        on_text(&text);
        Ok(Description {
            text,
            ..Default::default()
        })
    }

    fn follow_up(
        &mut self,
        question: &str,
        _max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
        _cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Option<Description>> {
        let Some(t) = self.turns.as_mut() else {
            return Ok(None);
        };
        *t += 1;
        let text = format!("Turn {t}: {question}");
        on_text(&text);
        Ok(Some(Description {
            text,
            ..Default::default()
        }))
    }

    fn end_conversation(&mut self) {
        self.turns = None;
    }

    fn conversation_room(&self) -> Option<(usize, usize)> {
        self.turns.map(|t| (t * 100, 100_000))
    }
}

struct InProcess {
    dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
    handle: JoinHandle<anyhow::Result<Stopped>>,
    calls: Calls,
    _shutdown: Shutdown,
}

/// A checkerboard in `colour` (a flat colour would be "covered" to the view guards).
fn board(colour: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(32, 32, |x, y| {
        let k = if (x / 4 + y / 4) % 2 == 0 { 1.0 } else { 0.6 };
        image::Rgb(colour.map(|c| (c as f32 * k) as u8))
    })
}

/// Pictures in `dir/frames`, in name order.
fn pictures(dir: &Path, views: &[[u8; 3]]) -> std::path::PathBuf {
    let d = dir.join("frames");
    std::fs::create_dir_all(&d).unwrap();
    for (i, c) in views.iter().enumerate() {
        board(*c).save(d.join(format!("{i}.png"))).unwrap();
    }
    d
}

fn start<D: Describer + 'static>(
    model: impl FnOnce() -> D + Send + 'static,
    capture: impl FnOnce(&Path) -> String,
    extra: &str,
) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &capture(dir.path()), extra);
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text, &path).unwrap();
    let calls: Calls = Arc::new(Mutex::new(vec![]));
    let shutdown = Shutdown::new();
    let (c, s) = (calls.clone(), shutdown.clone());
    let handle = std::thread::spawn(move || {
        daemon::run(
            &config,
            move || {
                Ok(Box::new(Recording {
                    inner: model(),
                    calls: c,
                }) as Box<dyn Describer>)
            },
            s,
        )
    });
    let socket = dir.path().join("scenesay.sock");
    wait_for(Duration::from_secs(60), "the control socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    InProcess {
        log: dir.path().join("narration.jsonl"),
        socket,
        dir,
        handle,
        calls,
        _shutdown: shutdown,
    }
}

impl InProcess {
    fn req(&self, line: &str) -> Value {
        request(&self.socket, line)
    }

    fn ask(&self, q: &str) -> String {
        let r = self.req(&serde_json::json!({"cmd": "ask", "question": q}).to_string());
        assert_eq!(r["reply"], "narration", "{r}");
        r["text"].as_str().unwrap().to_string()
    }

    fn records(&self) -> Vec<Value> {
        records(&self.log)
    }

    fn scenes(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == "scene" && r["status"] == "spoken")
            .collect()
    }

    /// Scene narrations logged, whatever became of them.
    fn all_scenes(&self) -> usize {
        self.records()
            .iter()
            .filter(|r| r["kind"] == "scene")
            .count()
    }

    /// The calls since the `n`-th, without scene narrations.
    fn calls_after(&self, n: usize, scene_prompt: &str) -> Vec<String> {
        self.calls.lock().unwrap()[n..]
            .iter()
            .filter(|c| !c.ends_with(scene_prompt))
            .cloned()
            .collect()
    }

    fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn stop(self) -> Vec<Value> {
        let r = self.req(r#"{"cmd":"stop"}"#);
        assert_eq!(r["message"], "stopping", "{r}");
        assert_eq!(self.handle.join().unwrap().unwrap(), Stopped::Requested);
        let _ = &self.dir;
        records(&self.log)
    }
}

fn static_red(dir: &Path) -> String {
    format!(
        "source = \"images\"\npath = \"{}\"\nfps = 10",
        pictures(dir, &[[200, 30, 30]]).display()
    )
}

const SCENE: &str = "Say what is there.";

fn scene_config(more: &str) -> String {
    format!(
        "[scene]\nstable_frames = 1\ncooldown_s = 0\n{more}\n\n[describe]\nscene_prompt = \"{SCENE}\"\nbrief_prompt = \"{SCENE}\"\ndetail_prompt = \"Tell me everything.\"\nread_prompt = \"Read it.\"\ndetail_resolution = 256\nread_resolution = 256\n"
    )
}

#[test]
fn questions_follow_each_other_up_until_new_describe_or_another_request() {
    let d = start(Scripted::default, static_red, &scene_config(""));
    wait_for(Duration::from_secs(30), "the first scene", || {
        !d.scenes().is_empty()
    });
    let n = d.call_count();
    assert_eq!(d.ask("What is it?"), "Seen: What is it?");
    assert_eq!(d.ask("Is it big?"), "Turn 2: Is it big?");
    assert_eq!(d.ask("And its colour?"), "Turn 3: And its colour?");
    let r = d.req(r#"{"cmd":"new"}"#);
    assert_eq!(r["message"], "new conversation", "{r}");
    assert_eq!(d.ask("What is it?"), "Seen: What is it?");
    let r = d.req(r#"{"cmd":"describe"}"#);
    assert_eq!(r["text"], "Seen: Tell me everything.", "{r}");
    // a detailed description begins the conversation the next question goes on with
    assert_eq!(
        d.ask("What is on the left?"),
        "Turn 2: What is on the left?"
    );
    let r = d.req(r#"{"cmd":"read"}"#);
    assert_eq!(r["text"], "Seen: Read it.", "{r}");
    assert_eq!(d.ask("And the last line?"), "Turn 2: And the last line?");
    // the same view: "changed" answers without the model, and the conversation goes on
    let r = d.req(r#"{"cmd":"changed"}"#);
    assert_eq!(r["text"], "Nothing has changed.", "{r}");
    assert_eq!(d.ask("Anything else?"), "Turn 3: Anything else?");
    let r = d.req(r#"{"cmd":"new"}"#);
    assert_eq!(r["message"], "new conversation", "{r}");
    let r = d.req(r#"{"cmd":"new"}"#);
    assert_eq!(r["message"], "new conversation (none was going on)", "{r}");
    assert_eq!(
        d.calls_after(n, SCENE),
        [
            "describe:What is it?",
            "follow_up:Is it big?",
            "follow_up:And its colour?",
            "describe:What is it?",
            "describe:Tell me everything.",
            "follow_up:What is on the left?",
            "describe:Read it.",
            "follow_up:And the last line?",
            "follow_up:Anything else?",
        ]
    );
    let records = d.stop();
    let notices: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "notice")
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert!(notices.contains(&"New conversation."), "{notices:?}");
    // every answer is logged with its question, follow-ups too
    let answers: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "answer")
        .map(|r| r["question"].as_str().unwrap())
        .collect();
    assert_eq!(answers.len(), 7, "{answers:?}");
}

#[test]
fn a_question_after_followup_s_or_with_followups_off_is_asked_afresh() {
    let d = start(
        Scripted::default,
        static_red,
        &scene_config("").replace("[describe]\n", "[describe]\nfollowup_s = 1\n"),
    );
    wait_for(Duration::from_secs(30), "the first scene", || {
        !d.scenes().is_empty()
    });
    let n = d.call_count();
    d.ask("One?");
    d.ask("Two?");
    std::thread::sleep(Duration::from_millis(1300));
    d.ask("Three?");
    assert_eq!(
        d.calls_after(n, SCENE),
        ["describe:One?", "follow_up:Two?", "describe:Three?"]
    );
    d.stop();

    let d = start(
        Scripted::default,
        static_red,
        &scene_config("").replace("[describe]\n", "[describe]\nfollowup_s = 0\n"),
    );
    wait_for(Duration::from_secs(30), "the first scene", || {
        !d.scenes().is_empty()
    });
    let n = d.call_count();
    d.ask("One?");
    d.ask("Two?");
    assert_eq!(d.calls_after(n, SCENE), ["describe:One?", "describe:Two?"]);
    d.stop();
}

#[test]
fn a_new_scene_ends_the_conversation() {
    // red for 3 s, then blue
    let d = start(
        Scripted::default,
        |dir| {
            format!(
                "source = \"images\"\npath = \"{}\"\nfps = 10\nrepeat_each = 30\nloop = false",
                pictures(dir, &[[200, 30, 30], [30, 30, 200]]).display()
            )
        },
        &scene_config(""),
    );
    wait_for(Duration::from_secs(30), "the first scene", || {
        !d.scenes().is_empty()
    });
    let n = d.call_count();
    d.ask("What is it?");
    d.ask("Is it big?");
    // (the scripted model says the same words about both: the second is logged as a repeat)
    wait_for(Duration::from_secs(30), "the second scene", || {
        d.all_scenes() >= 2
    });
    d.ask("Is it big?");
    assert_eq!(
        d.calls_after(n, SCENE),
        [
            "describe:What is it?",
            "follow_up:Is it big?",
            "describe:Is it big?"
        ]
    );
    d.stop();
}

/// The frame numbers of scene narrations.
fn scene_frames(scenes: &[Value]) -> Vec<u64> {
    scenes
        .iter()
        .map(|r| r["frame"].as_u64().unwrap())
        .collect()
}

#[test]
fn periodic_mode_describes_a_static_view_every_period_and_waits_during_a_conversation() {
    let d = start(
        Scripted::default,
        static_red,
        &scene_config("mode = \"periodic\"\nperiod_s = 1")
            .replace("[describe]\n", "[describe]\nfollowup_s = 2\n"),
    );
    let t = Instant::now();
    wait_for(Duration::from_secs(30), "three periodic scenes", || {
        d.scenes().len() >= 3
    });
    // a static view: change mode would have said it once; the same words are said again
    assert!(
        t.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        t.elapsed()
    );
    let frames = scene_frames(&d.scenes());
    for w in frames.windows(2) {
        // 10 frames a second, a period of 1 s (a frame of slack for the capture's timing)
        assert!(w[1] - w[0] >= 9, "{frames:?}");
    }
    let s = d.req(r#"{"cmd":"status"}"#);
    assert!(
        s["frames"]["gated"].as_u64().unwrap() > 5,
        "the gate kept the static view from the encoder: {s}"
    );
    // a question: no periodic description while the conversation is open (2 s)
    d.ask("What is it?");
    let before = d.scenes().len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.scenes().len(), before, "{:#?}", d.scenes());
    wait_for(Duration::from_secs(10), "periodic narration again", || {
        d.scenes().len() > before
    });
    d.stop();
}

#[test]
fn ctl_mode_switches_between_change_and_periodic_narration() {
    let d = start(Scripted::default, static_red, &scene_config("period_s = 1"));
    wait_for(Duration::from_secs(30), "the first scene", || {
        !d.scenes().is_empty()
    });
    // change mode: a static view is said once
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.all_scenes(), 1);
    let r = d.req(r#"{"cmd":"mode","mode":"periodic"}"#);
    assert_eq!(r["message"], "mode periodic, every 1 s", "{r}");
    wait_for(Duration::from_secs(10), "periodic scenes", || {
        d.all_scenes() >= 3
    });
    let r = d.req(r#"{"cmd":"mode"}"#);
    assert_eq!(r["message"], "mode change", "{r}");
    let n = d.all_scenes();
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        d.all_scenes() <= n + 1,
        "a static view again said once at most"
    );
    let records = d.stop();
    let notices: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "notice")
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert!(
        notices.contains(&"Narrating every 1 seconds."),
        "{notices:?}"
    );
    assert!(notices.contains(&"Narrating changes."), "{notices:?}");
}

#[test]
fn the_tiny_model_follows_up_and_narrates_periodically() {
    let model =
        || scenesay::model::FastVlm::load(&tiny_model(), scenesay::model::Precision::F32).unwrap();
    let d = start(
        model,
        |dir| {
            format!(
                "source = \"images\"\npath = \"{}\"\nfps = 4",
                frames(dir, &[("1.png", "landscape_640x480.png")]).display()
            )
        },
        &scene_config("mode = \"periodic\"\nperiod_s = 1").replace(
            "[describe]\n",
            "[describe]\nfollowup_s = 30\ndetail_max_tokens = 8\nscene_max_tokens = 8\n",
        ),
    );
    wait_for(Duration::from_secs(60), "two periodic scenes", || {
        d.all_scenes() >= 2
    });
    let n = d.call_count();
    d.ask("What is it?");
    d.ask("Is it big?");
    d.ask("What colour?");
    d.req(r#"{"cmd":"new"}"#);
    d.ask("What is it?");
    assert_eq!(
        d.calls_after(n, SCENE),
        [
            "describe:What is it?",
            "follow_up:Is it big?",
            "follow_up:What colour?",
            "describe:What is it?",
        ]
    );
    // once the conversation is over, periodic narration goes on
    d.req(r#"{"cmd":"new"}"#);
    let before = d.all_scenes();
    wait_for(Duration::from_secs(30), "periodic narration again", || {
        d.all_scenes() > before
    });
    d.stop();
}
