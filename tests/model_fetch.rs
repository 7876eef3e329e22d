//! `model fetch` against a small local stand-in for the Hugging Face hub (the same HTTP protocol
//! the hub client speaks: repository info, ranged file downloads with ETag and commit headers), so
//! downloading, the cache layout, file selection and resuming an interrupted file are tested
//! without the network.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use scenesay::model_store::{self, FetchOptions, StoreError};

const REPO: &str = "apple/FastVLM-0.5B";
const COMMIT: &str = "5f3e1d2c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e";

#[derive(Default)]
struct Hub {
    files: HashMap<String, Vec<u8>>,
    /// Transfers of this file stop after this many bytes (a dropped connection).
    cut: Option<(String, usize)>,
    /// (path, Range header) of every request.
    log: Vec<(String, String)>,
}

fn serve(hub: Arc<Mutex<Hub>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let hub = hub.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &hub);
            });
        }
    });
    format!("http://{addr}")
}

fn answer(mut s: TcpStream, hub: &Mutex<Hub>) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = String::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = v.trim().to_string();
            }
        }
    }
    let mut hub = hub.lock().unwrap();
    hub.log.push((path.clone(), range.clone()));
    let info = format!("/api/models/{REPO}/revision/main");
    let prefix = format!("/{REPO}/resolve/main/");
    if path == info {
        let mut names: Vec<&String> = hub.files.keys().collect();
        names.sort();
        let siblings: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({ "rfilename": n }))
            .collect();
        let body = serde_json::json!({ "sha": COMMIT, "siblings": siblings }).to_string();
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    let Some(data) = path
        .strip_prefix(&prefix)
        .and_then(|f| hub.files.get(f).map(|d| (f.to_string(), d.clone())))
    else {
        write!(
            s,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let (file, data) = data;
    let start: usize = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let end = if range.ends_with("-0") && start == 0 {
        1
    } else {
        data.len()
    };
    let mut body = data[start.min(data.len())..end].to_vec();
    let full_len = body.len();
    if let Some((f, n)) = &hub.cut {
        if *f == file && end > 1 {
            body.truncate(n.saturating_sub(start));
        }
    }
    write!(
        s,
        "HTTP/1.1 206 Partial Content\r\nETag: \"blob-{}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {full_len}\r\nConnection: close\r\n\r\n",
        file.replace('.', "-"),
        end - 1,
        data.len()
    )?;
    s.write_all(&body)?;
    s.flush()?;
    Ok(())
}

fn hub_with_fixture() -> Hub {
    let mut hub = Hub::default();
    for e in std::fs::read_dir(model_dir("apple")).unwrap() {
        let e = e.unwrap();
        hub.files.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    // files a real repository has that are not part of the checkpoint
    hub.files.insert("README.md".into(), b"# FastVLM".to_vec());
    hub.files
        .insert("acc_vs_latency.png".into(), vec![0x89; 64]);
    hub.files.insert("training_args.bin".into(), vec![0; 64]);
    hub
}

fn options(endpoint: String, cache: &Path) -> FetchOptions {
    FetchOptions {
        repo: REPO.into(),
        revision: None,
        cache: cache.to_path_buf(),
        endpoint,
        token: None,
        offline: false,
        progress: false,
        retries: 0,
    }
}

#[test]
fn fetch_downloads_into_the_cache_and_resumes_an_interrupted_file() {
    let hub = Arc::new(Mutex::new(hub_with_fixture()));
    let weights_len = hub.lock().unwrap().files["model.safetensors"].len();
    let half = weights_len / 2;
    hub.lock().unwrap().cut = Some(("model.safetensors".into(), half));
    let endpoint = serve(hub.clone());
    let cache = tempfile::tempdir().unwrap();

    // the connection drops in the middle of the weights
    let e = model_store::fetch(&options(endpoint.clone(), cache.path())).unwrap_err();
    assert!(
        matches!(e, StoreError::Download { ref file, .. } if file == "model.safetensors"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("run the same command again to resume"),
        "{e}"
    );
    // the interrupted checkpoint is not handed out as a model
    let r = model_store::resolve_model_in(cache.path(), Some(REPO), None);
    assert!(r.is_err(), "{r:?}");

    // the second attempt continues the file from where it stopped and skips finished files
    hub.lock().unwrap().cut = None;
    hub.lock().unwrap().log.clear();
    let got = model_store::fetch(&options(endpoint, cache.path())).unwrap();
    let log = hub.lock().unwrap().log.clone();
    let weights_requests: Vec<&String> = log
        .iter()
        .filter(|(p, _)| p.ends_with("/model.safetensors"))
        .map(|(_, r)| r)
        .collect();
    assert!(
        weights_requests.contains(&&format!("bytes={half}-")),
        "resumed at byte {half}: {weights_requests:?}"
    );
    assert!(
        !log.iter().any(|(p, _)| p.ends_with("/config.json")),
        "config.json was already complete: {log:?}"
    );
    assert_eq!(got.already_present, ["config.json"]);

    // the standard cache layout, with every checkpoint file identical and nothing else
    let folder = model_store::repo_folder(cache.path(), REPO);
    assert_eq!(got.dir, folder.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/main")).unwrap(),
        COMMIT
    );
    let mut names: Vec<String> = std::fs::read_dir(&got.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expect: Vec<String> = std::fs::read_dir(model_dir("apple"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expect.sort();
    assert_eq!(names, expect);
    for n in &names {
        assert_eq!(
            std::fs::read(got.dir.join(n)).unwrap(),
            std::fs::read(model_dir("apple").join(n)).unwrap(),
            "{n}"
        );
    }
    let partial: Vec<_> = std::fs::read_dir(folder.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");

    // and every command now finds it by name, or by default
    assert_eq!(
        model_store::resolve_model_in(cache.path(), Some(REPO), None).unwrap(),
        got.dir
    );
    assert_eq!(
        model_store::resolve_model_in(cache.path(), None, None).unwrap(),
        got.dir
    );
    let listed = model_store::list_cached(cache.path());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].refs, ["main"]);
    assert_eq!(listed[0].status.as_ref().unwrap().layout, "apple");
    scenesay::model::FastVlm::load(&got.dir, scenesay::model::Precision::F32).unwrap();
}

#[test]
fn fetch_refuses_what_is_not_a_fastvlm_checkpoint() {
    let mut hub = hub_with_fixture();
    hub.files
        .insert("config.json".into(), br#"{"model_type": "bert"}"#.to_vec());
    let endpoint = serve(Arc::new(Mutex::new(hub)));
    let cache = tempfile::tempdir().unwrap();
    let e = model_store::fetch(&options(endpoint.clone(), cache.path())).unwrap_err();
    assert!(matches!(e, StoreError::NotFastVlm { .. }), "{e}");
    assert!(e.to_string().contains("bert"), "{e}");
    // the weights were never requested
    let folder = model_store::repo_folder(cache.path(), REPO);
    let blobs: Vec<_> = std::fs::read_dir(folder.join("blobs"))
        .unwrap()
        .map(|e| std::fs::metadata(e.unwrap().path()).unwrap().len())
        .collect();
    assert!(blobs.iter().all(|&n| n < 1000), "{blobs:?}");

    let e = model_store::fetch(&FetchOptions {
        repo: "nobody/nothing".into(),
        ..options(endpoint, cache.path())
    })
    .unwrap_err();
    assert!(matches!(e, StoreError::RepoNotFound { .. }), "{e}");
}
