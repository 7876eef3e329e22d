//! The unit, for real, under a systemd *user* manager (`systemd --user`) started by this test for a
//! fresh user it creates, with unprivileged user namespaces made unavailable to that manager and
//! everything it starts. Heavy (SCENESAY_HEAVY_TESTS=1) and root-only (it creates a user and a
//! control group); it needs systemd installed, not running as PID 1.
//!
//! How user namespaces are taken away: the manager is started under a seccomp filter (inherited
//! by every process it starts) that fails `unshare`/`clone` with CLONE_NEWUSER with EPERM (and
//! `clone3` with ENOSYS, so that callers fall back to `clone`, whose flags a filter can see). That
//! is how a user manager meets Ubuntu 24.04's AppArmor restriction: it cannot get a user namespace
//! of its own. A probe unit with `PrivateUsers=yes` must then fail, and one without it start —
//! checked first, so the restriction is known to be in force.
//!
//! Then, as the new user: `scenesay service install` (binary, tiny model and a configuration with
//! the log speech backend and the test-pattern source in the user's home) — READY (active,
//! running, Type=notify), narration (the log grows), not dumpable and no core limit (/proc), a
//! forced abort (SIGABRT, what the watchdog sends) → restarted and no core file, a clean stop
//! (inactive, exit status 0), `service install` again changes nothing, `service uninstall`
//! removes it.

mod support;

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn heavy() -> bool {
    std::env::var("SCENESAY_HEAVY_TESTS").is_ok_and(|v| v == "1")
}

/// Polls `f` until it returns `Some`, at most `limit`.
fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < limit,
            "gave up waiting ({limit:?}) for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The seccomp program: user namespaces refused (x86-64; other architectures pass everything).
fn no_userns_filter() -> Vec<libc::sock_filter> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let ld = |k: u32| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ret = |k: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    vec![
        ld(4),                        // 0: arch
        jeq(AUDIT_ARCH_X86_64, 0, 8), // 1: other arch → allow
        ld(0),                        // 2: syscall number
        jeq(435, 5, 0),               // 3: clone3 → ENOSYS
        jeq(272, 1, 0),               // 4: unshare → check flags
        jeq(56, 0, 4),                // 5: clone → check flags, else allow
        ld(16),                       // 6: args[0], low 32 bits
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
            jt: 0,
            jf: 2,
            k: libc::CLONE_NEWUSER as u32,
        }, // 7: CLONE_NEWUSER → EPERM
        ret(RET_ERRNO | libc::EPERM as u32), // 8
        ret(RET_ERRNO | libc::ENOSYS as u32), // 9
        ret(RET_ALLOW),               // 10
    ]
}

/// A user, its runtime folder, delegated control groups and its `systemd --user`, all removed
/// again on drop.
struct Session {
    name: String,
    uid: u32,
    home: PathBuf,
    runtime: PathBuf,
    cgroups: Vec<PathBuf>,
    made_run_systemd: bool,
    manager: Option<Child>,
    logs: tempfile::TempDir,
}

impl Session {
    fn new() -> Session {
        let name = format!("scenesay-t{}", std::process::id());
        run_ok(
            Command::new("useradd")
                .args(["-m", "-s", "/bin/sh"])
                .arg(&name),
        );
        let uid: u32 = String::from_utf8(run_ok(Command::new("id").args(["-u", &name])).stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let home = PathBuf::from(format!("/home/{name}"));
        let mut s = Session {
            name,
            uid,
            home,
            runtime: PathBuf::from(format!("/run/user/{uid}")),
            cgroups: vec![],
            made_run_systemd: false,
            manager: None,
            logs: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(&s.runtime).unwrap();
        s.chown(&s.runtime.clone());
        std::fs::set_permissions(
            &s.runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        // sd_booted() looks for this folder
        let rs = Path::new("/run/systemd/system");
        if !rs.exists() {
            std::fs::create_dir_all(rs).unwrap();
            s.made_run_systemd = true;
        }
        // a delegated control group for the manager, in each hierarchy it uses
        let base = Path::new("/sys/fs/cgroup");
        let parents: Vec<PathBuf> = if base.join("unified").is_dir() {
            vec![base.join("unified"), base.join("systemd")]
        } else if base.join("cgroup.controllers").exists() {
            vec![base.to_path_buf()]
        } else {
            vec![base.join("systemd")]
        };
        for p in parents {
            let d = p.join(format!("scenesay-test-{}", std::process::id()));
            std::fs::create_dir(&d).unwrap();
            s.cgroups.push(d.clone());
            s.chown(&d);
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                // control files only; some cannot change owner
                let _ = std::os::unix::fs::chown(e.path(), Some(uid), Some(uid));
            }
        }
        s
    }

    fn chown(&self, p: &Path) {
        std::os::unix::fs::chown(p, Some(self.uid), Some(self.uid)).unwrap();
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .current_dir(&self.home)
            .uid(self.uid)
            .gid(self.uid);
    }

    /// Runs `prog args` as the user.
    fn user(&self, prog: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        let mut c = Command::new(prog);
        c.args(args);
        self.env(&mut c);
        c.stdin(Stdio::null()).output().unwrap()
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        let mut a = vec!["--user"];
        a.extend_from_slice(args);
        self.user("systemctl", &a)
    }

    /// `systemctl --user show -p P --value UNIT`.
    fn prop(&self, unit: &str, p: &str) -> String {
        let o = self.systemctl(&["show", unit, "-p", p, "--value"]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Starts `systemd --user` for the user, in its control groups, without core size limit,
    /// with user namespaces refused when `restrict`.
    fn start_manager(&mut self, restrict: bool) {
        let procs: Vec<CString> = self
            .cgroups
            .iter()
            .map(|d| CString::new(d.join("cgroup.procs").to_str().unwrap()).unwrap())
            .collect();
        let filter = no_userns_filter();
        let uid = self.uid;
        let out = std::fs::File::create(self.logs.path().join("manager.txt")).unwrap();
        let mut cmd = Command::new("/lib/systemd/systemd");
        cmd.arg("--user")
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: only async-signal-safe calls (open, write, close, setrlimit, prctl, setgroups,
        // setgid, setuid) on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return fail();
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return fail();
                    }
                }
                let inf = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_CORE, &inf) != 0 {
                    return fail();
                }
                if restrict {
                    let prog = libc::sock_fprog {
                        len: filter.len() as u16,
                        filter: filter.as_ptr() as *mut libc::sock_filter,
                    };
                    if libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                        &prog as *const libc::sock_fprog,
                    ) != 0
                    {
                        return fail();
                    }
                }
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return fail();
                }
                Ok(())
            });
        }
        self.manager = Some(
            cmd.spawn()
                .expect("systemd is installed (apt install systemd)"),
        );
        let state = wait_until(Duration::from_secs(60), "the user manager", || {
            let o = self.systemctl(&["is-system-running"]);
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if let Some(st) = self.manager.as_mut().unwrap().try_wait().unwrap() {
                panic!("systemd --user exited ({st}): {}", self.manager_log());
            }
            matches!(s.as_str(), "running" | "degraded").then_some(s)
        });
        println!("systemd --user is {state} (user namespaces refused: {restrict})");
    }

    fn manager_log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("manager.txt")).unwrap_or_default()
    }

    fn stop_manager(&mut self) {
        if let Some(mut m) = self.manager.take() {
            // SAFETY: kill with the pid of our own child.
            unsafe { libc::kill(m.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while m.try_wait().ok().flatten().is_none() {
                if t.elapsed() > Duration::from_secs(15) {
                    let _ = m.kill();
                    let _ = m.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Writes a unit file for the user.
    fn write_unit(&self, name: &str, text: &str) {
        let d = self.home.join(".config/systemd/user");
        self.user("mkdir", &["-p", d.to_str().unwrap()]);
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        self.chown(&p);
    }
}

/// Every control group under `d`, deepest first.
fn cgroup_tree(d: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            cgroup_tree(&e.path(), out);
        }
    }
    out.push(d.to_path_buf());
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_manager();
        for root in &self.cgroups {
            let mut tree = vec![];
            cgroup_tree(root, &mut tree);
            for _ in 0..50 {
                let mut left = false;
                for g in &tree {
                    let procs = std::fs::read_to_string(g.join("cgroup.procs")).unwrap_or_default();
                    for pid in procs
                        .split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok())
                    {
                        // SAFETY: only processes left in this test's own control groups.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        left = true;
                    }
                }
                if !left {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            for g in &tree {
                let _ = std::fs::remove_dir(g);
            }
        }
        if self.made_run_systemd {
            let _ = std::fs::remove_dir("/run/systemd/system");
        }
        let _ = std::fs::remove_dir_all(&self.runtime);
        let _ = Command::new("userdel")
            .args(["-r", "-f"])
            .arg(&self.name)
            .output();
    }
}

const PROBE: &str = "[Service]\nType=oneshot\nExecStart=/bin/true\n";

#[test]
fn the_unit_runs_under_a_user_manager_without_user_namespaces() {
    if !heavy() {
        eprintln!("skipped: set SCENESAY_HEAVY_TESTS=1 (scripts/test does)");
        return;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipped: needs root (it creates a user and a control group for its systemd --user)"
        );
        return;
    }
    let mut s = Session::new();
    s.start_manager(true);

    // the restriction is in force: PrivateUsers= cannot be applied, a plain unit starts
    s.write_unit("probe-plain.service", PROBE);
    s.write_unit(
        "probe-userns.service",
        &format!("{PROBE}PrivateUsers=yes\n"),
    );
    s.systemctl(&["daemon-reload"]);
    let plain = s.systemctl(&["start", "probe-plain.service"]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let userns = s.systemctl(&["start", "probe-userns.service"]);
    assert!(
        !userns.status.success(),
        "PrivateUsers=yes started although user namespaces are refused"
    );
    println!(
        "probe with PrivateUsers=yes: {} (Result={}, exit status {})",
        String::from_utf8_lossy(&userns.stderr).trim(),
        s.prop("probe-userns.service", "Result"),
        s.prop("probe-userns.service", "ExecMainStatus")
    );

    // and a namespace option without PrivateUsers= is silently skipped, not applied: the unit
    // would only look safer with it
    s.write_unit(
        "probe-home.service",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'touch %h/written-through-protecthome'\nProtectHome=read-only\n",
    );
    s.systemctl(&["daemon-reload"]);
    let home = s.systemctl(&["start", "probe-home.service"]);
    let skipped = s.home.join("written-through-protecthome").exists();
    println!(
        "probe with ProtectHome=read-only: started = {}, home written = {skipped}",
        home.status.success()
    );
    // (systemd 252 skips it; either way it never protects anything here)
    assert!(
        !home.status.success() || skipped,
        "ProtectHome= was applied without a user namespace?"
    );

    // install as the user: binary, model and configuration in its home
    let bin_dir = s.home.join(".local/bin");
    let model = s.home.join("model");
    for d in [&bin_dir, &model, &s.home.join(".config/scenesay")] {
        let o = s.user("mkdir", &["-p", d.to_str().unwrap()]);
        assert!(o.status.success());
    }
    let bin = bin_dir.join("scenesay");
    std::fs::copy(env!("CARGO_BIN_EXE_scenesay"), &bin).unwrap();
    s.chown(&bin);
    for e in std::fs::read_dir(tiny_model()).unwrap().flatten() {
        let to = model.join(e.file_name());
        std::fs::copy(e.path(), &to).unwrap();
        s.chown(&to);
    }
    let cfg = s.home.join(".config/scenesay/config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = \"{}\"\n\n[capture]\nsource = \"test-pattern\"\nfps = 5\n\n[scene]\nchange_threshold = 0.02\ncooldown_s = 0\n\n[describe]\nscene_max_tokens = 8\n\n[speech]\nbackend = \"log\"\nacknowledge = false\n\n[hotkey]\nkey = \"\"\n",
            model.display()
        ),
    )
    .unwrap();
    s.chown(&cfg);
    let install = s.user(&bin, &["service", "install"]);
    let said = String::from_utf8_lossy(&install.stdout).into_owned();
    assert!(
        install.status.success(),
        "service install: {said}{}\n{}",
        String::from_utf8_lossy(&install.stderr),
        s.manager_log()
    );
    println!("service install said:\n{said}");
    let unit_path = s.home.join(".config/systemd/user/scenesay.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exec = format!("ExecStart={} run --config {}", bin.display(), cfg.display());
    assert!(unit.lines().any(|l| l == exec), "{exec} in:\n{unit}");
    assert!(
        said.contains("ran: systemctl --user daemon-reload"),
        "{said}"
    );
    assert!(
        said.contains("ran: systemctl --user enable --now scenesay.service"),
        "{said}"
    );
    assert!(
        s.home
            .join(".config/systemd/user/default.target.wants/scenesay.service")
            .exists(),
        "enabled"
    );

    // READY: Type=notify, active (running) only once READY=1 came
    assert_eq!(s.prop("scenesay.service", "Type"), "notify");
    assert_eq!(s.prop("scenesay.service", "ActiveState"), "active");
    assert_eq!(s.prop("scenesay.service", "SubState"), "running");
    let pid: i32 = s.prop("scenesay.service", "MainPID").parse().unwrap();
    assert!(pid > 0);

    // it narrates: the log grows
    let log = s.home.join(".local/state/scenesay/narration.jsonl");
    let lines = |p: &Path| records(p).len();
    let first = wait_until(Duration::from_secs(120), "narration log lines", || {
        let n = lines(&log);
        (n >= 2).then_some(n)
    });
    wait_until(Duration::from_secs(120), "the log to grow", || {
        (lines(&log) > first).then_some(())
    });
    let status = s.prop("scenesay.service", "StatusText");
    println!("narrating; STATUS={status}");

    // private: not dumpable (its /proc entries belong to root), no core size, sandbox applied
    let proc_status = format!("/proc/{pid}/status");
    assert_eq!(
        std::fs::metadata(&proc_status).unwrap().uid(),
        0,
        "not dumpable"
    );
    let st = std::fs::read_to_string(&proc_status).unwrap();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "the system call filter is applied");
    assert!(
        field("Uid").starts_with(&s.uid.to_string()),
        "{}",
        field("Uid")
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );

    // install again: nothing changes, nothing reloaded
    let again = s.user(&bin, &["service", "install"]);
    let said = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("is up to date") && !said.contains("daemon-reload"),
        "{said}"
    );
    assert_eq!(s.prop("scenesay.service", "MainPID"), pid.to_string());

    // a forced abort, as the watchdog does it: restarted, no core anywhere it could be written
    let k = s.systemctl(&["kill", "-s", "SIGABRT", "scenesay.service"]);
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    let new_pid = wait_until(Duration::from_secs(120), "the restart", || {
        let p = s.prop("scenesay.service", "MainPID");
        (s.prop("scenesay.service", "NRestarts") == "1"
            && s.prop("scenesay.service", "ActiveState") == "active"
            && p != "0"
            && p != pid.to_string())
        .then_some(p)
    });
    println!("restarted after SIGABRT: MainPID {pid} → {new_pid}");
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let cores: Vec<String> = std::fs::read_dir(&s.home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core"))
        .collect();
    assert!(
        cores.is_empty(),
        "core files in the working folder: {cores:?}"
    );
    if let Some(dir) = pattern
        .trim()
        .strip_prefix('/')
        .and_then(|p| Path::new("/").join(p).parent().map(Path::to_path_buf))
    {
        let ours: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("scenesay"))
            .collect();
        assert!(ours.is_empty(), "{ours:?} in {}", dir.display());
    }
    println!("no core file (core_pattern {:?})", pattern.trim());

    // a clean stop
    let stop = s.systemctl(&["stop", "scenesay.service"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(s.prop("scenesay.service", "ActiveState"), "inactive");
    assert_eq!(s.prop("scenesay.service", "Result"), "success");
    assert_eq!(s.prop("scenesay.service", "ExecMainStatus"), "0");
    let st = s.user(&bin, &["service", "status"]);
    let said = String::from_utf8_lossy(&st.stdout).into_owned();
    assert_eq!(st.status.code(), Some(75), "{said}");
    assert!(
        said.contains("ActiveState=inactive") && said.contains(&exec),
        "{said}"
    );

    // uninstall: disabled, removed; again: nothing to do
    let un = s.user(&bin, &["service", "uninstall"]);
    let said = String::from_utf8_lossy(&un.stdout).into_owned();
    assert!(
        un.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&un.stderr)
    );
    assert!(!unit_path.exists());
    assert!(!s
        .home
        .join(".config/systemd/user/default.target.wants/scenesay.service")
        .exists());
    assert_eq!(s.prop("scenesay.service", "LoadState"), "not-found");
    let un = s.user(&bin, &["service", "uninstall"]);
    assert!(un.status.success());
    assert!(String::from_utf8_lossy(&un.stdout).contains("nothing to remove"));
    s.stop_manager();
}
