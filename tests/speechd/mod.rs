//! A private speech-dispatcher for the speech tests, started with a null audio output (the only
//! way it runs headless) and pointed at by the process's environment (`HOME`, `XDG_RUNTIME_DIR`,
//! `SPEECHD_ADDRESS`), so a test that uses it sets process-wide variables and must be alone in its
//! test binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A private speech-dispatcher in `root`; killed on drop.
pub struct Server {
    pidfile: PathBuf,
}

impl Server {
    pub fn start(root: &Path) -> Server {
        let home = root.join("home");
        let run = root.join("run");
        for d in [&home, &run, &root.join("log")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let conf = root.join("conf");
        if !conf.exists() {
            let ok = Command::new("cp")
                .args(["-r", "/etc/speech-dispatcher"])
                .arg(&conf)
                .status()
                .unwrap();
            assert!(ok.success(), "copying /etc/speech-dispatcher");
            let mut speechd = std::fs::read_to_string(conf.join("speechd.conf")).unwrap();
            speechd.push_str("\nAudioOutputMethod \"libao\"\n");
            std::fs::write(conf.join("speechd.conf"), speechd).unwrap();
            std::fs::write(home.join(".libao"), "default_driver=null\n").unwrap();
        }
        let pidfile = root.join("spd.pid");
        let _ = std::fs::remove_file(&pidfile);
        let sock = run.join("speech-dispatcher/speechd.sock");
        let _ = std::fs::remove_file(&sock);
        let status = Command::new("speech-dispatcher")
            .args(["-d", "-t", "0", "-C"])
            .arg(&conf)
            .arg("-L")
            .arg(root.join("log"))
            .arg("-P")
            .arg(&pidfile)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &run)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("speech-dispatcher is installed (apt install speech-dispatcher)");
        assert!(status.success());
        let t = Instant::now();
        while !(sock.exists() && pidfile.exists()) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no speech-dispatcher"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::env::set_var("HOME", &home);
        std::env::set_var("XDG_RUNTIME_DIR", &run);
        std::env::set_var("SPEECHD_ADDRESS", format!("unix_socket:{}", sock.display()));
        Server { pidfile }
    }

    pub fn kill(&self, sig: i32) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: the pid of the speech-dispatcher this test started.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill(libc::SIGTERM);
    }
}
