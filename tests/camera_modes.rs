//! The camera path without a camera: the choice of mode over recorded capability lists (written
//! as `v4l2-ctl --list-formats-ext` prints them: a C920-like UVC webcam, a 16:9 webcam without
//! 640×480, a Raspberry Pi camera with stepwise sizes, an infrared GREY camera, a camera whose
//! first format is H264 and whose rates are 29.97 fps), the decoding of YUYV, NV12, GREY and MJPEG
//! buffers, the bad-frame and outage state machines as transcripts, the capture loop with a camera
//! that fails at every frame or sends bad buffers or still frames, and the real V4L2 calls up to
//! the error a machine without that camera gives.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use scenesay::capture::camera::{self, Camera};
use scenesay::capture::decode::{self, Layout};
use scenesay::capture::health::{BadFrames, BadStep, LogLevel, Notice, Outage};
use scenesay::capture::negotiate::{
    choose, describe_caps, mismatch, offers, parse_v4l2_ctl, FormatCaps, FourCc, Interval, Mode,
    Purpose, Want,
};
use scenesay::capture::{frame_slot, run_capture, CaptureError, FrameSource};
use scenesay::config::{CameraDevice, CaptureConfig, Config, SourceKind};
use scenesay::speech::service::{Speaker, SpeechMsg};
use scenesay::status::{Clock, Stats};

fn data(name: &str) -> Vec<FormatCaps> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cameras")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    parse_v4l2_ctl(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const ALL: [&str; 5] = [
    "c920.txt",
    "uvc_16x9_no_vga.txt",
    "pi_stepwise.txt",
    "ir_grey.txt",
    "h264_first.txt",
];

fn watch(width: u32, height: u32, fps: f64) -> Want {
    Want {
        width,
        height,
        fps,
        purpose: Purpose::Watch,
    }
}

fn still() -> Want {
    Want {
        width: 640,
        height: 480,
        fps: 1.0,
        purpose: Purpose::Still,
    }
}

fn mode(fourcc: FourCc, width: u32, height: u32, num: u32, den: u32) -> Mode {
    Mode {
        fourcc,
        width,
        height,
        interval: Some(Interval::new(num, den)),
    }
}

// ---- negotiation over recorded lists ----

#[test]
fn the_recorded_lists_are_read_whole() {
    let c920 = data("c920.txt");
    let codes: Vec<String> = c920.iter().map(|f| f.fourcc.to_string()).collect();
    assert_eq!(codes, ["YUYV", "H264", "MJPG"]);
    assert_eq!(c920[0].sizes.len(), 19);
    assert_eq!(c920[2].sizes.len(), 17);
    assert!(c920
        .iter()
        .all(|f| f.sizes.iter().all(|s| !s.intervals.is_empty())));
    assert_eq!(data("pi_stepwise.txt").len(), 14);
    assert_eq!(data("ir_grey.txt")[0].fourcc, FourCc::GREY);
}

#[test]
fn printed_lists_read_back_the_same() {
    for name in ALL {
        let caps = data(name);
        let again = parse_v4l2_ctl(&describe_caps(&caps)).unwrap();
        assert_eq!(again, caps, "{name}");
    }
}

#[test]
fn a_malformed_list_names_the_line() {
    let e = parse_v4l2_ctl("[0]: 'MJPG' (Motion-JPEG)\n\tSize: Discrete 640by480\n").unwrap_err();
    assert!(e.starts_with("line 2: "), "{e}");
    let e = parse_v4l2_ctl("\tSize: Discrete 640x480\n").unwrap_err();
    assert!(e.contains("before any format"), "{e}");
}

#[test]
fn c920_watches_in_mjpeg_at_the_size_asked_and_takes_stills_at_its_largest() {
    let caps = data("c920.txt");
    let c = choose(&caps, &watch(640, 480, 15.0)).unwrap();
    assert_eq!(c.mode, mode(FourCc::MJPG, 640, 480, 1, 15), "{}", c.reason);
    assert!(c.reason.contains("the size asked for"), "{}", c.reason);
    assert!(c.reason.contains("H264 skipped"), "{}", c.reason);
    // a faster watch: the 30 fps interval
    let c = choose(&caps, &watch(640, 480, 30.0)).unwrap();
    assert_eq!(c.mode, mode(FourCc::MJPG, 640, 480, 1, 30));
    // 1280x720 at 15: YUYV tops out at 10 there, MJPEG does 15
    let c = choose(&caps, &watch(1280, 720, 15.0)).unwrap();
    assert_eq!(c.mode, mode(FourCc::MJPG, 1280, 720, 1, 15));
    // the still: the most pixels, YUYV 2304x1536 at 2 fps (more than MJPEG's 1920x1080)
    let s = choose(&caps, &still()).unwrap();
    assert_eq!(s.mode, mode(FourCc::YUYV, 2304, 1536, 1, 2), "{}", s.reason);
    assert!(s.reason.contains("most pixels"), "{}", s.reason);
}

#[test]
fn a_webcam_without_640x480_watches_at_the_smallest_size_that_covers_it() {
    // the old request fell through to whatever came first here
    let caps = data("uvc_16x9_no_vga.txt");
    let c = choose(&caps, &watch(640, 480, 15.0)).unwrap();
    assert_eq!(c.mode, mode(FourCc::MJPG, 1280, 720, 1, 15), "{}", c.reason);
    assert!(
        c.reason.contains("the smallest size that covers 640x480"),
        "{}",
        c.reason
    );
    // a small watch: 640x360 covers 320x240, in MJPEG
    let c = choose(&caps, &watch(320, 240, 15.0)).unwrap();
    assert_eq!((c.mode.width, c.mode.height), (640, 360));
    assert_eq!(c.mode.fourcc, FourCc::MJPG);
    let s = choose(&caps, &still()).unwrap();
    assert_eq!(s.mode, mode(FourCc::MJPG, 1920, 1080, 1, 30));
}

#[test]
fn a_stepwise_pi_camera_gets_the_exact_size_and_its_full_sensor_for_stills() {
    let caps = data("pi_stepwise.txt");
    let c = choose(&caps, &watch(640, 480, 15.0)).unwrap();
    // JPEG is the Pi's MJPEG; a continuous rate range gives exactly the rate asked
    assert_eq!(c.mode, mode(FourCc::JPEG, 640, 480, 1, 15), "{}", c.reason);
    // an odd size is rounded up to the steps of 2, so it still covers what was asked
    let c = choose(&caps, &watch(641, 479, 15.0)).unwrap();
    assert_eq!((c.mode.width, c.mode.height), (642, 480));
    // beyond the sensor: its largest size
    let c = choose(&caps, &watch(4000, 3000, 15.0)).unwrap();
    assert_eq!((c.mode.width, c.mode.height), (3280, 2464));
    assert!(c.reason.contains("none covers 4000x3000"), "{}", c.reason);
    let s = choose(&caps, &still()).unwrap();
    assert_eq!(
        (s.mode.fourcc, s.mode.width, s.mode.height),
        (FourCc::JPEG, 3280, 2464)
    );
    for skipped in ["H264", "UYVY", "YU12", "RGB3"] {
        assert!(c.reason.contains(skipped), "{skipped}: {}", c.reason);
    }
}

#[test]
fn an_infrared_grey_camera_is_used_at_its_only_mode() {
    let caps = data("ir_grey.txt");
    let c = choose(&caps, &watch(640, 480, 15.0)).unwrap();
    assert_eq!(c.mode, mode(FourCc::GREY, 640, 360, 1, 15), "{}", c.reason);
    assert!(
        c.reason.contains("the largest size (none covers 640x480)"),
        "{}",
        c.reason
    );
    // at 30 fps asked, 30 it is
    let c = choose(&caps, &watch(640, 480, 30.0)).unwrap();
    assert_eq!(c.mode.interval, Some(Interval::new(1, 30)));
    // no still mode: nothing has more pixels than the watch
    let cfg = CaptureConfig::default();
    let p = camera::plan(&caps, &cfg).unwrap();
    assert_eq!(p.still, None);
}

#[test]
fn a_camera_listing_h264_first_at_ntsc_rates_is_used_in_mjpeg() {
    let caps = data("h264_first.txt");
    let c = choose(&caps, &watch(640, 480, 15.0)).unwrap();
    // 14.985 fps reaches 15 (within 5 %): the slowest rate that does
    assert_eq!(
        c.mode,
        mode(FourCc::MJPG, 640, 480, 1001, 15000),
        "{}",
        c.reason
    );
    assert!(c.reason.contains("H264 skipped"), "{}", c.reason);
    let c = choose(&caps, &watch(640, 480, 30.0)).unwrap();
    assert_eq!(c.mode, mode(FourCc::MJPG, 640, 480, 1001, 30000));
    assert!(
        c.to_owned().mode.to_string().contains("29.97 fps"),
        "{}",
        c.mode
    );
    // too fast for any mode: the fastest there is, and the reason says so
    let c = choose(&caps, &watch(640, 480, 60.0)).unwrap();
    assert_eq!(c.mode.interval, Some(Interval::new(1001, 30000)));
    assert!(c.reason.contains("60 fps is not offered"), "{}", c.reason);
}

#[test]
fn a_camera_with_nothing_decodable_is_refused_with_why() {
    let caps =
        parse_v4l2_ctl("[0]: 'H264' (H.264)\n\tSize: Discrete 1920x1080\n\t\tInterval: Discrete 0.033s (30.000 fps)\n[1]: 'UYVY' (UYVY 4:2:2)\n\tSize: Discrete 640x480\n")
            .unwrap();
    let e = choose(&caps, &watch(640, 480, 15.0)).unwrap_err();
    assert!(e.contains("only H264, UYVY"), "{e}");
    assert!(e.contains("MJPEG, YUYV, NV12 or GREY"), "{e}");
    let e = choose(&[], &watch(640, 480, 15.0)).unwrap_err();
    assert!(e.contains("no capture formats"), "{e}");
    let cfg = CaptureConfig::default();
    assert!(camera::plan(&caps, &cfg).is_err());
}

#[test]
fn a_list_without_rates_is_used_without_setting_one() {
    let caps = parse_v4l2_ctl(
        "[0]: 'YUYV' (YUYV 4:2:2)\n\tSize: Stepwise 16x16 - 1920x1080 with step 16/8\n",
    )
    .unwrap();
    let c = choose(&caps, &watch(640, 480, 15.0)).unwrap();
    assert_eq!(
        (c.mode.width, c.mode.height, c.mode.interval),
        (640, 480, None)
    );
    assert!(c.mode.to_string().contains("rate not listed"), "{}", c.mode);
}

/// Over every recorded list and a grid of wants: the choice is a mode the camera offers, in a
/// format scenesay decodes, and for the watch no other offered mode would have been better by
/// the rules (reaches the rate, covers the size, fewer pixels).
#[test]
fn every_choice_is_offered_and_none_better_is_left_out() {
    let sizes = [
        (160, 120),
        (320, 240),
        (640, 480),
        (800, 600),
        (1280, 720),
        (1920, 1080),
        (4096, 2160),
    ];
    let rates = [1.0, 5.0, 15.0, 25.0, 30.0, 60.0];
    for name in ALL {
        let caps = data(name);
        for &(w, h) in &sizes {
            for &fps in &rates {
                let want = watch(w, h, fps);
                let c = choose(&caps, &want).unwrap();
                assert!(
                    offers(&caps, &c.mode),
                    "{name} {w}x{h}@{fps}: {:?} not offered",
                    c.mode
                );
                assert!(c.mode.fourcc.preference().is_some());
                let reach = |m: &Mode| m.interval.is_none_or(|i| i.fps() >= fps * 0.95);
                let covers = |m: &Mode| m.width >= w && m.height >= h;
                // candidates: every discrete size at its every listed rate
                for f in caps.iter().filter(|f| f.fourcc.preference().is_some()) {
                    for s in &f.sizes {
                        let scenesay::capture::negotiate::Sizes::Discrete { width, height } =
                            s.sizes
                        else {
                            continue;
                        };
                        for i in &s.intervals {
                            let scenesay::capture::negotiate::Intervals::Discrete(iv) = *i else {
                                continue;
                            };
                            let other = Mode {
                                fourcc: f.fourcc,
                                width,
                                height,
                                interval: Some(iv),
                            };
                            if reach(&other) && covers(&other) {
                                assert!(
                                    reach(&c.mode) && covers(&c.mode),
                                    "{name} {w}x{h}@{fps}: {other} was better than {}",
                                    c.mode
                                );
                                assert!(
                                    c.mode.pixels() <= other.pixels(),
                                    "{name} {w}x{h}@{fps}: {other} is smaller than {}",
                                    c.mode
                                );
                            }
                        }
                    }
                }
            }
        }
        let s = choose(&caps, &still()).unwrap();
        assert!(offers(&caps, &s.mode), "{name}: still {:?}", s.mode);
    }
}

#[test]
fn a_mode_the_driver_changed_is_told_apart() {
    let asked = mode(FourCc::MJPG, 640, 480, 1, 30);
    assert_eq!(mismatch(&asked, &asked), None);
    let got = mode(FourCc::YUYV, 640, 480, 1, 30);
    assert_eq!(
        mismatch(&asked, &got).unwrap(),
        "format YUYV instead of MJPEG"
    );
    let got = mode(FourCc::MJPG, 1280, 720, 1001, 30000);
    // 29.97 is within 5 % of 30: not a difference
    assert_eq!(
        mismatch(&asked, &got).unwrap(),
        "size 1280x720 instead of 640x480"
    );
    let got = mode(FourCc::MJPG, 640, 480, 1, 15);
    assert_eq!(mismatch(&asked, &got).unwrap(), "15 fps instead of 30");
}

#[test]
fn the_check_lists_the_formats_and_the_modes_with_why() {
    let info = camera::CameraInfo {
        path: PathBuf::from("/dev/video0"),
        card: "HD Pro Webcam C920".into(),
        driver: "uvcvideo".into(),
        bus: "usb-0000:00:14.0-1".into(),
        caps: data("c920.txt"),
    };
    let cfg = CaptureConfig::default();
    let lines = camera::report_lines(&info, &cfg);
    assert_eq!(
        lines[0],
        "/dev/video0: HD Pro Webcam C920 (uvcvideo, usb-0000:00:14.0-1)"
    );
    assert!(
        lines[1].starts_with("  YUYV (YUYV 4:2:2): 160x90, "),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains("2304x1536 (19 sizes), up to 30 fps"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("H264") && lines[2].ends_with("not decodable, not used"),
        "{}",
        lines[2]
    );
    assert!(
        lines[4].starts_with("  watch: MJPEG 640x480 at 15 fps: the size asked for"),
        "{}",
        lines[4]
    );
    assert!(
        lines[5].starts_with("  still (detail, read): YUYV 2304x1536 at 2 fps"),
        "{}",
        lines[5]
    );
    let off = CaptureConfig {
        still: false,
        ..Default::default()
    };
    let lines = camera::report_lines(&info, &off);
    assert!(lines[5].contains("off"), "{}", lines[5]);
    // a metadata node
    let meta = camera::CameraInfo {
        caps: vec![],
        ..info
    };
    let lines = camera::report_lines(&meta, &cfg);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].ends_with("metadata node), not used"),
        "{}",
        lines[0]
    );
    // stepwise sizes are named as ranges
    let pi = camera::summarize_format(&data("pi_stepwise.txt")[3]);
    assert_eq!(
        pi,
        "JPEG (JFIF JPEG, compressed): 32x32 to 3280x2464 in steps of 2/2, up to 90 fps"
    );
}

#[test]
fn the_watch_asks_the_camera_for_at_least_15_fps() {
    let cfg = CaptureConfig::default();
    assert_eq!(cfg.fps, 2.0);
    let w = camera::watch_want(&cfg);
    assert_eq!((w.width, w.height, w.fps), (640, 480, 15.0));
    let fast = CaptureConfig {
        fps: 25.0,
        ..Default::default()
    };
    assert_eq!(camera::watch_want(&fast).fps, 25.0);
}

// ---- decoding ----

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter()
        .zip(b)
        .all(|(&x, y)| (x as i32 - y as i32).abs() <= 2)
}

#[test]
fn yuyv_decodes_to_the_bt601_colours() {
    // two pixels a row, 2 rows, a stride of 8 bytes (4 padding): white|black, red|red
    let data = [
        235, 128, 16, 128, 0, 0, 0, 0, // white, black
        81, 90, 81, 240, 9, 9, 9, 9, // red, red
    ];
    let l = Layout {
        fourcc: FourCc::YUYV,
        width: 2,
        height: 2,
        stride: 8,
    };
    let img = decode::decode(&data, &l).unwrap();
    assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(img.get_pixel(1, 0).0, [0, 0, 0]);
    assert!(
        near(img.get_pixel(0, 1).0, [255, 0, 0]),
        "{:?}",
        img.get_pixel(0, 1)
    );
    assert_eq!(img.get_pixel(0, 1), img.get_pixel(1, 1));
    let e = decode::decode(&data[..10], &l).unwrap_err();
    assert_eq!(
        e.to_string(),
        "YUYV 2x2: the buffer holds 10 bytes, 12 are needed"
    );
}

#[test]
fn nv12_shares_one_chroma_pair_among_four_pixels() {
    // 4x2: luma plane (2 rows of 4), then one row of 2 Cb/Cr pairs
    let data = [
        235, 235, 16, 16, //
        235, 235, 16, 16, //
        128, 128, 90, 240, // grey chroma | red chroma
    ];
    let img = decode::nv12(&data, &Layout::new(FourCc::NV12, 4, 2)).unwrap();
    for y in 0..2 {
        assert_eq!(img.get_pixel(0, y).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(1, y).0, [255, 255, 255]);
    }
    // Y=16 with red chroma: a dark red
    let p = img.get_pixel(2, 0).0;
    assert!(p[0] > 150 && p[1] == 0 && p[2] == 0, "{p:?}");
    assert!(decode::nv12(&data[..10], &Layout::new(FourCc::NV12, 4, 2)).is_err());
}

#[test]
fn grey_becomes_grey_pixels() {
    let data = [0, 128, 255, 7, /* pad */ 1, 2, 3, 4, 5, 6];
    let l = Layout {
        fourcc: FourCc::GREY,
        width: 3,
        height: 2,
        stride: 5,
    };
    let img = decode::decode(&data[..8], &l).unwrap();
    assert_eq!(img.get_pixel(1, 0).0, [128, 128, 128]);
    assert_eq!(img.get_pixel(2, 0).0, [255, 255, 255]);
    assert_eq!(img.get_pixel(0, 1).0, [2, 2, 2]);
    assert!(decode::decode(&data[..7], &l).is_err());
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            Rgb([200, 30, 30])
        } else {
            Rgb([20, 40, 220])
        }
    });
    let mut out = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .unwrap();
    out
}

#[test]
fn mjpeg_is_decoded_and_a_cut_off_or_foreign_buffer_is_refused() {
    let mut buf = jpeg(64, 48);
    let l = Layout::new(FourCc::MJPG, 64, 48);
    let img = decode::decode(&buf, &l).unwrap();
    assert_eq!(img.dimensions(), (64, 48));
    let left = img.get_pixel(8, 24).0;
    assert!(left[0] > 170 && left[2] < 80, "{left:?}");
    assert!(
        img.get_pixel(56, 24).0[2] > 190,
        "{:?}",
        img.get_pixel(56, 24)
    );
    // the padding cameras add after the picture is fine
    buf.extend_from_slice(&[0; 300]);
    assert!(decode::decode(&buf, &l).is_ok());
    // cut off in the middle (a USB hiccup)
    let cut = &buf[..buf.len() / 2];
    let e = decode::decode(cut, &l).unwrap_err();
    assert!(e.to_string().contains("cut off"), "{e}");
    let e = decode::decode(&[1, 2, 3, 4, 5], &l).unwrap_err();
    assert!(e.to_string().contains("not a JPEG"), "{e}");
    // a picture of another size than the mode
    let e = decode::decode(&buf, &Layout::new(FourCc::MJPG, 640, 480)).unwrap_err();
    assert!(e.to_string().contains("not 640x480"), "{e}");
    let e = decode::decode(&[], &l).unwrap_err();
    assert!(e.to_string().contains("empty buffer"), "{e}");
    let e = decode::decode(&buf, &Layout::new(FourCc::H264, 64, 48)).unwrap_err();
    assert!(e.to_string().contains("not decoded"), "{e}");
}

#[test]
fn a_corrupt_jpeg_body_is_an_error_or_a_picture_never_a_crash() {
    let buf = jpeg(64, 48);
    let l = Layout::new(FourCc::MJPG, 64, 48);
    // scramble the entropy-coded data between the headers and the end marker
    for seed in 0..20u32 {
        let mut b = buf.clone();
        let n = b.len();
        for k in 0..40 {
            let i = (n / 2 + (seed as usize * 131 + k * 17) % (n / 3)).min(n - 3);
            b[i] = (seed * 7 + k as u32) as u8;
        }
        if let Ok(img) = decode::decode(&b, &l) {
            assert_eq!(img.dimensions(), (64, 48));
        }
    }
}

// ---- bad frames and outages, as transcripts ----

#[test]
fn bad_frames_are_skipped_and_counted_until_too_many_come_in_a_row() {
    let mut b = BadFrames::new(3);
    let mut said = vec![];
    for e in ["bad", "bad", "good", "bad", "bad", "bad", "good", "bad"] {
        match e {
            "good" => {
                b.good();
                said.push("frame".to_string())
            }
            _ => said.push(match b.bad("cut off") {
                BadStep::Skip => "skip".into(),
                BadStep::Fail(m) => m,
            }),
        }
    }
    assert_eq!(
        said,
        [
            "skip",
            "skip",
            "frame",
            "skip",
            "skip",
            "3 frames in a row could not be decoded (the last: cut off)",
            "frame",
            "skip"
        ]
    );
    assert_eq!(b.total(), 6);
    assert_eq!(b.take_new(), 6);
    assert_eq!(b.take_new(), 0);
}

#[test]
fn an_outage_is_announced_once_and_its_end_once() {
    let mut o = Outage::new();
    let mut transcript = vec![];
    let events = [
        "fail:no such device",
        "fail:no such device",
        // opens, then fails at its first frame: still the same outage
        "fail:cannot read a frame",
        "fail:cannot read a frame",
        "frame",
        "frame",
        "fail:unplugged",
        "frame",
    ];
    for e in events {
        if let Some(m) = e.strip_prefix("fail:") {
            let s = o.failed(m);
            transcript.push(format!(
                "{} {:?} retry {} s",
                match s.notice {
                    Some(Notice::Outage) => "SAY not available",
                    Some(Notice::Back) => "SAY back?!",
                    None => "quiet",
                },
                s.log,
                s.retry_in.as_secs()
            ));
        } else {
            transcript.push(match o.frame() {
                Some(Notice::Back) => "SAY working again".into(),
                Some(Notice::Outage) => "SAY outage?!".into(),
                None => "frame".into(),
            });
        }
    }
    assert_eq!(
        transcript,
        [
            "SAY not available Warn retry 1 s",
            "quiet Debug retry 2 s",
            "quiet Warn retry 4 s",
            "quiet Debug retry 8 s",
            "SAY working again",
            "frame",
            "SAY not available Warn retry 1 s",
            "SAY working again",
        ]
    );
    assert!(!o.active());
    let _ = LogLevel::Warn;
}

// ---- the capture loop ----

fn notices(rx: &crossbeam_channel::Receiver<SpeechMsg>) -> Vec<String> {
    rx.try_iter()
        .filter_map(|m| match m {
            SpeechMsg::Text { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

/// Opens fine, fails at every frame.
struct FailsEveryFrame;

impl FrameSource for FailsEveryFrame {
    fn name(&self) -> String {
        "camera test".into()
    }
    fn live(&self) -> bool {
        true
    }
    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        Err(CaptureError::Camera {
            device: "test".into(),
            message: "cannot read a frame".into(),
        })
    }
}

#[test]
fn a_camera_that_opens_but_fails_every_frame_is_announced_once_not_every_retry() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(Stats::new(Clock::new()));
    let (slot, _frames) = frame_slot();
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let opens = Arc::new(Mutex::new(0u32));
    let o = opens.clone();
    let st = stats.clone();
    let h = std::thread::spawn(move || {
        run_capture(
            move || {
                *o.lock().unwrap() += 1;
                Ok(Box::new(FailsEveryFrame) as Box<dyn FrameSource>)
            },
            SourceKind::Camera,
            10.0,
            slot,
            Speaker::new(tx),
            st,
            stop,
        )
    });
    // opens at 0, 1, 3 s (backoff 1, 2): three opens, three failures
    std::thread::sleep(Duration::from_millis(3500));
    drop(stop_tx);
    h.join().unwrap();
    assert!(*opens.lock().unwrap() >= 3, "reopened with backoff");
    assert_eq!(notices(&rx), ["Camera not available. I will keep trying."]);
    assert!(
        stats.source_state().starts_with("retrying: "),
        "{}",
        stats.source_state()
    );
}

/// Every other buffer is bad; with a still mode that yields a large frame.
struct Wobbly {
    n: u32,
    bad: u64,
}

impl FrameSource for Wobbly {
    fn name(&self) -> String {
        "camera wobbly".into()
    }
    fn live(&self) -> bool {
        true
    }
    fn next_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        std::thread::sleep(Duration::from_millis(5));
        self.n += 1;
        // a real camera skips the bad buffer and reads the next one: two reads per frame
        self.bad += 1;
        Ok(Some(RgbImage::new(64, 48)))
    }
    fn has_still(&self) -> bool {
        true
    }
    fn still_frame(&mut self) -> Result<Option<RgbImage>, CaptureError> {
        Ok(Some(RgbImage::new(320, 240)))
    }
    fn take_bad_frames(&mut self) -> u64 {
        std::mem::take(&mut self.bad)
    }
}

#[test]
fn bad_frames_show_in_status_and_a_still_frame_is_served_between_frames() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(Stats::new(Clock::new()));
    let (slot, frames) = frame_slot();
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let st = stats.clone();
    let h = std::thread::spawn(move || {
        run_capture(
            || Ok(Box::new(Wobbly { n: 0, bad: 0 }) as Box<dyn FrameSource>),
            SourceKind::Camera,
            50.0,
            slot,
            Speaker::new(tx),
            st,
            stop,
        )
    });
    let first = frames.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first.image.dimensions(), (64, 48));
    let t = Instant::now();
    while !stats.stills.available() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let still = stats
        .stills
        .request(Duration::from_secs(5))
        .expect("a still frame");
    assert_eq!(still.dimensions(), (320, 240));
    for _ in 0..5 {
        frames.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    drop(stop_tx);
    h.join().unwrap();
    let bad = stats.report().frames.bad;
    assert!(bad >= 5, "{bad}");
    assert_eq!(bad, stats.bad_frames.load(Ordering::Relaxed));
    assert!(notices(&rx).is_empty(), "bad frames are not an outage");
    // after the source is gone, no still is offered and a request is answered at once
    assert!(!stats.stills.available());
    let t = Instant::now();
    assert!(stats.stills.request(Duration::from_secs(5)).is_none());
    assert!(t.elapsed() < Duration::from_secs(1));
}

// ---- the real V4L2 calls, up to the error this machine gives ----

#[test]
fn opening_a_camera_that_is_not_there_fails_clearly() {
    // index 63 exists on no machine that runs these tests
    let cfg = CaptureConfig {
        device: CameraDevice::Index(63),
        ..Default::default()
    };
    let e = Camera::open(&cfg, Arc::default())
        .err()
        .expect("no camera 63");
    let msg = e.to_string();
    assert!(msg.starts_with("camera /dev/video63: "), "{msg}");
    assert!(msg.contains("ls /dev/video*"), "{msg}");
    assert!(msg.contains("source = \"images\""), "{msg}");
}

#[test]
fn a_file_that_is_not_a_v4l2_device_is_refused_by_the_driver_call() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("video5");
    std::fs::write(&fake, b"not a camera").unwrap();
    let cfg = CaptureConfig {
        device: CameraDevice::Path(fake.display().to_string()),
        ..Default::default()
    };
    let e = Camera::open(&cfg, Arc::default())
        .err()
        .expect("not a camera");
    assert!(e.to_string().contains("not a V4L2 camera device"), "{e}");
    let e = camera::probe(Path::new("/dev/null")).unwrap_err();
    assert!(e.contains("not a V4L2 camera device"), "{e}");
}

#[test]
fn device_nodes_are_listed_in_number_order() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["video10", "video2", "video0", "videoX", "null"] {
        std::fs::write(dir.path().join(n), b"").unwrap();
    }
    let names: Vec<String> = camera::device_nodes(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["video0", "video2", "video10"]);
    assert!(camera::device_nodes(&dir.path().join("missing")).is_empty());
}

// ---- configuration ----

#[test]
fn the_camera_keys_are_checked() {
    let p = Path::new("config.toml");
    let c = Config::from_toml("[capture]\nstill = false\nbad_frames = 4\n", p).unwrap();
    assert!(!c.capture.still);
    assert_eq!(c.capture.bad_frames, 4);
    let e = Config::from_toml("[capture]\nbad_frames = 0\n", p).unwrap_err();
    assert!(e.to_string().contains("capture.bad_frames"), "{e}");
}

/// The README's example of `scenesay check` is what the check prints for that camera.
#[test]
fn the_readme_shows_what_the_check_prints() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("OK    cameras   ")
        .expect("the example in the README");
    let block = &readme[start..];
    let block = &block[..block.find("\n```").unwrap()];
    let info = camera::CameraInfo {
        path: PathBuf::from("/dev/video0"),
        card: "HD Pro Webcam C920".into(),
        driver: "uvcvideo".into(),
        bus: "usb-0000:00:14.0-1".into(),
        caps: data("c920.txt"),
    };
    let mut lines = camera::report_lines(&info, &CaptureConfig::default());
    lines[0].push_str(" ← [capture] device");
    let printed = format!("OK    cameras   {}", lines.join("\n                "));
    assert_eq!(block, printed);
}
