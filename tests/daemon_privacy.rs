//! Privacy of the running daemon (built binary, tiny model): the narration log rotates at its size
//! cap between two lines while scenesay runs and keeps only `[log] keep` older files; a symbolic
//! link planted at the log's fallback path under the temporary folder is refused, never followed;
//! the process is not dumpable and a forced abort leaves no core file.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

#[test]
fn the_log_rotates_at_its_cap_mid_run_between_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(
        dir.path(),
        "source = \"test-pattern\"\nfps = 5",
        "[describe]\ndetail_resolution = 256\ndetail_max_tokens = 6",
    )
    // 0.002 MB = 2097 bytes: about six lines per file
    .replace("[log]\n", "[log]\nmax_mb = 0.002\nkeep = 2\n");
    let mut d = Daemon::start(dir, &cfg);
    // a describe before the first frame is refused ("no frame has been captured yet")
    wait_for(Duration::from_secs(60), "the first frame", || {
        d.status()["frames"]["watched"].as_u64().unwrap() > 0
    });
    let cap = (0.002f64 * 1024.0 * 1024.0) as u64;
    let log = d.log.clone();
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    let t = Instant::now();
    let mut asked = 0;
    // ask until the first file has been rotated away twice (so `.3` would exist if keep were
    // not honoured), bounded
    while !(rotated(2).exists() && asked >= 30) {
        assert!(
            t.elapsed() < Duration::from_secs(180) && asked < 200,
            "no rotation after {asked} requests: {}",
            d.stderr()
        );
        let r = d.request(r#"{"cmd":"describe"}"#);
        assert_eq!(r["reply"], "narration", "{r}");
        asked += 1;
    }
    d.stop();
    assert!(!rotated(3).exists(), "keep = 2 older files");
    let files = [rotated(2), rotated(1), log.clone()];
    let mut all = vec![];
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(
            len <= cap,
            "{} is {len} bytes, over the cap {cap}",
            f.display()
        );
        // `records` panics on a line that is not whole JSON, and on a file not ending in a newline
        all.extend(records(f));
    }
    // the first lines (the "ready" notice) went with the dropped files
    assert!(
        !all.iter()
            .any(|r| r["text"] == "Scene narration ready." && r["kind"] == "notice"),
        "the oldest file should have been dropped"
    );
    // oldest to newest across the files
    let times: Vec<String> = all
        .iter()
        .map(|r| r["time"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "files rotated in order");
    // every detail answer of the run is in one piece
    let details = of_kind(&all, "detail");
    assert!(details.len() >= 6, "{}", details.len());
    println!(
        "{asked} requests; {} lines kept in 3 files of at most {cap} bytes",
        all.len()
    );
}

/// A configuration whose log and control socket take their fallback under `$TMPDIR`.
fn fallback_config(dir: &Path) -> PathBuf {
    let text = config_text(dir, "source = \"test-pattern\"\nfps = 2", "");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("socket =") && !l.starts_with("path = \"") || l.contains("tiny"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !text.contains("narration.jsonl") && !text.contains(".sock"),
        "{text}"
    );
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run_with_tmpdir(cfg: &Path, tmp: &Path, err: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["run", "--config"])
        .arg(cfg)
        .env("TMPDIR", tmp)
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("SCENESAY_MODEL")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("INVOCATION_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn a_link_planted_at_the_tmp_fallback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fallback_config(dir.path());
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let private = tmp.join(format!("scenesay-{}", uid()));
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    // someone's link, where the log would be
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&victim, private.join("narration.jsonl")).unwrap();
    let err = dir.path().join("stderr.txt");
    let mut child = run_with_tmpdir(&cfg, &tmp, &err);
    let socket = private.join("scenesay.sock");
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("exited ({st}): {}", std::fs::read_to_string(&err).unwrap());
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // it narrates on without the log, and said why
    wait_for(Duration::from_secs(60), "a narration", || {
        status(&socket)["last_narration"].is_object()
    });
    assert_eq!(request(&socket, r#"{"cmd":"stop"}"#)["reply"], "accepted");
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(
        stderr.contains("narration.jsonl")
            && stderr.contains("is a symbolic link")
            && stderr.contains("narrating without it"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");

    // the fallback folder itself planted as a link: refused before anything is loaded
    std::fs::remove_dir_all(&private).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &private).unwrap();
    let mut child = run_with_tmpdir(&cfg, &tmp, &err);
    let t = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("not refused: {}", std::fs::read_to_string(&err).unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(!st.success(), "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written through it"
    );
}

/// Starts `cmd` with no core size limit (so only the process's own settings can prevent a dump),
/// in `cwd`, as `as_uid`.
fn spawn_dumpable_env(cmd: &mut Command, cwd: &Path, as_uid: Option<u32>) -> std::process::Child {
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(u) = as_uid {
        cmd.uid(u).gid(u);
    }
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let inf = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &inf) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn cores_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core"))
        .collect()
}

#[test]
fn the_daemon_is_not_dumpable_and_an_abort_leaves_no_core() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // as root, the daemon runs as `nobody`: /proc/PID then belongs to root only because the
    // process is not dumpable (as our own user it would belong to that user)
    let as_uid = (uid() == 0).then_some(65534u32);
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = root.join("scenesay");
    std::fs::copy(env!("CARGO_BIN_EXE_scenesay"), &bin).unwrap();
    let work = root.join("work");
    std::fs::create_dir(&work).unwrap();
    let cfg = config_text(&work, "source = \"test-pattern\"\nfps = 2", "");
    std::fs::write(work.join("config.toml"), cfg).unwrap();
    if let Some(u) = as_uid {
        std::os::unix::fs::chown(&work, Some(u), Some(u)).unwrap();
        std::os::unix::fs::chown(work.join("config.toml"), Some(u), Some(u)).unwrap();
    }
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "--config"])
        .arg(work.join("config.toml"))
        .env("HOME", &work)
        .env("XDG_RUNTIME_DIR", &work)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("SCENESAY_MODEL");
    let mut child = spawn_dumpable_env(&mut cmd, &work, as_uid);
    let socket = work.join("scenesay.sock");
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the daemon exited ({st})");
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(proc_dir.join("status")).unwrap().uid();
    let runs_as = as_uid.unwrap_or_else(uid);
    let limits = std::fs::read_to_string(proc_dir.join("limits")).unwrap();
    let core_line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .to_string();
    println!("/proc/{pid}/status owned by {owner} (the daemon runs as {runs_as}); {core_line}");
    if runs_as != 0 {
        assert_eq!(
            owner, 0,
            "a dumpable process's /proc entries belong to its user"
        );
    }
    assert_eq!(
        core_line
            .split_whitespace()
            .skip(4)
            .take(2)
            .collect::<Vec<_>>(),
        ["0", "0"],
        "{core_line}"
    );

    // a forced abort (what the watchdog sends): killed by SIGABRT, no core
    // SAFETY: kill with our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGABRT) }, 0);
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGABRT), "{st}");
    assert!(!st.core_dumped(), "the kernel reports a core dump");
    assert!(cores_in(&work).is_empty(), "{:?}", cores_in(&work));

    // the same abort of an ordinary process here does dump core, where this system writes cores
    // at all (core_pattern): the check above could fail
    let mut control = Command::new("sleep");
    control.arg("30");
    let mut c = spawn_dumpable_env(&mut control, &work, as_uid);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill with our own child's pid.
    assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGABRT) }, 0);
    let cst = c.wait().unwrap();
    println!(
        "control process: core dumped = {} (core_pattern {:?})",
        cst.core_dumped(),
        std::fs::read_to_string("/proc/sys/kernel/core_pattern")
            .unwrap_or_default()
            .trim()
    );
    for f in cores_in(&work) {
        let _ = std::fs::remove_file(work.join(f));
    }
}
