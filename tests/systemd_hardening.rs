//! The systemd unit's hardening and restart policy.
//!
//! The unit is a *user* unit that must start where unprivileged user namespaces are restricted
//! (Ubuntu 24.04's default). A user manager applies every namespace-based option (PrivateUsers=,
//! ProtectSystem=, PrivateTmp=, …) only inside a user namespace, so the unit carries none of them:
//! only seccomp filters and process attributes, which a user manager sets without one. The
//! namespace options live in a drop-in (`systemd/userns-sandbox.conf`) for systems that allow
//! user namespaces.
//!
//! `systemd-analyze security --offline=true` scores a unit as if it were a system service running
//! as root: it counts the capability lines against the unit (a user manager's services have no
//! capabilities to begin with) and counts namespace options for it whether or not the manager can
//! apply them (the old unit "scored 1.0" with options that stopped it from starting on Ubuntu
//! 24.04). The score is therefore printed, not trusted: these tests assert which protections the
//! analysis sees as applied, that nothing needing a user namespace is in the unit, and that the
//! drop-in adds exactly the namespace options.

use std::process::Command;

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn unit() -> String {
    read("systemd/scenesay.service")
}

/// Values of `key=` lines (comments ignored).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
        .collect()
}

/// The keys set in a unit file or drop-in (comments and section headers ignored).
fn keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect()
}

/// `systemd-analyze security --offline=true` on `path`: the overall score and the table's lines.
fn analyze(path: &std::path::Path) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(path)
        .output()
        .expect("systemd-analyze is installed (apt install systemd)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for scenesay.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in: {text}"));
    (score, text)
}

/// Is the protection of this table line shown as applied (✓)?
fn applied(table: &str, setting: &str) -> bool {
    table
        .lines()
        .any(|l| l.starts_with('✓') && l[3..].trim_start().starts_with(setting))
}

#[test]
fn the_unit_has_no_option_a_user_manager_needs_a_user_namespace_for() {
    let u = unit();
    let set = keys(&u);
    for k in scenesay::commands::service::NEEDS_USER_NAMESPACE {
        assert!(
            !set.iter().any(|s| s == k),
            "{k}= needs a user namespace in a user manager: move it to systemd/userns-sandbox.conf"
        );
    }
    // the BPF-based options do nothing in a user unit: they would only make it look safer
    for k in [
        "IPAddressDeny",
        "IPAddressAllow",
        "DeviceAllow",
        "DevicePolicy",
    ] {
        assert!(
            !set.iter().any(|s| s == k),
            "{k}= does nothing in a user unit"
        );
    }
    // the drop-in holds only such options, and the ones the old unit had
    let drop_in = read("systemd/userns-sandbox.conf");
    let extra = keys(&drop_in);
    for k in &extra {
        assert!(
            scenesay::commands::service::NEEDS_USER_NAMESPACE.contains(&k.as_str()),
            "{k}= in the drop-in does not need a user namespace: it belongs in the unit"
        );
    }
    for k in [
        "PrivateUsers",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateNetwork",
        "ReadWritePaths",
    ] {
        assert!(
            extra.iter().any(|e| e == k),
            "{k}= is missing from the drop-in"
        );
    }
    assert_eq!(values(&drop_in, "ProtectHome"), ["read-only"]);
    assert_eq!(values(&drop_in, "ReadWritePaths"), ["%t"]);
}

#[test]
fn the_analysis_sees_every_protection_a_user_manager_applies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenesay.service");
    std::fs::write(&path, unit()).unwrap();
    let (score, table) = analyze(&path);
    println!("systemd-analyze security --offline=true, the unit alone: {score}");
    for setting in [
        "NoNewPrivileges=",
        "RestrictAddressFamilies=~AF_(INET|INET6)",
        "RestrictAddressFamilies=~AF_NETLINK",
        "RestrictAddressFamilies=~AF_PACKET",
        "RestrictNamespaces=~user",
        "RestrictNamespaces=~mnt",
        "RestrictNamespaces=~net",
        "RestrictRealtime=",
        "LockPersonality=",
        "MemoryDenyWriteExecute=",
        "SystemCallArchitectures=",
        "SystemCallFilter=~@privileged",
        "SystemCallFilter=~@module",
        "SystemCallFilter=~@clock",
        "SystemCallFilter=~@raw-io",
        "SystemCallFilter=~@mount",
        "SystemCallFilter=~@debug",
        "SystemCallFilter=~@obsolete",
        "SystemCallFilter=~@resources",
        "UMask=",
        "NotifyAccess=",
    ] {
        assert!(
            applied(&table, setting),
            "{setting} is not applied:\n{table}"
        );
    }
    // with the drop-in (where user namespaces are allowed) the namespace protections are added
    let d = dir.path().join("scenesay.service.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("userns-sandbox.conf"),
        read("systemd/userns-sandbox.conf"),
    )
    .unwrap();
    let (with, table) = analyze(&path);
    println!("with systemd/userns-sandbox.conf: {with}");
    for setting in [
        "PrivateUsers=",
        "ProtectSystem=",
        "PrivateTmp=",
        "PrivateNetwork=",
        "ProtectKernelTunables=",
        "ProtectControlGroups=",
    ] {
        assert!(
            applied(&table, setting),
            "{setting} with the drop-in:\n{table}"
        );
    }
    // read only, not hidden: the model and the configuration live in the home
    assert!(
        table.contains("Service has read-only access to home directories"),
        "{table}"
    );
    assert!(
        with < score,
        "the drop-in lowers the exposure: {with} vs {score}"
    );
}

#[test]
fn hardening_keeps_what_scenesay_needs() {
    let u = unit();
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("StateDirectory", "scenesay"),
        ("UMask", "0077"),
        ("LimitCORE", "0"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert!(
            values(&u, key).iter().any(|v| v == want),
            "{key}={want} is missing"
        );
    }
    // the camera, keyboards and sound live in /dev; the home stays readable (the model)
    assert!(values(&u, "PrivateDevices").iter().all(|v| v != "yes"));
    assert!(values(&u, "InaccessiblePaths").is_empty());
    let drop_in = read("systemd/userns-sandbox.conf");
    assert!(values(&drop_in, "PrivateDevices").is_empty());
    assert!(values(&drop_in, "InaccessiblePaths").is_empty());
}

#[test]
fn the_speech_session_is_a_soft_dependency_and_never_started_inside() {
    let u = unit();
    for key in ["Wants", "After"] {
        let v = values(&u, key).join(" ");
        for s in [
            "speech-dispatcher.socket",
            "pipewire.socket",
            "pipewire-pulse.socket",
        ] {
            assert!(v.split_whitespace().any(|x| x == s), "{key}= lacks {s}");
        }
    }
    // a hard dependency would stop scenesay where a distribution ships no such unit
    assert!(values(&u, "Requires").is_empty() && values(&u, "BindsTo").is_empty());
    // the client library's on-demand start of speech-dispatcher fails inside the unit
    assert_eq!(values(&u, "Environment"), ["SPEECHD_CMD=/bin/false"]);
}

#[test]
fn failures_are_restarted_with_a_growing_wait_and_a_start_limit() {
    let u = unit();
    assert_eq!(values(&u, "Restart"), ["on-failure"]);
    assert_eq!(values(&u, "RestartSec"), ["5"]);
    assert_eq!(values(&u, "RestartSteps"), ["6"]);
    assert_eq!(values(&u, "RestartMaxDelaySec"), ["5min"]);
    assert_eq!(values(&u, "StartLimitBurst"), ["5"]);
    assert_eq!(values(&u, "WatchdogSec"), ["60"]);
    // an invalid configuration (78) is not restarted; a missing model (69), a failing thread (70)
    // and a watchdog kill are
    let prevent = values(&u, "RestartPreventExitStatus").join(" ");
    let codes: Vec<&str> = prevent.split_whitespace().collect();
    assert_eq!(codes, ["78"]);
    assert_eq!(scenesay::exit::CONFIG, 78);
    assert_eq!(scenesay::exit::MODEL_UNAVAILABLE, 69);
    assert_eq!(scenesay::exit::INTERNAL, 70);
}
