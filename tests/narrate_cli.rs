//! `scenesay narrate` through the real binary on the tiny fixture checkpoint: a video made here with
//! ffmpeg's test sources (one pattern, then another) and a folder of pictures become SRT / WebVTT
//! tracks that parse, with cues in time order inside the media, and JSON lines that agree with
//! them; the `[scene]` settings come from the configuration file; Ctrl-C leaves complete files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use scenesay::subtitles::{self, Cue};
use serde_json::Value;

/// The binary with a clean environment: no $SCENESAY_MODEL, no configuration file of the user.
fn scenesay(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scenesay"));
    c.env_remove("SCENESAY_MODEL")
        .env_remove("RUST_LOG")
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("HF_HOME", home.join("hf"));
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("the binary runs");
    (
        status.code().expect("exited normally"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs ffmpeg with `args`, writing `name` in `dir`.
fn ffmpeg(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .args(["-pix_fmt", "yuv420p"])
        .arg(&p)
        .output()
        .expect("ffmpeg is installed (apt install ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// 4 s, 160×120 at 10 fps: 2 s of colour bars, then 2 s of ffmpeg's moving test pattern.
fn two_scene_video(dir: &Path) -> PathBuf {
    ffmpeg(
        dir,
        "clip.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "smptebars=size=160x120:rate=10:duration=2",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=2",
            "-filter_complex",
            "[0:v][1:v]concat=n=2:v=1[v]",
            "-map",
            "[v]",
        ],
    )
}

fn duration_of(video: &Path) -> Duration {
    let s = scenesay::capture::video::probe(video)
        .unwrap()
        .duration_s
        .unwrap();
    Duration::from_secs_f64(s)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn secs(v: &Value) -> Duration {
    Duration::from_millis((v.as_f64().unwrap() * 1000.0).round() as u64)
}

/// Cues in time order, none empty, none overlapping the next, all inside `[0, end]`.
fn assert_well_formed(cues: &[Cue], end: Duration) {
    for (i, c) in cues.iter().enumerate() {
        assert!(c.start < c.end, "cue {i} is empty: {cues:?}");
        assert!(
            c.end <= end,
            "cue {i} ends after the media ({end:?}): {cues:?}"
        );
        if let Some(n) = cues.get(i + 1) {
            assert!(c.end <= n.start, "cue {i} overlaps the next: {cues:?}");
        }
    }
}

/// The SRT, the VTT and the JSON lines describe the same cues.
fn read_track(srt: &Path, vtt: &Path, jsonl: &Path) -> (Vec<Cue>, Vec<Value>) {
    let from_srt = subtitles::parse_srt(&std::fs::read_to_string(srt).unwrap()).unwrap();
    let from_vtt = subtitles::parse_vtt(&std::fs::read_to_string(vtt).unwrap()).unwrap();
    let lines = json_lines(&std::fs::read_to_string(jsonl).unwrap());
    let times = |c: &[Cue]| c.iter().map(|c| (c.start, c.end)).collect::<Vec<_>>();
    assert_eq!(times(&from_srt), times(&from_vtt));
    let from_json: Vec<(Duration, Duration)> = lines
        .iter()
        .map(|l| (secs(&l["start"]), secs(&l["end"])))
        .collect();
    assert_eq!(times(&from_srt), from_json);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["scene"], i + 1);
        assert!(
            l["text"].is_string() && l["tokens"].as_u64().unwrap() > 0,
            "{l}"
        );
        assert!(l["timings"]["total_ms"].as_f64().unwrap() > 0.0, "{l}");
    }
    (from_srt, lines)
}

#[test]
fn a_video_becomes_srt_vtt_and_json_lines_inside_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let video = two_scene_video(dir.path());
    let duration = duration_of(&video);
    let (srt, vtt, jsonl) = (
        dir.path().join("clip.srt"),
        dir.path().join("clip.vtt"),
        dir.path().join("clip.jsonl"),
    );
    let (code, stdout, stderr) = run(scenesay(dir.path())
        .arg("narrate")
        .arg("--model")
        .arg(model_dir("apple"))
        // the tiny random model sees the two patterns about 0.07 apart; no cooldown for a 4 s clip
        .args([
            "--change-threshold",
            "0.04",
            "--cooldown",
            "0",
            "--max-tokens",
            "4",
        ])
        .arg(&video)
        .arg("--srt")
        .arg(&srt)
        .arg("--vtt")
        .arg(&vtt)
        .arg("--jsonl")
        .arg(&jsonl));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.is_empty(),
        "the JSON lines went to the file: {stdout}"
    );
    assert!(
        stderr.contains("2 scene(s) described, 8 frames looked at"),
        "{stderr}"
    );

    let (cues, lines) = read_track(&srt, &vtt, &jsonl);
    assert_well_formed(&cues, duration);
    assert_eq!(cues.len(), 2, "one cue per pattern: {cues:?}");
    // at 2 frames a second, a scene is described on its second frame (stable_frames = 2)
    assert_eq!(cues[0].start, Duration::from_millis(500));
    assert!(
        (Duration::from_secs(2)..=Duration::from_secs(3)).contains(&cues[1].start),
        "the second pattern starts at 2 s: {cues:?}"
    );
    assert_eq!(lines[0]["change"], Value::Null);
    assert!(lines[1]["change"].as_f64().unwrap() > 0.04, "{}", lines[1]);
    assert_eq!(
        cues[1].end,
        Duration::from_millis(duration.as_millis() as u64)
            .min(cues[1].start + Duration::from_millis(1500)),
        "the last cue: its reading time, cut at the end of the video"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "no temporary files left"
    );

    // the same from the configuration file: `[model] path` and the `[scene]` settings
    let cfg = dir.path().join("narrate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = \"{}\"\n\n[scene]\nchange_threshold = 0.04\ncooldown_s = 0\n\n\
             [describe]\nscene_max_tokens = 4\n",
            model_dir("apple").display()
        ),
    )
    .unwrap();
    let srt2 = dir.path().join("again.srt");
    let (code, _, stderr) = run(scenesay(dir.path())
        .args(["narrate", "--config"])
        .arg(&cfg)
        .arg(&video)
        .arg("--srt")
        .arg(&srt2));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&srt2).unwrap(),
        std::fs::read_to_string(&srt).unwrap(),
        "same settings, same track"
    );
}

#[test]
fn a_folder_of_pictures_is_a_sequence_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let seq = dir.path().join("seq");
    std::fs::create_dir(&seq).unwrap();
    for (name, fixture) in [
        ("frame1.png", "landscape_640x480.png"),
        ("frame2.png", "landscape_640x480.png"),
        ("frame3.png", "portrait_300x500.png"),
        ("frame4.png", "portrait_300x500.png"),
        ("frame10.png", "text_1024x1024.png"),
        ("frame11.png", "text_1024x1024.png"),
    ] {
        std::fs::copy(fixtures().join("images").join(fixture), seq.join(name)).unwrap();
    }
    std::fs::write(seq.join("notes.txt"), "not a picture").unwrap();
    let narrate = |extra: &[&str]| {
        let mut c = scenesay(dir.path());
        c.arg("narrate")
            .arg("--model")
            .arg(model_dir("hf"))
            .args([
                "--fps",
                "1",
                "--change-threshold",
                "0.03",
                "--cooldown",
                "0",
            ])
            .args(["--max-tokens", "3"])
            .args(extra)
            .arg(&seq);
        run(&mut c)
    };
    // without output files the JSON lines go to stdout
    let (code, stdout, stderr) = narrate(&[]);
    assert_eq!(code, 0, "{stderr}");
    let lines = json_lines(&stdout);
    let got: Vec<(f64, f64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["start"].as_f64().unwrap(),
                l["end"].as_f64().unwrap(),
                Path::new(l["image"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect();
    // one picture a second: each pair is one scene, described at its second picture; the last cue
    // is cut at the end of the sequence (6 pictures = 6 s)
    assert_eq!(
        got,
        [
            (1.0, 2.5, "frame2.png".to_string()),
            (3.0, 4.5, "frame4.png".to_string()),
            (5.0, 6.0, "frame11.png".to_string()),
        ]
    );

    // a broken picture is reported and skipped, keeping its second in the sequence; the exit
    // code says some frames failed
    let png = std::fs::read(seq.join("frame10.png")).unwrap();
    std::fs::write(seq.join("frame5.png"), &png[..png.len() / 4]).unwrap();
    let vtt = dir.path().join("seq.vtt");
    let (code, stdout, stderr) = narrate(&["--vtt", vtt.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("frame5.png"), "{stderr}");
    let cues = subtitles::parse_vtt(&std::fs::read_to_string(&vtt).unwrap()).unwrap();
    assert_well_formed(&cues, Duration::from_secs(7));
    let times: Vec<(u128, u128)> = cues
        .iter()
        .map(|c| (c.start.as_millis(), c.end.as_millis()))
        .collect();
    assert_eq!(times, [(1000, 2500), (3000, 4500), (6000, 7000)]);
}

#[test]
fn bad_input_and_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(scenesay(dir.path())
        .arg("narrate")
        .arg("--model")
        .arg(model_dir("apple"))
        .arg(dir.path().join("missing.mp4")));
    assert_eq!(code, 66, "{stderr}");
    assert!(stderr.contains("no such video file or folder"), "{stderr}");

    let notes = dir.path().join("notes.mp4");
    std::fs::write(&notes, "not a video").unwrap();
    let (code, _, stderr) = run(scenesay(dir.path())
        .arg("narrate")
        .arg("--model")
        .arg(model_dir("apple"))
        .arg(&notes));
    assert_eq!(code, 66, "{stderr}");
    assert!(stderr.contains("not a readable video"), "{stderr}");

    let (code, _, stderr) = run(scenesay(dir.path())
        .arg("narrate")
        .arg("--model")
        .arg(model_dir("apple"))
        .args(["--change-threshold", "5"])
        .arg(&notes));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--change-threshold: 5 is not allowed"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_leaves_complete_files() {
    let dir = tempfile::tempdir().unwrap();
    // long enough that it is still running when interrupted
    let video = ffmpeg(
        dir.path(),
        "long.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=96x64:rate=2:duration=900",
        ],
    );
    let (srt, vtt, jsonl) = (
        dir.path().join("long.srt"),
        dir.path().join("long.vtt"),
        dir.path().join("long.jsonl"),
    );
    let mut child = scenesay(dir.path())
        .arg("narrate")
        .arg("--model")
        .arg(model_dir("apple"))
        .args([
            "--change-threshold",
            "0.01",
            "--cooldown",
            "0",
            "--max-tokens",
            "3",
        ])
        .arg(&video)
        .arg("--srt")
        .arg(&srt)
        .arg("--vtt")
        .arg(&vtt)
        .arg("--jsonl")
        .arg(&jsonl)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let cues = std::fs::read_to_string(&srt)
            .ok()
            .and_then(|s| subtitles::parse_srt(&s).ok())
            .map(|c| c.len())
            .unwrap_or(0);
        if cues >= 2 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "narrate ended before it was interrupted"
        );
        assert!(t.elapsed() < Duration::from_secs(300), "no cues appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted at"), "{stderr}");
    let (cues, _) = read_track(&srt, &vtt, &jsonl);
    assert!(cues.len() >= 2, "{cues:?}");
    assert_well_formed(&cues, duration_of(&video));
    assert!(
        cues.last().unwrap().start < Duration::from_secs(899),
        "stopped early"
    );
}
