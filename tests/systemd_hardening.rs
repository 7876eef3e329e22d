//! The systemd unit's hardening and restart policy: `systemd-analyze security --offline=true`
//! scores its exposure at 2.5 or less, while the unit still lets scenesay reach the camera, the
//! keyboards, the sound devices and the speech session, write its narration log, and restarts it
//! with a growing wait when it fails (but not when its configuration is invalid).

use std::process::Command;

fn unit() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/scenesay.service"
    ))
    .unwrap()
}

/// Values of `key=` lines (comments ignored).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn exposure_is_at_most_2_5() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/scenesay.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", "--threshold=25"])
        .arg(path)
        .output()
        .expect("systemd-analyze is installed (apt install systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for scenesay.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in: {text}"));
    println!("systemd-analyze security exposure: {score}");
    assert!(score <= 2.5, "exposure {score}: {text}");
    assert!(out.status.success(), "over the threshold: {text}");
}

#[test]
fn hardening_keeps_what_scenesay_needs() {
    let u = unit();
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateNetwork", "yes"),
        ("IPAddressDeny", "any"),
        ("RestrictAddressFamilies", "AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("DevicePolicy", "closed"),
        ("SystemCallFilter", "@system-service"),
        ("StateDirectory", "scenesay"),
        ("ReadWritePaths", "%t"),
    ] {
        assert!(
            values(&u, key).iter().any(|v| v == want),
            "{key}={want} is missing"
        );
    }
    let devices = values(&u, "DeviceAllow");
    for d in ["char-video4linux rw", "char-input r", "char-alsa rw"] {
        assert!(
            devices.iter().any(|v| v == d),
            "DeviceAllow={d}: {devices:?}"
        );
    }
    // the camera, keyboards and sound live in /dev; the log's folder is the state directory
    assert!(values(&u, "PrivateDevices").iter().all(|v| v != "yes"));
    assert!(values(&u, "ProtectHome")
        .iter()
        .all(|v| v != "yes" && v != "tmpfs"));
    assert!(values(&u, "InaccessiblePaths").is_empty());
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
