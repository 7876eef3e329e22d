//! The systemd watchdog trips on a hung worker: with a fake NOTIFY_SOCKET and a 1 s watchdog, the
//! daemon says READY=1 only once the model is loaded, pings WATCHDOG=1 while the worker makes
//! progress, stops pinging while the model hangs inside a call (so systemd would kill and restart
//! it), reports the stall in STATUS=, and pings again when the worker recovers. One test only: it
//! sets process-wide environment variables.

mod support;

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use scenesay::config::Config;
use scenesay::daemon::{self, Shutdown, Stopped};
use scenesay::describer::{DescribeRequest, Describer, Description};
use support::*;

/// A model whose embedding hangs while `hang` is set (and says when it starts hanging).
struct Hanging {
    hang: Arc<AtomicBool>,
    hung: crossbeam_channel::Sender<Instant>,
}

impl Describer for Hanging {
    fn embed(&mut self, _image: &RgbImage, _resolution: u32) -> anyhow::Result<Vec<f32>> {
        if self.hang.load(Ordering::SeqCst) {
            let _ = self.hung.send(Instant::now());
            while self.hang.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(vec![1.0, 0.0, 0.0])
    }

    fn describe(
        &mut self,
        _image: &RgbImage,
        _request: &DescribeRequest,
        on_text: &mut dyn FnMut(&str),
        _cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Description> {
        on_text("A test.");
        Ok(Description {
            text: "A test.".into(),
            ..Default::default()
        })
    }
}

type Heard = Arc<Mutex<Vec<(Instant, String)>>>;

fn heard_since(heard: &Heard, t: Instant, prefix: &str) -> Vec<Instant> {
    heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, m)| *at >= t && m.lines().any(|l| l.starts_with(prefix)))
        .map(|(at, _)| *at)
        .collect()
}

#[test]
fn a_hung_worker_stops_the_watchdog_pings_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &notify_path);
    std::env::set_var("WATCHDOG_USEC", "1000000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    let heard: Heard = Arc::default();
    let h = heard.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = notify.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            h.lock().unwrap().push((Instant::now(), m));
        }
    });

    let frames = frames(dir.path(), &[("1.png", "landscape_640x480.png")]);
    let text = config_text(
        dir.path(),
        &format!(
            "source = \"images\"\npath = \"{}\"\nfps = 10",
            frames.display()
        ),
        "",
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text, &path).unwrap();
    let hang = Arc::new(AtomicBool::new(false));
    let (hung_tx, hung) = crossbeam_channel::unbounded();
    let loaded: Arc<Mutex<Option<Instant>>> = Arc::default();
    let shutdown = Shutdown::new();
    let (hg, l, s) = (hang.clone(), loaded.clone(), shutdown.clone());
    let daemon = std::thread::spawn(move || {
        daemon::run(
            &config,
            move || {
                std::thread::sleep(Duration::from_millis(300));
                *l.lock().unwrap() = Some(Instant::now());
                Ok(Box::new(Hanging {
                    hang: hg,
                    hung: hung_tx,
                }) as Box<dyn Describer>)
            },
            s,
        )
    });
    let t0 = Instant::now() - Duration::from_secs(1);
    wait_for(Duration::from_secs(30), "READY=1", || {
        !heard_since(&heard, t0, "READY=1").is_empty()
    });
    let ready = heard_since(&heard, t0, "READY=1")[0];
    assert!(
        loaded.lock().unwrap().is_some_and(|l| l <= ready),
        "READY=1 only after the model was loaded"
    );
    // pings while the worker works (every third of the interval)
    let t = Instant::now();
    wait_for(Duration::from_secs(30), "watchdog pings", || {
        heard_since(&heard, t, "WATCHDOG=1").len() >= 3
    });

    // the worker hangs inside a model call
    hang.store(true, Ordering::SeqCst);
    let hung_at = hung.recv_timeout(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // pings may go on until the last progress is one interval old, then none
    let late = heard_since(&heard, hung_at + Duration::from_millis(1500), "WATCHDOG=1");
    assert!(late.is_empty(), "{} pings from a hung worker", late.len());
    let stalled = heard
        .lock()
        .unwrap()
        .iter()
        .any(|(at, m)| *at > hung_at && m.contains("worker stalled for"));
    assert!(stalled, "STATUS= says the worker is stalled");

    // it recovers: pings again
    hang.store(false, Ordering::SeqCst);
    let t = Instant::now();
    wait_for(Duration::from_secs(30), "pings after recovery", || {
        heard_since(&heard, t, "WATCHDOG=1").len() >= 2
    });
    shutdown.tx.send(()).unwrap();
    assert_eq!(daemon.join().unwrap().unwrap(), Stopped::Requested);
    let msgs = heard.lock().unwrap();
    let status: Vec<&String> = msgs
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("STATUS="))
        .collect();
    assert!(
        status.iter().all(|m| !m.trim_end().contains('\n')),
        "STATUS= is one line: {status:?}"
    );
    assert!(
        status
            .iter()
            .any(|m| m.starts_with("STATUS=watching; ") && m.contains(" frames, ")),
        "{status:?}"
    );
    assert!(msgs.iter().any(|(_, m)| m.contains("STOPPING=1")));
}
