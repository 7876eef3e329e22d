//! `scenesay service install --dry-run`: what the install would write for a configuration, without
//! a systemd user manager — a network camera gets the drop-in that lets its IP sockets through,
//! any other source does not.

use std::path::Path;
use std::process::Command;

fn dry_run(home: &Path, capture: &str) -> String {
    let cfg = home.join("config.toml");
    std::fs::write(&cfg, format!("[capture]\n{capture}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scenesay"))
        .args(["service", "install", "--dry-run", "--config"])
        .arg(&cfg)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !home.join(".config/systemd").exists(),
        "a dry run writes nothing"
    );
    said
}

#[test]
fn a_network_camera_gets_the_network_drop_in_and_nothing_else_does() {
    let home = tempfile::tempdir().unwrap();
    let said = dry_run(
        home.path(),
        "source = \"stream\"\nurl = \"rtsp://192.168.1.20:554/stream1\"",
    );
    let drop_in = home
        .path()
        .join(".config/systemd/user/scenesay.service.d/zz-network-camera.conf");
    assert!(
        said.contains(&format!("would write {}:", drop_in.display())),
        "{said}"
    );
    assert!(
        said.contains("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"),
        "{said}"
    );
    assert!(said.contains("network: allowed"), "{said}");
    assert!(
        said.contains("would run: systemctl --user daemon-reload"),
        "{said}"
    );

    let home = tempfile::tempdir().unwrap();
    let said = dry_run(home.path(), "source = \"test-pattern\"");
    assert!(!said.contains("zz-network-camera"), "{said}");
    assert!(!said.contains("AF_INET"), "{said}");
    assert!(said.contains("scenesay.service"), "{said}");
}
