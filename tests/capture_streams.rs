//! Network and pipeline cameras, with real processes on this machine only: ffmpeg serving its test
//! source as MJPEG over HTTP on 127.0.0.1 (what a phone's IP-camera app serves), read by the
//! `stream` source; the same server killed and started again while the capture loop runs (one
//! notice for the outage, one when it works again, frames flowing again); and GStreamer's
//! `videotestsrc` through the `gstreamer` source, plus the errors for missing plugins.
//! Every server is bounded (`-t`) and killed when its test ends.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use scenesay::capture::{
    frame_slot, open_source_paced, run_capture_paced, FrameSource, Pace, Rates,
};
use scenesay::config::{CaptureConfig, SourceKind};
use scenesay::speech::service::{Speaker, SpeechMsg};
use scenesay::status::{Clock, Stats};

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An ffmpeg process serving a moving 320×240 test picture at 10 fps as MJPEG over HTTP at
/// `http://127.0.0.1:PORT/video`, for at most 60 s; killed when dropped.
struct MjpegServer(Child);

impl MjpegServer {
    fn start(port: u16) -> Self {
        let child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "quiet",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=10",
                "-t",
                "60",
                "-c:v",
                "mjpeg",
                "-q:v",
                "5",
                "-f",
                "mpjpeg",
                "-listen",
                "1",
            ])
            .arg(format!("http://127.0.0.1:{port}/video"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg is installed (apt install ffmpeg)");
        Self(child)
    }
}

impl Drop for MjpegServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stream_config(port: u16, width: u32, height: u32, fps: f64) -> CaptureConfig {
    CaptureConfig {
        source: SourceKind::Stream,
        url: format!("http://127.0.0.1:{port}/video"),
        width,
        height,
        fps,
        idle_fps: fps,
        ..Default::default()
    }
}

/// Opens the source, retrying while the server is still starting (for at most 15 s).
fn open_when_up(cfg: &CaptureConfig) -> Box<dyn FrameSource> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        match open_source_paced(cfg, Arc::new(Pace::default())) {
            Ok(s) => return s,
            Err(e) if Instant::now() < end => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the stream never opened: {e}"),
        }
    }
}

fn mean(img: &RgbImage, rows: std::ops::Range<u32>) -> f64 {
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in rows {
        for x in 0..img.width() {
            sum += img.get_pixel(x, y).0.iter().map(|&v| v as u64).sum::<u64>();
            n += 3;
        }
    }
    sum as f64 / n as f64
}

#[test]
fn mjpeg_over_http_is_read_at_the_configured_size_and_rate() {
    let port = free_port();
    let _server = MjpegServer::start(port);
    let mut s = open_when_up(&stream_config(port, 160, 120, 4.0));
    assert_eq!(s.name(), format!("stream http://127.0.0.1:{port}/video"));
    assert!(s.live());
    let first = s.next_frame().unwrap().unwrap();
    assert_eq!(first.dimensions(), (160, 120));
    let t = Instant::now();
    let mut frames = vec![first];
    while frames.len() < 9 {
        frames.push(s.next_frame().unwrap().expect("a live stream does not end"));
    }
    let took = t.elapsed();
    // 8 more frames at 4 fps: about 2 s, never all at once (the newest frame is handed on at the
    // pace, nothing queues up) and not starved
    assert!(
        took >= Duration::from_millis(1400) && took <= Duration::from_secs(6),
        "8 frames took {took:?}"
    );
    // ffmpeg's test source moves: the picture is live, not one frame repeated
    assert_ne!(frames[0], frames[8]);
    assert!(frames.iter().all(|f| f.dimensions() == (160, 120)));
}

#[test]
fn a_stream_of_another_shape_is_letterboxed_not_stretched() {
    let port = free_port();
    let _server = MjpegServer::start(port);
    // 320×240 into 160×160: the picture is 160×120 in the middle, black bands of 20 rows
    let mut s = open_when_up(&stream_config(port, 160, 160, 4.0));
    let f = s.next_frame().unwrap().unwrap();
    assert_eq!(f.dimensions(), (160, 160));
    let (top, middle, bottom) = (mean(&f, 0..18), mean(&f, 30..130), mean(&f, 142..160));
    assert!(top < 3.0 && bottom < 3.0, "bands: {top} {bottom}");
    assert!(middle > 40.0, "picture: {middle}");
}

#[test]
fn nothing_serving_is_a_clear_error_within_seconds() {
    let port = free_port();
    let t = Instant::now();
    let e = open_source_paced(&stream_config(port, 160, 120, 2.0), Arc::default())
        .err()
        .expect("nothing listens there");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "stream http://127.0.0.1:{port}/video: ffmpeg stopped"
        )),
        "{msg}"
    );
    assert!(msg.contains("nothing is serving"), "{msg}");
    assert_eq!(
        e.spoken(),
        "Camera stream not available. I will keep trying."
    );
}

#[test]
fn a_password_never_shows_in_messages() {
    let port = free_port();
    let mut cfg = stream_config(port, 160, 120, 2.0);
    cfg.url = format!("http://me:hunter2@127.0.0.1:{port}/video");
    let e = open_source_paced(&cfg, Arc::default()).err().unwrap();
    let msg = e.to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("me:***@127.0.0.1"), "{msg}");
}

fn notices(rx: &crossbeam_channel::Receiver<SpeechMsg>) -> Vec<String> {
    rx.try_iter()
        .filter_map(|m| match m {
            SpeechMsg::Text { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stream_that_dies_and_comes_back_is_announced_once_and_resumes() {
    let port = free_port();
    let mut server = Some(MjpegServer::start(port));
    let cfg = stream_config(port, 160, 120, 5.0);
    let (tx, said) = crossbeam_channel::unbounded();
    let stats = Arc::new(Stats::new(Clock::new()));
    let (slot, frames) = frame_slot();
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let st = stats.clone();
    let c = cfg.clone();
    let h = std::thread::spawn(move || {
        let pace = st.pace.clone();
        let rates = Rates::from_config(&c);
        run_capture_paced(
            move || open_source_paced(&c, pace.clone()),
            SourceKind::Stream,
            rates,
            slot,
            Speaker::new(tx),
            st,
            stop,
        )
    });
    let next = |limit: u64| frames.recv_timeout(Duration::from_secs(limit));
    // the server may come up after the first attempt: frames flow within seconds
    let mut last = next(20).expect("frames from the stream").number;
    for _ in 0..3 {
        let n = next(5).expect("frames keep coming").number;
        assert!(n > last);
        last = n;
    }
    let before = notices(&said);
    assert!(
        before.is_empty()
            || before
                == [
                    "Camera stream not available. I will keep trying.",
                    "Camera stream is working again."
                ],
        "{before:?}"
    );

    // the server dies: noticed within seconds, said once
    server.take();
    let died = Instant::now();
    while frames.recv_timeout(Duration::from_millis(200)).is_ok() {
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "frames after death"
        );
    }
    let end = Instant::now() + Duration::from_secs(10);
    let mut outage = vec![];
    while outage.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        outage = notices(&said);
    }
    assert_eq!(
        outage,
        ["Camera stream not available. I will keep trying."],
        "noticed after {:?}",
        died.elapsed()
    );
    eprintln!("outage said {:?} after the server died", died.elapsed());
    assert!(
        stats.source_state().starts_with("retrying: "),
        "{}",
        stats.source_state()
    );
    // a few failed reconnections (backoff 1, 2 … s) stay silent
    std::thread::sleep(Duration::from_secs(4));
    assert!(notices(&said).is_empty());

    // it comes back: frames flow again and that is said once
    let _server = MjpegServer::start(port);
    let restarted = Instant::now();
    let back = next(40).expect("frames again after the server came back");
    eprintln!(
        "frames again {:?} after the server came back",
        restarted.elapsed()
    );
    assert!(back.number > last);
    for _ in 0..3 {
        next(5).expect("frames keep coming again");
    }
    assert_eq!(notices(&said), ["Camera stream is working again."]);
    assert_eq!(stats.source_state(), "running");
    drop(stop_tx);
    h.join().unwrap();
}

fn gst_config(pipeline: &str, width: u32, height: u32, fps: f64) -> CaptureConfig {
    CaptureConfig {
        source: SourceKind::Gstreamer,
        pipeline: pipeline.into(),
        width,
        height,
        fps,
        idle_fps: fps,
        ..Default::default()
    }
}

#[test]
fn a_gstreamer_test_pipeline_delivers_live_frames_at_the_configured_size_and_rate() {
    // 320×240 colour bars scrolling sideways (without the size the test source would make its
    // pictures at whatever size is asked for)
    let pipeline =
        "videotestsrc is-live=true pattern=smpte horizontal-speed=8 ! video/x-raw,width=320,height=240";
    let cfg = gst_config(pipeline, 200, 100, 5.0);
    let mut s = open_source_paced(&cfg, Arc::default())
        .expect("gst-launch-1.0 and videotestsrc are installed (see .ci/run)");
    assert_eq!(s.name(), format!("gstreamer {pipeline}"));
    let first = s.next_frame().unwrap().unwrap();
    assert_eq!(first.dimensions(), (200, 100));
    let t = Instant::now();
    let mut frames = vec![first];
    while frames.len() < 11 {
        frames.push(s.next_frame().unwrap().unwrap());
    }
    let took = t.elapsed();
    // 10 more at 5 fps: about 2 s
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(5),
        "10 frames took {took:?}"
    );
    // the bars move
    assert_ne!(frames[0], frames[10]);
    // 320×240 (4:3) into 200×100 is letterboxed at the sides, not stretched: black columns at
    // the edges, bars in the middle
    let f = &frames[0];
    assert_eq!(f.get_pixel(0, 50).0, [0, 0, 0]);
    assert_eq!(f.get_pixel(199, 50).0, [0, 0, 0]);
    let middle: u32 = (40..160)
        .map(|x| f.get_pixel(x, 30).0.iter().map(|&v| v as u32).sum::<u32>())
        .sum();
    assert!(middle > 120 * 100, "bars in the middle: {middle}");
}

#[test]
fn a_missing_gstreamer_element_names_what_to_install() {
    let cfg = gst_config("scenesaynosuchsrc", 64, 64, 2.0);
    let t = Instant::now();
    let e = open_source_paced(&cfg, Arc::default()).err().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    let msg = e.to_string();
    assert!(msg.starts_with("gstreamer: the pipeline stopped"), "{msg}");
    assert!(msg.contains("no scenesaynosuchsrc element"), "{msg}");
    assert!(msg.contains("gst-inspect-1.0 scenesaynosuchsrc"), "{msg}");
    assert_eq!(e.spoken(), "Camera not available. I will keep trying.");
}

#[test]
fn the_pipewire_source_fails_clearly_without_a_pipewire_camera() {
    // the test machines have no PipeWire camera: without the plugin the error names its
    // package; with it, the pipeline fails to start and says so
    let plugin = Command::new("gst-inspect-1.0")
        .arg("pipewiresrc")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let cfg = CaptureConfig {
        source: SourceKind::Pipewire,
        width: 64,
        height: 64,
        ..Default::default()
    };
    let t = Instant::now();
    let e = open_source_paced(&cfg, Arc::default()).err().unwrap();
    assert!(t.elapsed() < Duration::from_secs(25));
    let msg = e.to_string();
    assert!(msg.starts_with("pipewire: "), "{msg}");
    if plugin {
        assert!(
            msg.contains("stopped") || msg.contains("no picture"),
            "{msg}"
        );
    } else {
        assert!(
            msg.contains("sudo apt install gstreamer1.0-pipewire"),
            "{msg}"
        );
    }
}

#[test]
fn a_pipeline_that_ends_is_an_outage_not_the_end() {
    // 3 frames, then the pipeline ends: a camera that stops is retried, not a finished recording
    let cfg = gst_config("videotestsrc num-buffers=3", 32, 32, 30.0);
    let mut s = open_source_paced(&cfg, Arc::default()).unwrap();
    let mut n = 0;
    let e = loop {
        match s.next_frame() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("a live source never ends"),
            Err(e) => break e,
        }
        assert!(n < 10);
    };
    assert!(n >= 1, "{n}");
    assert!(e.to_string().contains("the pipeline stopped"), "{e}");
}

/// A minimal RTSP server on 127.0.0.1 for one player at a time: ffmpeg encodes its moving test
/// picture as H.264 into RTP packets sent to a local UDP port, and the server answers OPTIONS,
/// DESCRIBE (ffmpeg's SDP), SETUP (RTP over the RTSP connection, as the stream source asks) and
/// PLAY, then relays every packet interleaved on the connection — what an IP camera does. While
/// `silent` is set it relays nothing and keeps the connection open: a camera that hangs.
struct RtspServer {
    port: u16,
    encoder: Child,
    silent: Arc<std::sync::atomic::AtomicBool>,
    _dir: tempfile::TempDir,
}

impl RtspServer {
    fn start() -> Self {
        use std::io::{BufRead, BufReader, Write};
        use std::net::{TcpStream, UdpSocket};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Mutex;

        let dir = tempfile::tempdir().unwrap();
        let sdp_path = dir.path().join("stream.sdp");
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        let encoder = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "quiet",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=10",
                "-t",
                "60",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                "10",
                "-pix_fmt",
                "yuv420p",
                "-f",
                "rtp",
                "-sdp_file",
            ])
            .arg(&sdp_path)
            .arg(format!("rtp://127.0.0.1:{udp_port}?pkt_size=1200"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg is installed (apt install ffmpeg)");
        let end = Instant::now() + Duration::from_secs(10);
        let sdp = loop {
            let s = std::fs::read_to_string(&sdp_path).unwrap_or_default();
            if s.contains("m=video") {
                break s;
            }
            assert!(Instant::now() < end, "ffmpeg wrote no SDP");
            std::thread::sleep(Duration::from_millis(50));
        };
        // the track's control URL, which the player sets up
        let sdp = sdp
            .replace("m=video", "a=control:*\r\nm=video")
            .replace('\n', "\r\n");
        let sdp = sdp.replace("\r\r\n", "\r\n") + "a=control:track0\r\n";

        let player: Arc<Mutex<Option<TcpStream>>> = Arc::default();
        let silent = Arc::new(AtomicBool::new(false));
        // the relay: every RTP packet to the player that is playing, as interleaved channel 0
        let (p, quiet) = (player.clone(), silent.clone());
        udp.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let end = Instant::now() + Duration::from_secs(70);
            while Instant::now() < end {
                let Ok(n) = udp.recv(&mut buf) else { continue };
                if quiet.load(Ordering::Relaxed) {
                    continue;
                }
                let mut g = p.lock().unwrap();
                if let Some(s) = g.as_mut() {
                    let mut msg = vec![b'$', 0, (n >> 8) as u8, n as u8];
                    msg.extend_from_slice(&buf[..n]);
                    if s.write_all(&msg).is_err() {
                        *g = None;
                    }
                }
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (sdp, player) = (sdp.clone(), player.clone());
                std::thread::spawn(move || {
                    let mut out = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    loop {
                        // one request: its lines up to the empty one (interleaved RTCP from the
                        // player starts with '$' and is skipped)
                        let mut first = String::new();
                        let mut b = [0u8; 1];
                        if std::io::Read::read_exact(&mut r, &mut b).is_err() {
                            return;
                        }
                        if b[0] == b'$' {
                            let mut h = [0u8; 3];
                            if std::io::Read::read_exact(&mut r, &mut h).is_err() {
                                return;
                            }
                            let len = ((h[1] as usize) << 8) | h[2] as usize;
                            let mut skip = vec![0u8; len];
                            if std::io::Read::read_exact(&mut r, &mut skip).is_err() {
                                return;
                            }
                            continue;
                        }
                        first.push(b[0] as char);
                        if r.read_line(&mut first).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut cseq = String::new();
                        loop {
                            let mut l = String::new();
                            if r.read_line(&mut l).unwrap_or(0) == 0 {
                                return;
                            }
                            if l.trim().is_empty() {
                                break;
                            }
                            if let Some(v) = l.strip_prefix("CSeq:") {
                                cseq = v.trim().to_string();
                            }
                        }
                        let method = first.split_whitespace().next().unwrap_or_default();
                        let url = first.split_whitespace().nth(1).unwrap_or_default();
                        let head = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n");
                        let reply = match method {
                            "OPTIONS" => format!(
                                "{head}Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n\r\n"
                            ),
                            "DESCRIBE" => format!(
                                "{head}Content-Base: {url}/\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                                sdp.len()
                            ),
                            "SETUP" => format!(
                                "{head}Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 4242;timeout=60\r\n\r\n"
                            ),
                            "PLAY" => format!("{head}Session: 4242\r\nRange: npt=0.000-\r\n\r\n"),
                            "TEARDOWN" => {
                                let _ = out.write_all(format!("{head}\r\n").as_bytes());
                                *player.lock().unwrap() = None;
                                return;
                            }
                            _ => format!("{head}Session: 4242\r\n\r\n"),
                        };
                        // the reply goes out under the relay's lock, so packets never cut into it
                        let mut g = player.lock().unwrap();
                        if out.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                        if method == "PLAY" {
                            *g = Some(out.try_clone().unwrap());
                        }
                    }
                });
            }
        });
        Self {
            port,
            encoder,
            silent,
            _dir: dir,
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.encoder.kill();
        let _ = self.encoder.wait();
    }
}

#[test]
fn h264_over_rtsp_is_read_and_a_camera_that_hangs_is_noticed() {
    let server = RtspServer::start();
    let cfg = CaptureConfig {
        source: SourceKind::Stream,
        url: format!("rtsp://viewer:secret@127.0.0.1:{}/live", server.port),
        width: 160,
        height: 120,
        fps: 4.0,
        idle_fps: 4.0,
        ..Default::default()
    };
    let mut s = open_when_up(&cfg);
    assert_eq!(
        s.name(),
        format!("stream rtsp://viewer:***@127.0.0.1:{}/live", server.port)
    );
    let mut frames = vec![];
    while frames.len() < 6 {
        frames.push(s.next_frame().unwrap().unwrap());
    }
    assert!(frames.iter().all(|f| f.dimensions() == (160, 120)));
    assert_ne!(frames[0], frames[5], "the picture moves");
    assert!(mean(&frames[5], 0..120) > 40.0, "a picture, not black");

    // the camera hangs with the connection open: noticed within seconds, not waited for forever
    server
        .silent
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    let e = loop {
        match s.next_frame() {
            Ok(_) => assert!(
                t.elapsed() < Duration::from_secs(3),
                "frames after the hang"
            ),
            Err(e) => break e,
        }
    };
    let took = t.elapsed();
    assert!(took < Duration::from_secs(12), "noticed after {took:?}");
    eprintln!("the hung camera was noticed after {took:?}: {e}");
    let msg = e.to_string();
    assert!(!msg.contains("secret"), "{msg}");
    assert!(
        msg.contains("no picture for") || msg.contains("ffmpeg stopped"),
        "{msg}"
    );
}

mod support;

#[test]
fn the_daemon_narrates_a_phone_stream_and_a_gstreamer_camera() {
    use support::{config_text, of_kind, Daemon};
    let port = free_port();
    let _server = MjpegServer::start(port);
    for (capture, source) in [
        (
            format!("source = \"stream\"\nurl = \"http://127.0.0.1:{port}/video\"\nfps = 4"),
            format!("stream http://127.0.0.1:{port}/video"),
        ),
        (
            "source = \"gstreamer\"\npipeline = \"videotestsrc is-live=true horizontal-speed=4\"\nfps = 4"
                .to_string(),
            "gstreamer videotestsrc is-live=true horizontal-speed=4".to_string(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_text(
            dir.path(),
            &capture,
            "[scene]\nstable_frames = 1\n\n[describe]\nscene_max_tokens = 4",
        );
        let mut d = Daemon::start(dir, &cfg);
        // the HTTP server may still be starting: the source retries until it answers
        let t = Instant::now();
        while of_kind(&d.records(), "scene").is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no scene narrated: {}\n{}",
                d.status(),
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let s = d.status();
        assert_eq!(s["source"], source.as_str(), "{s}");
        assert_eq!(s["source_state"], "running", "{s}");
        assert!(s["frames"]["captured"].as_u64().unwrap() >= 1, "{s}");
        d.stop();
    }
}
