//! Bad input never crashes anything and always gets a clear answer. Property tests (proptest, on the
//! stable toolchain, in CI) of the same properties the cargo-fuzz targets in `fuzz/` check for
//! hours: the configuration parser on any text and on damaged copies of `config.toml`, the control
//! protocol's parser on any bytes and on JSON-like requests, a live control socket fed random
//! lines (oversize, invalid UTF-8, half-written JSON, unknown commands, blank lines) — one reply per
//! line, then still serving —, damaged and truncated checkpoints (`model.safetensors`), and damaged
//! pictures given to `scenesay describe`. `SCENESAY_FUZZ_CASES=N` runs N cases per parser property
//! instead of 256 (a long run without a nightly toolchain).

mod common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::copy_model;
use proptest::prelude::*;
use scenesay::config::{Config, ConfigError};
use scenesay::control::protocol::{parse_request, Response, MAX_LINE};
use scenesay::control::server::{self, Handles};
use scenesay::model::{FastVlm, Precision};
use scenesay::status::{Clock, Stats};
use scenesay::worker::Trigger;
use support::*;

fn cases(default: u32) -> u32 {
    std::env::var("SCENESAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config_path() -> &'static Path {
    Path::new("/etc/scenesay/config.toml")
}

/// The configuration parser's contract on any text.
fn check_config(text: &str) {
    match Config::from_toml(text, config_path()) {
        Ok(c) => assert!(c.validate().is_ok(), "accepted but invalid: {c:?}"),
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.contains("/etc/scenesay/config.toml"), "{shown}");
            if let ConfigError::Invalid { problems, .. } = &e {
                assert!(!problems.is_empty());
                let lines = text.lines().count().max(1);
                for p in problems {
                    assert!(p.line <= lines + 1, "line {} of {lines}: {shown}", p.line);
                    assert!(!p.message.trim().is_empty(), "{shown}");
                }
            }
        }
    }
}

fn documented_config() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| std::fs::read_to_string(repo().join("config.toml")).unwrap())
}

/// The request parser's contract on any bytes.
fn check_request(bytes: &[u8]) {
    match parse_request(bytes) {
        Ok(req) => {
            let line = serde_json::to_string(&req).unwrap();
            assert_eq!(parse_request(line.as_bytes()), Ok(req));
        }
        Err(e) => {
            let r: Response = e.into();
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert!(matches!(r, Response::Error { .. }));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn config_parser_survives_any_text(text in "\\PC*") {
        check_config(&text);
    }

    #[test]
    fn config_parser_survives_tomlish_text(
        lines in prop::collection::vec(
            prop_oneof![
                "\\[[a-z_.]{0,12}\\]",
                "[a-z_]{1,16} = (\"[^\"\\n]{0,20}\"|-?[0-9]{1,12}(\\.[0-9]{1,4})?|true|false|\\[\\]|\\{\\})",
                "[a-z_.]{1,20} ?=? ?[^\\n]{0,20}",
                "#[^\\n]{0,30}",
            ],
            0..20,
        )
    ) {
        check_config(&lines.join("\n"));
    }

    #[test]
    fn config_parser_survives_damaged_copies_of_the_documented_file(
        cut in 0usize..10_000,
        len in 0usize..200,
        insert in "\\PC{0,40}",
    ) {
        let text = documented_config();
        let mut at = cut % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + len).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let damaged = format!("{}{insert}{}", &text[..at], &text[end..]);
        check_config(&damaged);
    }

    #[test]
    fn request_parser_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_request(&bytes);
    }

    #[test]
    fn request_parser_survives_jsonish_requests(
        cmd in prop_oneof![
            Just("describe".to_string()), Just("ask".to_string()), Just("status".to_string()),
            Just("stop".to_string()), Just("pause".to_string()), "[a-z]{0,10}",
        ],
        fields in prop::collection::vec(
            ("[a-z]{1,9}", prop_oneof![
                Just("true".to_string()), Just("null".to_string()), "-?[0-9]{1,20}",
                "\"[^\"\\\\]{0,20}\"", Just("[]".to_string()), Just("{}".to_string()),
            ]),
            0..4,
        ),
        cut in prop::option::of(0usize..120),
    ) {
        let mut line = format!("{{\"cmd\":\"{cmd}\"");
        for (k, v) in &fields {
            line.push_str(&format!(",\"{k}\":{v}"));
        }
        line.push('}');
        // sometimes half-written
        let bytes = match cut {
            Some(c) => &line.as_bytes()[..c.min(line.len())],
            None => line.as_bytes(),
        };
        check_request(bytes);
    }
}

/// A control server whose stand-in worker accepts every trigger.
struct Server {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        make_private(dir.path());
        let path = dir.path().join("scenesay.sock");
        let listener = server::bind(&path).unwrap();
        let (triggers, rx) = crossbeam_channel::bounded::<Trigger>(8);
        let (shutdown, shutdown_rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            // a `stop` line must not stop this shared server: swallow the requests
            for _ in shutdown_rx {}
        });
        std::thread::spawn(move || {
            for t in rx {
                let reply = match t {
                    Trigger::Detail { reply }
                    | Trigger::Ask { reply, .. }
                    | Trigger::Repeat { reply }
                    | Trigger::Changed { reply }
                    | Trigger::Read { reply }
                    | Trigger::Pause { reply }
                    | Trigger::Resume { reply }
                    | Trigger::Watch { reply, .. }
                    | Trigger::Watches { reply, .. }
                    | Trigger::Unwatch { reply, .. }
                    | Trigger::Recall { reply, .. }
                    | Trigger::Forget { reply, .. }
                    | Trigger::NewConversation { reply }
                    | Trigger::Mode { reply, .. } => reply,
                    Trigger::TogglePause | Trigger::Session(_) => None,
                };
                if let Some(r) = reply {
                    let _ = r.send(Response::accepted("done"));
                }
            }
        });
        let handles = Handles {
            triggers,
            stats: Arc::new(Stats::new(Clock::new())),
            shutdown,
            speaker: scenesay::speech::service::Speaker::new(crossbeam_channel::unbounded().0),
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        std::mem::forget(stop); // serve for the whole test run
        let p = path.clone();
        std::thread::spawn(move || server::serve(listener, p, handles, stop_rx).unwrap());
        Server { path, _dir: dir }
    })
}

/// One random line (without its newline).
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..120),
        2 => prop_oneof![
            Just(b"{\"cmd\":\"status\"}".to_vec()),
            Just(b"{\"cmd\":\"describe\"}".to_vec()),
            Just(b"{\"cmd\":\"ask\",\"question\":\"Why?\"}".to_vec()),
            Just(b"{\"cmd\":\"dance\"}".to_vec()),
            Just(b"{\"cmd\":\"status\"".to_vec()),
            Just(b"{\"cmd\":\"st\xffatus\"}".to_vec()),
            Just(b"   ".to_vec()),
            Just(b"\r".to_vec()),
            Just(Vec::new()),
        ],
        1 => (MAX_LINE - 2..MAX_LINE + 3000).prop_map(|n| vec![b'a'; n]),
    ]
}

fn blank(l: &[u8]) -> bool {
    l.iter().all(u8::is_ascii_whitespace)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48).min(2000)))]

    #[test]
    fn the_control_socket_answers_each_line_once_and_stays_up(
        lines in prop::collection::vec(line(), 1..12)
    ) {
        let s = server();
        let c = UnixStream::connect(&s.path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut all = vec![];
        for l in &lines {
            all.extend_from_slice(l);
            all.push(b'\n');
        }
        let writer = {
            let mut w = c.try_clone().unwrap();
            std::thread::spawn(move || w.write_all(&all))
        };
        let want = lines.iter().filter(|l| !blank(l)).count();
        let mut r = BufReader::new(&c);
        for i in 0..want {
            let mut reply = String::new();
            r.read_line(&mut reply).unwrap();
            let v: Response = serde_json::from_str(&reply)
                .unwrap_or_else(|e| panic!("reply {i} {reply:?}: {e}"));
            let _ = v;
        }
        writer.join().unwrap().unwrap();
        // nothing more: one reply per line
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut extra = String::new();
        prop_assert!(r.read_line(&mut extra).is_err() || extra.is_empty(), "extra reply {extra:?}");
        drop(c);
        // still serving
        let mut fresh = UnixStream::connect(&s.path).unwrap();
        fresh.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        fresh.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&fresh).read_line(&mut reply).unwrap();
        prop_assert!(reply.starts_with("{\"reply\":\"status\""), "{reply}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A checkpoint cut short anywhere, or with its header damaged, is refused with an error that
    /// names the file — never a crash.
    #[test]
    fn damaged_safetensors_are_clear_errors(
        cut in prop::option::of(0.0f64..1.0),
        flips in prop::collection::vec((0usize..4096, any::<u8>()), 0..4),
    ) {
        let d = copy_model("apple");
        let p = d.path().join("model.safetensors");
        let mut bytes = std::fs::read(&p).unwrap();
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (at, b) in &flips {
            let at = at % header;
            bytes[at] ^= b | 1;
        }
        let truncated = cut.map(|c| (bytes.len() as f64 * c) as usize);
        if let Some(n) = truncated {
            bytes.truncate(n);
        }
        std::fs::write(&p, &bytes).unwrap();
        let r = FastVlm::load(d.path(), Precision::F32);
        if truncated.is_some() || !flips.is_empty() {
            // a damaged header can still parse (a flipped letter in a dtype name …): then the
            // tensors it describes must not match, or the load fails on them
            if let Err(e) = r {
                let msg = format!("{e:#}");
                prop_assert!(
                    msg.contains("model.safetensors") || msg.contains("config.json"),
                    "{msg}"
                );
            } else {
                prop_assert!(truncated.is_none(), "a truncated checkpoint loaded");
            }
        }
    }
}

/// A minimal PNG whose header claims `w`×`h` pixels (a decompression-bomb shape).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for b in data {
            c ^= *b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = vec![];
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn damaged_pictures_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture_image("landscape_640x480.png")).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.png", vec![]),
        ("truncated.png", good[..good.len() / 3].to_vec()),
        ("header-only.png", good[..40].to_vec()),
        (
            "garbage.jpg",
            b"\xff\xd8\xff\xe0 definitely not a jpeg".to_vec(),
        ),
        ("text.png", b"hello".to_vec()),
        ("bomb.png", png_claiming(60_000, 60_000)),
    ];
    for (name, bytes) in &files {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_scenesay"))
            .args([
                "describe",
                "--max-tokens",
                "2",
                "--resolution",
                "256",
                "--model",
            ])
            .arg(tiny_model())
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(&format!("error: {}: ", p.display())),
            "{name}: the file is named: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}
