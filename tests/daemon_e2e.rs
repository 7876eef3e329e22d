//! End to end: the built `scenesay run` on the tiny fixture model, frames from an `images` folder,
//! speech through the `log` backend; driven over the control socket and with signals.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const LANDSCAPE: &str = "landscape_640x480.png";
const TEXT: &str = "text_1024x1024.png";

/// Waits until every captured frame has been looked at (or replaced) and the source has ended.
fn wait_until_all_frames_seen(d: &Daemon) {
    wait_for(Duration::from_secs(120), "all frames processed", || {
        let s = d.status();
        let f = &s["frames"];
        s["source_state"] == "ended"
            && s["state"] == "watching"
            && f["watched"].as_u64().unwrap() + f["dropped"].as_u64().unwrap()
                == f["captured"].as_u64().unwrap()
    });
}

#[test]
fn a_scene_change_gives_exactly_one_narration_and_repeats_give_none() {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames(dir.path(), &[("1.png", LANDSCAPE), ("2.png", TEXT)]);
    let cfg = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 10\nloop = false\nrepeat_each = 20",
            frames.display()
        ),
        "[scene]\nchange_threshold = 0.02\nstable_frames = 2\ncooldown_s = 0\n\n[describe]\nscene_max_tokens = 8",
    );
    let mut d = Daemon::start(dir, &cfg);
    wait_until_all_frames_seen(&d);
    let status = d.status();
    assert_eq!(status["frames"]["captured"], 40, "{status}");
    d.stop();

    let records = d.records();
    let scenes = of_kind(&records, "scene");
    let frames: Vec<u64> = scenes
        .iter()
        .map(|r| r["frame"].as_u64().unwrap())
        .collect();
    // frames 1–20 show the landscape, 21–40 the text page: one narration each, none for repeats
    assert_eq!(scenes.len(), 2, "scene lines: {scenes:#?}");
    assert!((1..=20).contains(&frames[0]), "{frames:?}");
    assert!((21..=40).contains(&frames[1]), "{frames:?}");
    for s in &scenes {
        assert_eq!(s["status"], "spoken", "{s}");
        assert_eq!(s["resolution"], 256, "{s}");
        assert!(!s["text"].as_str().unwrap().is_empty(), "{s}");
        assert!(
            s["latency_ms"]["first_speech"].as_f64().unwrap() > 0.0,
            "{s}"
        );
        assert!(s["tokens"].as_u64().unwrap() <= 8, "{s}");
    }
    // what was said went to stdout through the log backend
    let out = d.stdout();
    assert_eq!(out.matches("[scene] ").count(), 2, "{out}");
    let notices: Vec<&str> = of_kind(&records, "notice")
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert!(notices.contains(&"Scene narration ready."), "{notices:?}");
    assert!(notices.contains(&"End of the pictures."), "{notices:?}");
    assert!(!d.socket.exists(), "the socket is removed on exit");
}

#[test]
fn a_detail_request_through_the_socket_comes_before_queued_scenes() {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames(dir.path(), &[("1.png", LANDSCAPE), ("2.png", TEXT)]);
    // the view changes every frame, so the worker is always busy narrating scenes
    let cfg = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 20\nloop = true",
            frames.display()
        ),
        "[scene]\nchange_threshold = 0.02\nstable_frames = 1\ncooldown_s = 0\n\n[describe]\nscene_max_tokens = 200\ndetail_resolution = 512\ndetail_max_tokens = 16",
    );
    let mut d = Daemon::start(dir, &cfg);
    wait_for(Duration::from_secs(60), "a scene narration", || {
        d.status()["last_narration"]["kind"] == "scene"
    });
    // through the real command-line client
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["ctl", "--socket"])
        .arg(&d.socket)
        .arg("describe")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    d.stop();

    let records = d.records();
    let details: Vec<(usize, &Value)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r["kind"] == "detail")
        .collect();
    assert_eq!(details.len(), 1, "{records:#?}");
    let (at, detail) = details[0];
    assert_eq!(detail["status"], "spoken", "{detail}");
    assert_eq!(detail["resolution"], 512, "{detail}");
    assert_eq!(printed.trim_end(), detail["text"].as_str().unwrap());
    let id = detail["id"].as_u64().unwrap();
    // every scene displaced by the request is written after it, never before
    for (i, r) in records.iter().enumerate() {
        let reason = r["reason"].as_str().unwrap_or("");
        if r["kind"] == "scene"
            && (reason.contains(&format!("request {id}")) || reason.contains("pre-empted"))
        {
            assert!(
                i > at,
                "displaced scene {r} written before the detail {detail}"
            );
            assert_ne!(r["status"], "spoken", "{r}");
        }
    }
    assert!(
        records[..at].iter().any(|r| r["kind"] == "scene"),
        "scenes were being narrated before the request"
    );
}

#[test]
fn sigterm_during_a_generation_exits_cleanly_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames(dir.path(), &[("1.png", LANDSCAPE)]);
    // 2048 px keeps even the tiny model's image encoder busy for seconds: the signal lands inside
    // a step the model cannot interrupt, the worst case for shutdown
    let cfg = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 5\nloop = true",
            frames.display()
        ),
        "[describe]\nscene_max_tokens = 8\ndetail_resolution = 2048\ndetail_max_tokens = 4096",
    );
    let mut d = Daemon::start(dir, &cfg);
    wait_for(Duration::from_secs(60), "a first frame", || {
        d.status()["frames"]["captured"].as_u64().unwrap() > 0
    });
    let r = d.request(r#"{"cmd":"describe","wait":false}"#);
    assert_eq!(r["reply"], "accepted", "{r}");
    wait_for(Duration::from_secs(60), "the detail generation", || {
        d.status()["state"] == "describing detail"
    });
    d.signal(libc::SIGTERM);
    // systemd's stop contract for this service: out within 2 s, not a speed measurement
    let (st, took) = d.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit {st}: {}", d.stderr());
    assert!(
        took <= Duration::from_secs(2),
        "took {took:?}: {}",
        d.stderr()
    );

    let records = d.records(); // every line parses: nothing half-written
    let detail = of_kind(&records, "detail");
    assert_eq!(detail.len(), 1, "{records:#?}");
    assert_eq!(detail[0]["cancelled"], true, "{}", detail[0]);
    assert_eq!(detail[0]["reason"], "shutdown", "{}", detail[0]);
    assert_eq!(detail[0]["resolution"], 2048, "{}", detail[0]);
    assert!(!d.socket.exists(), "the socket is removed on exit");
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(dir.path(), "source = \"test-pattern\"\nfps = 1", "");
    let cfg_path = dir.path().join("second.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let mut d = Daemon::start(dir, &cfg);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    assert!(d.socket.exists(), "the first daemon's socket is left alone");
    assert_eq!(d.status()["reply"], "status");
    d.stop();
}

#[test]
fn systemd_hears_ready_watchdog_status_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cfg = config_text(dir.path(), "source = \"test-pattern\"\nfps = 5", "");
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: exec keeps the shell's
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_scenesay"))
        .arg(&cfg_path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1500000")
        .env("HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut got: Vec<String> = vec![];
    let mut buf = [0u8; 4096];
    let mut seen = |want: &str, got: &mut Vec<String>| loop {
        if got.iter().any(|m| m.lines().any(|l| l.starts_with(want))) {
            return;
        }
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {want} from the daemon ({e}); got {got:?}"));
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    };
    seen("READY=1", &mut got);
    seen("WATCHDOG=1", &mut got);
    seen("STATUS=watching;", &mut got);
    let socket = dir.path().join("scenesay.sock");
    assert_eq!(request(&socket, r#"{"cmd":"stop"}"#)["reply"], "accepted");
    seen("STOPPING=1", &mut got);
    assert!(child.wait().unwrap().success());
    let ready = got.iter().position(|m| m.contains("READY=1")).unwrap();
    let watchdog = got.iter().position(|m| m.contains("WATCHDOG=1")).unwrap();
    assert!(ready < watchdog, "{got:?}");
}
