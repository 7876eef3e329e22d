//! The systemd user unit: `systemd-analyze verify` accepts it (with ExecStart pointed at the built
//! binary, since the unit expects an installed one), and it keeps the settings the daemon relies
//! on.

use std::process::Command;

#[test]
fn the_unit_verifies_and_keeps_its_contract() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/scenesay.service"
    ))
    .unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "ExecStart=%h/.cargo/bin/scenesay run",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "WantedBy=default.target",
    ] {
        assert!(unit.contains(line), "missing {line}");
    }
    assert!(
        !unit.contains("PrivateDevices=yes"),
        "the camera and keyboards live in /dev"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenesay.service");
    std::fs::write(
        &path,
        unit.replace("%h/.cargo/bin/scenesay", env!("CARGO_BIN_EXE_scenesay")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (apt install systemd)");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
