//! A model directory that cannot be used at start — missing, not a directory, or unreadable — stops
//! `scenesay run` with a message naming it and exit code 69 (EX_UNAVAILABLE), after saying so out
//! loud and without leaving its socket behind; the systemd unit restarts that code with a growing
//! wait (tests/systemd_hardening.rs). Unreadable needs a user that permissions apply to: when the
//! tests run as root, the daemon is started as user 65534 (nobody) from a copy of the binary.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use support::*;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `scenesay run` with `[model] path = model` in `dir`; returns (exit code, stderr).
fn run(dir: &Path, model: &Path, as_nobody: bool) -> (Option<i32>, String) {
    let text = config_text(dir, "source = \"test-pattern\"\nfps = 1", "").replace(
        &format!("path = \"{}\"", tiny_model().display()),
        &format!("path = \"{}\"", model.display()),
    );
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = if as_nobody {
        // the built binary may sit where user 65534 cannot reach it: use a copy
        let bin = dir.join("scenesay");
        std::fs::copy(env!("CARGO_BIN_EXE_scenesay"), &bin).unwrap();
        chmod(&bin, 0o755);
        for entry in walk(dir) {
            std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
        }
        chmod(&cfg, 0o644);
        let mut c = Command::new(bin);
        c.uid(65534).gid(65534);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_scenesay"))
    };
    let out = cmd
        .args(["run", "--config"])
        .arg(&cfg)
        .env("HOME", dir)
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("SCENESAY_MODEL")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!dir.join("scenesay.sock").exists(), "the socket is removed");
    let said = records(&dir.join("narration.jsonl"));
    assert!(
        said.iter()
            .any(|r| r["text"] == "scenesay cannot start: the model could not be loaded."),
        "the failure is said: {said:?}"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dir` and everything under it.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_missing_model_directory_is_exit_69_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("no-such-model");
    let (code, err) = run(dir.path(), &model, false);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains(&model.display().to_string()), "{err}");
}

#[test]
fn a_file_instead_of_a_model_directory_is_exit_69_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.bin");
    std::fs::write(&model, b"not a directory").unwrap();
    let (code, err) = run(dir.path(), &model, false);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains(&model.display().to_string()), "{err}");
}

#[test]
fn an_unreadable_model_directory_is_exit_69_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for e in std::fs::read_dir(tiny_model()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let (code, err) = if root {
        let r = {
            // chmod after the chown in run(): set it up front, run() keeps the mode
            chmod(&model, 0o000);
            run(dir.path(), &model, true)
        };
        chmod(&model, 0o755);
        r
    } else {
        chmod(&model, 0o000);
        let r = run(dir.path(), &model, false);
        chmod(&model, 0o755);
        r
    };
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains(&model.display().to_string()), "{err}");
    assert!(err.contains("ermission denied"), "{err}");
}
