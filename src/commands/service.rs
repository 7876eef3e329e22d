//! `scenesay service install|uninstall|status`: the systemd user unit in one command. `install`
//! writes `systemd/scenesay.service` to `$XDG_CONFIG_HOME/systemd/user/` (normally
//! `~/.config/systemd/user/`) with the absolute path of the running scenesay and of the
//! configuration, then `systemctl --user daemon-reload` and `enable --now`; running it again changes
//! nothing unless something differs (then the unit is rewritten and the service restarted).
//! `--dry-run` prints what would be written and run, and changes nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::exit::{self, WithExit};

/// The unit as shipped; `install` puts the real paths into its `ExecStart=`.
pub const UNIT_TEMPLATE: &str = include_str!("../../systemd/scenesay.service");
/// The drop-in with the options a user manager applies only inside a user namespace.
pub const USERNS_DROP_IN: &str = include_str!("../../systemd/userns-sandbox.conf");

pub const UNIT_NAME: &str = "scenesay.service";
const DROP_IN_NAME: &str = "userns-sandbox.conf";
/// The drop-in that lets a network camera (`[capture] source = "stream"`) through: the unit
/// allows only local sockets, and the ffmpeg child inherits that. Its name sorts after
/// [`DROP_IN_NAME`], whose private network namespace it lifts too.
const NETWORK_DROP_IN_NAME: &str = "zz-network-camera.conf";
pub const NETWORK_DROP_IN: &str =
    "# Written by `scenesay service install` because [capture] source = \"stream\": the network\n\
# camera needs IP sockets, which the unit otherwise refuses. Removed when the source is not a\n\
# stream any more, and by `scenesay service uninstall`.\n\
[Service]\n\
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
PrivateNetwork=no\n";

/// The network drop-in a source needs (only a network stream does).
pub fn network_drop_in(source: crate::config::SourceKind) -> Option<&'static str> {
    (source == crate::config::SourceKind::Stream).then_some(NETWORK_DROP_IN)
}

/// Unit settings that a *user* manager can apply only by running the service inside a user
/// namespace (systemd.exec(5): "only available for system services, or for services running in
/// per-user instances of the service manager when PrivateUsers= is enabled", and PrivateUsers=
/// itself). Where unprivileged user namespaces are restricted these either stop the unit from
/// starting or are skipped, so the shipped unit has none of them.
pub const NEEDS_USER_NAMESPACE: &[&str] = &[
    "PrivateUsers",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "ProtectSystem",
    "ProtectHome",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateNetwork",
    "NetworkNamespacePath",
    "PrivateIPC",
    "IPCNamespacePath",
    "PrivateMounts",
    "MountFlags",
    "MountAPIVFS",
    "ProtectProc",
    "ProcSubset",
    "ProtectHostname",
    "ProtectClock",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "RootDirectory",
    "RootImage",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Install scenesay as a systemd user service and start it: writes
    /// ~/.config/systemd/user/scenesay.service (with this scenesay's absolute path and the
    /// configuration's), runs `systemctl --user daemon-reload` and `systemctl --user enable --now
    /// scenesay`. Running it again is harmless: an unchanged unit is left alone, a changed one is
    /// rewritten and the service restarted.
    Install {
        /// The configuration the service reads. Default: the first of
        /// $XDG_CONFIG_HOME/scenesay/config.toml and /etc/scenesay/config.toml that exists (it is
        /// checked now), else none (the service then looks for one each time it starts).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also install systemd/userns-sandbox.conf (read-only system and home, private /tmp and
        /// network namespace, …). Needs unprivileged user namespaces: refused where they are
        /// restricted (Ubuntu 24.04's default), where the unit would not start with it.
        #[arg(long)]
        userns_sandbox: bool,
        /// Write and enable the unit, but do not start it now.
        #[arg(long)]
        no_start: bool,
        /// Print the unit and the commands, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop and disable the service and remove its unit (`systemctl --user disable --now`, then
    /// daemon-reload). The configuration, the model and the narration log are kept.
    Uninstall {
        /// Print what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show whether the unit is installed (and up to date), enabled and running, its status line,
    /// its restarts, and whether this system restricts user namespaces. Exit 0 when it runs,
    /// 75 when it does not.
    Status,
}

/// `$XDG_CONFIG_HOME/systemd/user` (or `~/.config/systemd/user`).
pub fn unit_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .context("neither XDG_CONFIG_HOME nor HOME is set: cannot find ~/.config/systemd/user")?;
    Ok(base.join("systemd/user"))
}

/// One word of a unit's command line: `%` and `$` escaped, quoted when it has blanks or quotes.
pub fn unit_word(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// The `ExecStart=` line for `exe` and `config`.
pub fn exec_start(exe: &Path, config: Option<&Path>) -> String {
    let mut line = format!("ExecStart={} run", unit_word(&exe.to_string_lossy()));
    if let Some(c) = config {
        line.push_str(&format!(" --config {}", unit_word(&c.to_string_lossy())));
    }
    line
}

/// The unit as installed: the template with its `ExecStart=` replaced.
pub fn render_unit(exe: &Path, config: Option<&Path>) -> String {
    let exec = exec_start(exe, config);
    let mut out = String::from(
        "# Written by `scenesay service install`; `scenesay service install` again rewrites it,\n\
         # `scenesay service uninstall` removes it.\n",
    );
    for line in UNIT_TEMPLATE.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&exec);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Whether this system lets an unprivileged user create user namespaces, from
/// `kernel.apparmor_restrict_unprivileged_userns`, `kernel.unprivileged_userns_clone` and
/// `user.max_user_namespaces` (each `None` when the file does not exist).
pub fn userns_restriction(
    apparmor_restrict: Option<&str>,
    unprivileged_clone: Option<&str>,
    max_user_namespaces: Option<&str>,
) -> Option<&'static str> {
    let is = |v: Option<&str>, want: &str| v.map(str::trim) == Some(want);
    if is(apparmor_restrict, "1") {
        Some("kernel.apparmor_restrict_unprivileged_userns = 1 (AppArmor restricts unprivileged user namespaces)")
    } else if is(unprivileged_clone, "0") {
        Some("kernel.unprivileged_userns_clone = 0 (unprivileged user namespaces are off)")
    } else if is(max_user_namespaces, "0") {
        Some("user.max_user_namespaces = 0 (user namespaces are off)")
    } else {
        None
    }
}

/// This system's user namespace restriction, if any.
pub fn this_systems_userns_restriction() -> Option<&'static str> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    userns_restriction(
        read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref(),
        read("/proc/sys/kernel/unprivileged_userns_clone").as_deref(),
        read("/proc/sys/user/max_user_namespaces").as_deref(),
    )
}

/// What `install` does to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    Unchanged,
    Write,
    Remove,
    Absent,
}

/// What to do with a file that should hold `want` (`None`: should not exist) and holds `have`.
pub fn plan_file(have: Option<&str>, want: Option<&str>) -> FileChange {
    match (have, want) {
        (Some(h), Some(w)) if h == w => FileChange::Unchanged,
        (_, Some(_)) => FileChange::Write,
        (Some(_), None) => FileChange::Remove,
        (None, None) => FileChange::Absent,
    }
}

fn systemctl(args: &[&str], dry_run: bool) -> anyhow::Result<String> {
    let shown = format!("systemctl --user {}", args.join(" "));
    if dry_run {
        println!("would run: {shown}");
        return Ok(String::new());
    }
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .context("cannot run systemctl (is systemd installed?)")?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}{}\n(is a systemd user manager running for you? In a desktop session it is; over ssh, `loginctl enable-linger` starts one)",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!("ran: {shown}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `systemctl --user <verb> scenesay.service`'s first output line, without failing.
fn query(verb: &str) -> String {
    Command::new("systemctl")
        .args(["--user", verb, UNIT_NAME])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Writes `text` to `path` through a temporary file renamed over it (never half written).
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().expect("a unit path has a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn apply(
    path: &Path,
    change: &FileChange,
    text: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    match change {
        FileChange::Unchanged => println!("{} is up to date", path.display()),
        FileChange::Absent => {}
        FileChange::Write if dry_run => {
            println!("would write {}:\n", path.display());
            println!("{}", text.unwrap_or_default());
        }
        FileChange::Write => {
            write_file(path, text.unwrap_or_default())?;
            println!("wrote {}", path.display());
        }
        FileChange::Remove if dry_run => println!("would remove {}", path.display()),
        FileChange::Remove => {
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            println!("removed {}", path.display());
        }
    }
    Ok(())
}

/// The configuration to name in the unit: `--config` (checked), else the first on the search path.
/// Also the configuration itself (what the unit needs to allow depends on it).
fn config_for_unit(
    explicit: Option<&Path>,
) -> anyhow::Result<(Option<PathBuf>, crate::config::Config)> {
    let (cfg, found) = crate::config::Config::load(explicit).exit_code(exit::CONFIG)?;
    let path = match found {
        Some(p) => Some(
            std::fs::canonicalize(&p).with_context(|| format!("cannot resolve {}", p.display()))?,
        ),
        None => None,
    };
    Ok((path, cfg))
}

fn install(
    config: Option<PathBuf>,
    userns_sandbox: bool,
    no_start: bool,
    dry_run: bool,
) -> anyhow::Result<u8> {
    if userns_sandbox {
        if let Some(why) = this_systems_userns_restriction() {
            return Err(anyhow::anyhow!(
                "--userns-sandbox needs unprivileged user namespaces, and this system restricts them: {why}. The unit would not start with it; install without --userns-sandbox"
            ))
            .exit_code(exit::USAGE);
        }
    }
    let exe = std::env::current_exe().context("cannot tell where this scenesay is")?;
    if exe.to_string_lossy().ends_with(" (deleted)") {
        bail!("this scenesay's file was replaced while it ran: run the new one");
    }
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    if exe.components().any(|c| c.as_os_str() == "target") {
        eprintln!(
            "note: {} looks like a build folder's binary; the service runs it from there (`cargo install --path .` installs it to ~/.cargo/bin)",
            exe.display()
        );
    }
    let (config, cfg) = config_for_unit(config.as_deref())?;
    match &config {
        Some(c) => println!("configuration: {}", c.display()),
        None => println!(
            "configuration: none found (the service uses the built-in defaults until ~/.config/scenesay/config.toml exists)"
        ),
    }
    let dir = unit_dir()?;
    let unit_path = dir.join(UNIT_NAME);
    let drop_in_path = dir.join(format!("{UNIT_NAME}.d")).join(DROP_IN_NAME);
    let unit = render_unit(&exe, config.as_deref());
    let unit_change = plan_file(
        std::fs::read_to_string(&unit_path).ok().as_deref(),
        Some(&unit),
    );
    let drop_in_change = plan_file(
        std::fs::read_to_string(&drop_in_path).ok().as_deref(),
        userns_sandbox.then_some(USERNS_DROP_IN),
    );
    let network = network_drop_in(cfg.capture.source);
    let network_path = dir
        .join(format!("{UNIT_NAME}.d"))
        .join(NETWORK_DROP_IN_NAME);
    let network_change = plan_file(
        std::fs::read_to_string(&network_path).ok().as_deref(),
        network,
    );
    apply(&unit_path, &unit_change, Some(&unit), dry_run)?;
    apply(
        &drop_in_path,
        &drop_in_change,
        Some(USERNS_DROP_IN),
        dry_run,
    )?;
    apply(&network_path, &network_change, network, dry_run)?;
    if network.is_some() {
        println!("network: allowed (a network camera: [capture] source = \"stream\")");
    }
    let changed = [&unit_change, &drop_in_change, &network_change]
        .iter()
        .any(|c| matches!(c, FileChange::Write | FileChange::Remove));
    if changed {
        systemctl(&["daemon-reload"], dry_run)?;
    }
    if no_start {
        systemctl(&["enable", UNIT_NAME], dry_run)?;
        println!("enabled: scenesay starts at your next login (`systemctl --user start scenesay` starts it now)");
        return Ok(exit::OK);
    }
    let was_active = !dry_run && query("is-active") == "active";
    systemctl(&["enable", "--now", UNIT_NAME], dry_run)?;
    if changed && was_active {
        systemctl(&["restart", UNIT_NAME], dry_run)?;
    }
    if !dry_run {
        println!(
            "scenesay is {} (`scenesay service status`; messages: `journalctl --user -u scenesay -f`)",
            query("is-active")
        );
    }
    Ok(exit::OK)
}

fn uninstall(dry_run: bool) -> anyhow::Result<u8> {
    let dir = unit_dir()?;
    let unit_path = dir.join(UNIT_NAME);
    let drop_dir = dir.join(format!("{UNIT_NAME}.d"));
    let drop_in_path = drop_dir.join(DROP_IN_NAME);
    let unit_change = plan_file(std::fs::read_to_string(&unit_path).ok().as_deref(), None);
    let drop_in_change = plan_file(std::fs::read_to_string(&drop_in_path).ok().as_deref(), None);
    let network_path = drop_dir.join(NETWORK_DROP_IN_NAME);
    let network_change = plan_file(std::fs::read_to_string(&network_path).ok().as_deref(), None);
    if unit_change == FileChange::Absent
        && drop_in_change == FileChange::Absent
        && network_change == FileChange::Absent
    {
        println!("nothing to remove: {} does not exist", unit_path.display());
        return Ok(exit::OK);
    }
    if unit_change == FileChange::Remove {
        systemctl(&["disable", "--now", UNIT_NAME], dry_run)?;
    }
    apply(&unit_path, &unit_change, None, dry_run)?;
    apply(&drop_in_path, &drop_in_change, None, dry_run)?;
    apply(&network_path, &network_change, None, dry_run)?;
    if !dry_run {
        // only when empty: a drop-in of the user's own stays
        let _ = std::fs::remove_dir(&drop_dir);
    }
    systemctl(&["daemon-reload"], dry_run)?;
    if !dry_run {
        // forget a failed state, so `systemctl --user --failed` does not list it
        let _ = Command::new("systemctl")
            .args(["--user", "reset-failed", UNIT_NAME])
            .output();
    }
    Ok(exit::OK)
}

fn status() -> anyhow::Result<u8> {
    let dir = unit_dir()?;
    let unit_path = dir.join(UNIT_NAME);
    match std::fs::read_to_string(&unit_path) {
        Err(_) => {
            println!(
                "not installed: {} does not exist (`scenesay service install`)",
                unit_path.display()
            );
        }
        Ok(text) => {
            println!("unit: {}", unit_path.display());
            if let Some(l) = text.lines().find(|l| l.starts_with("ExecStart=")) {
                println!("  {l}");
            }
            let exe = std::env::current_exe()
                .ok()
                .and_then(|e| std::fs::canonicalize(e).ok());
            if let Some(exe) = exe {
                if !text.contains(&exec_start(&exe, None)) {
                    println!(
                        "  (it runs another scenesay than this one, {}: `scenesay service install` points it here)",
                        exe.display()
                    );
                }
            }
            if dir
                .join(format!("{UNIT_NAME}.d"))
                .join(DROP_IN_NAME)
                .exists()
            {
                println!("  with the user-namespace sandbox ({DROP_IN_NAME})");
            }
        }
    }
    match this_systems_userns_restriction() {
        Some(why) => println!("user namespaces: restricted here — {why}"),
        None => println!("user namespaces: allowed (`--userns-sandbox` can be used)"),
    }
    let show = Command::new("systemctl")
        .args([
            "--user",
            "show",
            UNIT_NAME,
            "-p",
            "UnitFileState,ActiveState,SubState,MainPID,NRestarts,StatusText,Result",
        ])
        .output();
    let mut active = false;
    match show {
        Ok(o) if o.status.success() => {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                if l == "ActiveState=active" {
                    active = true;
                }
                println!("{l}");
            }
        }
        Ok(o) => println!(
            "systemctl --user show failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => println!("cannot run systemctl: {e}"),
    }
    Ok(if active { exit::OK } else { exit::NOT_RUNNING })
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    match a.action {
        Action::Install {
            config,
            userns_sandbox,
            no_start,
            dry_run,
        } => install(config, userns_sandbox, no_start, dry_run),
        Action::Uninstall { dry_run } => uninstall(dry_run),
        Action::Status => status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_quotes_and_escapes() {
        assert_eq!(
            exec_start(Path::new("/usr/bin/scenesay"), None),
            "ExecStart=/usr/bin/scenesay run"
        );
        assert_eq!(
            exec_start(
                Path::new("/home/a b/.cargo/bin/scenesay"),
                Some(Path::new("/home/a b/100%/c$x.toml"))
            ),
            "ExecStart=\"/home/a b/.cargo/bin/scenesay\" run --config \"/home/a b/100%%/c$$x.toml\""
        );
        assert_eq!(unit_word("say\"x"), "\"say\\\"x\"");
    }

    #[test]
    fn the_rendered_unit_only_changes_exec_start() {
        let u = render_unit(Path::new("/opt/s/scenesay"), Some(Path::new("/etc/s.toml")));
        let execs: Vec<&str> = u.lines().filter(|l| l.starts_with("ExecStart=")).collect();
        assert_eq!(
            execs,
            ["ExecStart=/opt/s/scenesay run --config /etc/s.toml"]
        );
        let others = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with("ExecStart=") && !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(others(&u), others(UNIT_TEMPLATE));
    }

    #[test]
    fn only_a_network_stream_opens_the_network() {
        use crate::config::SourceKind::*;
        for s in [Camera, Images, Video, TestPattern, Pipewire, Gstreamer] {
            assert_eq!(network_drop_in(s), None, "{s:?}");
        }
        let d = network_drop_in(Stream).unwrap();
        assert!(d.contains("[Service]\n"), "{d}");
        assert!(
            d.lines()
                .any(|l| l == "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"),
            "{d}"
        );
        assert!(d.lines().any(|l| l == "PrivateNetwork=no"), "{d}");
        // sorts after the user-namespace drop-in, whose PrivateNetwork=yes it overrides
        assert!(NETWORK_DROP_IN_NAME > DROP_IN_NAME);
    }

    #[test]
    fn files_are_written_only_when_they_differ() {
        assert_eq!(plan_file(Some("a"), Some("a")), FileChange::Unchanged);
        assert_eq!(plan_file(Some("a"), Some("b")), FileChange::Write);
        assert_eq!(plan_file(None, Some("b")), FileChange::Write);
        assert_eq!(plan_file(Some("a"), None), FileChange::Remove);
        assert_eq!(plan_file(None, None), FileChange::Absent);
    }

    #[test]
    fn user_namespace_restrictions_are_recognised() {
        assert!(userns_restriction(Some("1\n"), None, Some("63000")).is_some());
        assert!(userns_restriction(Some("0\n"), None, Some("63000")).is_none());
        assert!(userns_restriction(None, Some("0"), None).is_some());
        assert!(userns_restriction(None, Some("1"), Some("0")).is_some());
        assert!(userns_restriction(None, None, None).is_none());
    }
}
