//! Where FastVLM checkpoints live: the standard Hugging Face hub cache (download with `model fetch`,
//! inventory with `model list`), and the rule that turns a `--model` value into a directory.
//!
//! The cache is the one every Hugging Face tool shares: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. A repository `owner/name`
//! lives in `models--owner--name/`, with `refs/<revision>` holding a commit hash and
//! `snapshots/<commit>/` holding the files (symbolic links into `blobs/`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo, RepoType};

use crate::model::FastVlmConfig;

/// The checkpoint `model fetch` downloads and commands use when no model is named.
pub const DEFAULT_REPO: &str = "apple/FastVLM-0.5B";

/// The released FastVLM checkpoints (any repository in either layout works; these are the usual ones).
pub const KNOWN_REPOS: [&str; 3] = [
    "apple/FastVLM-0.5B",
    "apple/FastVLM-1.5B",
    "apple/FastVLM-7B",
];

/// The hub used when `$HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Failures finding or fetching a checkpoint. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "`{given}` is neither a model directory nor a repository in the model cache {}; \
         download it with `scenesay model fetch{}`, or pass --model DIR with a FastVLM checkpoint \
         directory (see `scenesay model list`)",
        cache.display(),
        if parse_repo_id(given).is_some() { format!(" {given}") } else { String::new() }
    )]
    NotFound { given: String, cache: PathBuf },

    #[error(
        "no model given and {DEFAULT_REPO} is not in the model cache {}: run `scenesay model fetch` \
         to download it, or pass --model DIR / set SCENESAY_MODEL to a FastVLM checkpoint directory",
        cache.display()
    )]
    NoModel { cache: PathBuf },

    #[error(
        "{repo} in the model cache ({}) is incomplete: missing {}; run `scenesay model fetch {repo}` \
         to finish the download",
        dir.display(),
        missing.join(", ")
    )]
    Incomplete {
        repo: String,
        dir: PathBuf,
        missing: Vec<String>,
    },

    #[error(
        "`{0}` is not a repository id: expected OWNER/NAME, e.g. {DEFAULT_REPO} \
         (optionally OWNER/NAME@REVISION)"
    )]
    BadRepoId(String),

    #[error(
        "cannot reach the model hub at {endpoint} ({cause}).\n\
         To install {repo} without this machine downloading it: download the repository's files \
         elsewhere (config.json, the *.safetensors weights, the tokenizer files), copy the directory \
         here and either pass it with --model DIR (or SCENESAY_MODEL=DIR), or put it in the model \
         cache as\n  {}\nwith the file\n  {}\ncontaining the word `manual`; `scenesay model list` \
         then shows it",
        manual_dir.display(),
        manual_ref.display()
    )]
    Offline {
        endpoint: String,
        cause: String,
        repo: String,
        manual_dir: PathBuf,
        manual_ref: PathBuf,
    },

    #[error("{repo}{}: not found on {endpoint} (check the spelling, and the revision)",
        revision.as_ref().map(|r| format!(" at revision `{r}`")).unwrap_or_default())]
    RepoNotFound {
        repo: String,
        revision: Option<String>,
        endpoint: String,
    },

    #[error(
        "{repo}: {endpoint} refused access (HTTP {status}); if the repository is gated or \
         private, accept its terms on the hub and put an access token in $HF_TOKEN or {}",
        token_path.display()
    )]
    Unauthorized {
        repo: String,
        endpoint: String,
        status: u16,
        token_path: PathBuf,
    },

    #[error("{repo} is not a FastVLM checkpoint scenesay can run: {reason}")]
    NotFastVlm { repo: String, reason: String },

    #[error(
        "downloading {file} of {repo} failed: {cause}; run the same command again to resume \
         (completed files are kept, a partial file continues where it stopped)"
    )]
    Download {
        repo: String,
        file: String,
        cause: String,
    },
}

/// The Hugging Face home: `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else
/// `~/.cache/huggingface`.
pub fn hf_home() -> PathBuf {
    if let Some(h) = env_path("HF_HOME") {
        return h;
    }
    let cache = env_path("XDG_CACHE_HOME").unwrap_or_else(|| {
        env_path("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
    });
    cache.join("huggingface")
}

/// The hub cache directory: `$HF_HUB_CACHE`, else `hf_home()/hub`.
pub fn cache_dir() -> PathBuf {
    env_path("HF_HUB_CACHE").unwrap_or_else(|| hf_home().join("hub"))
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A repository id with an optional revision: `owner/name` or `owner/name@revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub repo: String,
    pub revision: Option<String>,
}

/// Parses `owner/name[@revision]`; `None` for anything else (paths, URLs, empty parts).
pub fn parse_repo_id(s: &str) -> Option<RepoRef> {
    let (repo, revision) = match s.split_once('@') {
        Some((r, rev)) if !rev.is_empty() && !rev.contains('@') => (r, Some(rev.to_string())),
        Some(_) => return None,
        None => (s, None),
    };
    let (owner, name) = repo.split_once('/')?;
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && !p.ends_with('.')
            && !p.contains("..")
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (part_ok(owner) && part_ok(name)).then(|| RepoRef {
        repo: repo.to_string(),
        revision,
    })
}

/// The cache folder of a model repository: `models--owner--name`.
pub fn repo_folder(cache: &Path, repo: &str) -> PathBuf {
    cache.join(Repo::new(repo.to_string(), RepoType::Model).folder_name())
}

/// The snapshot directory of `repo` at `revision` (default `main`) in the cache, if there is one:
/// `refs/<revision>` names the commit; a commit hash may also be given directly.
pub fn find_in_cache(cache: &Path, repo: &str, revision: Option<&str>) -> Option<PathBuf> {
    let folder = repo_folder(cache, repo);
    let rev = revision.unwrap_or("main");
    if let Ok(commit) = std::fs::read_to_string(folder.join("refs").join(rev)) {
        let dir = folder.join("snapshots").join(commit.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let direct = folder.join("snapshots").join(rev);
    direct.is_dir().then_some(direct)
}

/// What a complete checkpoint directory holds.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// `apple` or `hf`.
    pub layout: &'static str,
    /// Bytes of all files (through the cache's links).
    pub bytes: u64,
    /// LLM hidden size, which tells the released sizes apart (896 = 0.5B, 1536 = 1.5B, 3584 = 7B).
    pub hidden_size: usize,
}

/// Checks that `dir` holds a FastVLM checkpoint scenesay can load: a FastVLM `config.json`, every
/// weight file (a sharded index's shards included) and the tokenizer. `Err` lists what is missing or
/// wrong, one item each.
pub fn check_checkpoint(dir: &Path) -> Result<CheckpointInfo, Vec<String>> {
    let mut problems = vec![];
    let config = match FastVlmConfig::from_dir(dir) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(if dir.join("config.json").exists() {
                format!("a FastVLM config.json ({e})")
            } else {
                "config.json".to_string()
            });
            None
        }
    };
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        match shard_names(&index) {
            Ok(shards) => {
                for s in shards {
                    if !dir.join(&s).is_file() {
                        problems.push(s);
                    }
                }
            }
            Err(e) => problems.push(format!("a readable model.safetensors.index.json ({e})")),
        }
    } else if !dir.join("model.safetensors").is_file() {
        problems.push("model.safetensors".into());
    }
    if !dir.join("tokenizer.json").is_file() {
        for f in ["vocab.json", "merges.txt"] {
            if !dir.join(f).is_file() {
                problems.push(format!("{f} (or tokenizer.json)"));
            }
        }
    }
    match config {
        Some(c) if problems.is_empty() => Ok(CheckpointInfo {
            layout: match c.layout {
                crate::model::Layout::Apple => "apple",
                crate::model::Layout::Hf => "hf",
            },
            bytes: dir_bytes(dir),
            hidden_size: c.text.hidden_size,
        }),
        _ => Err(problems),
    }
}

/// The shard file names a `model.safetensors.index.json` refers to, sorted, without duplicates.
fn shard_names(index: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("no `weight_map`")?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// What the weight files of a checkpoint hold, according to their headers.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsInfo {
    /// Weight files (1, or the number of shards).
    pub files: usize,
    pub bytes: u64,
    pub tensors: usize,
}

/// Checks the weight files without loading them: every shard a `model.safetensors.index.json` lists
/// is present, and each file is a safetensors file exactly as long as its header says, with every
/// tensor's byte range matching its dtype and shape (a shorter file is a cut-off download).
/// Loading the model ([`crate::model::FastVlm::load`]) then checks every tensor's name and shape
/// against `config.json`. `Err` lists the problems, each naming its file.
pub fn check_weights(dir: &Path) -> Result<WeightsInfo, Vec<String>> {
    let index = dir.join("model.safetensors.index.json");
    let names = if index.exists() {
        shard_names(&index).map_err(|e| vec![format!("model.safetensors.index.json: {e}")])?
    } else {
        vec!["model.safetensors".to_string()]
    };
    let mut info = WeightsInfo {
        files: names.len(),
        bytes: 0,
        tensors: 0,
    };
    let mut problems = vec![];
    for name in &names {
        match safetensors_file(&dir.join(name)) {
            Ok((bytes, tensors)) => {
                info.bytes += bytes;
                info.tensors += tensors;
            }
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(info)
    } else {
        Err(problems)
    }
}

/// Bytes per element of a safetensors dtype.
fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads a safetensors header and checks the file against it: (file size, number of tensors).
fn safetensors_file(path: &Path) -> Result<(u64, usize), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| format!("{size} bytes: too short to be a safetensors file"))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100_000_000 || 8 + header_len > size {
        return Err(format!(
            "not a safetensors file, or cut off in its header ({size} bytes, header of {header_len})"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("its header is not valid JSON ({e}): a damaged file"))?;
    let map = v.as_object().ok_or("its header is not a JSON object")?;
    let (mut data_end, mut tensors) = (0u64, 0usize);
    for (name, t) in map.iter().filter(|(k, _)| *k != "__metadata__") {
        let range: Vec<u64> = t["data_offsets"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        let [start, end] = range[..] else {
            return Err(format!("tensor `{name}` has no data offsets"));
        };
        let numel = t["shape"]
            .as_array()
            .map(|a| a.iter().map(|d| d.as_u64().unwrap_or(0)).product::<u64>())
            .unwrap_or(0);
        let dtype = t["dtype"].as_str().unwrap_or("?");
        if let Some(b) = dtype_bytes(dtype) {
            if end < start || end - start != numel * b {
                return Err(format!(
                    "tensor `{name}` ({dtype}, {numel} elements) has {} bytes of data",
                    end.saturating_sub(start)
                ));
            }
        }
        data_end = data_end.max(end);
        tensors += 1;
    }
    let expected = 8 + header_len + data_end;
    if size < expected {
        return Err(format!(
            "cut off: {size} of {expected} bytes (an interrupted download or copy)"
        ));
    }
    if size > expected {
        return Err(format!(
            "{size} bytes where its header accounts for {expected}: a damaged file"
        ));
    }
    Ok((size, tensors))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::metadata(e.path()).ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The model directory to use, in this order: `cli` (from `--model` or `$SCENESAY_MODEL`) as an
/// existing path; else `cli` as `owner/name[@revision]` found in the cache; else the configuration's
/// `[model] path`; else [`DEFAULT_REPO`] if it is in the cache.
pub fn resolve_model(
    cli: Option<&str>,
    config_default: Option<&Path>,
) -> Result<PathBuf, StoreError> {
    resolve_model_in(&cache_dir(), cli, config_default)
}

/// [`resolve_model`] against a given cache directory.
pub fn resolve_model_in(
    cache: &Path,
    cli: Option<&str>,
    config_default: Option<&Path>,
) -> Result<PathBuf, StoreError> {
    if let Some(given) = cli.filter(|s| !s.is_empty()) {
        let as_path = Path::new(given);
        if as_path.exists() {
            return Ok(as_path.to_path_buf());
        }
        if let Some(r) = parse_repo_id(given) {
            if let Some(dir) = find_in_cache(cache, &r.repo, r.revision.as_deref()) {
                return checked_snapshot(&r.repo, dir);
            }
        }
        return Err(StoreError::NotFound {
            given: given.to_string(),
            cache: cache.to_path_buf(),
        });
    }
    if let Some(p) = config_default {
        // a missing directory is reported by the loader, naming the path
        return Ok(p.to_path_buf());
    }
    match find_in_cache(cache, DEFAULT_REPO, None) {
        Some(dir) => checked_snapshot(DEFAULT_REPO, dir),
        None => Err(StoreError::NoModel {
            cache: cache.to_path_buf(),
        }),
    }
}

/// A cache snapshot is only handed out when complete, so an interrupted download is reported as
/// such instead of as a confusing load error.
fn checked_snapshot(repo: &str, dir: PathBuf) -> Result<PathBuf, StoreError> {
    match check_checkpoint(&dir) {
        Ok(_) => Ok(dir),
        Err(missing) => Err(StoreError::Incomplete {
            repo: repo.to_string(),
            dir,
            missing,
        }),
    }
}

/// One FastVLM-looking snapshot in the cache.
#[derive(Debug, Clone)]
pub struct CachedModel {
    pub repo: String,
    /// The refs (`main`, tags, ...) that point at this snapshot.
    pub refs: Vec<String>,
    /// The snapshot's commit (its folder name).
    pub commit: String,
    pub dir: PathBuf,
    /// Complete, or what is missing.
    pub status: Result<CheckpointInfo, Vec<String>>,
}

/// Every snapshot in `cache` whose `config.json` is a FastVLM configuration (or that lacks its
/// config but belongs to a repository with "fastvlm" in its name: an interrupted download).
pub fn list_cached(cache: &Path) -> Vec<CachedModel> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(cache) else {
        return out;
    };
    let mut folders: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    folders.sort();
    for folder in folders {
        let Some(name) = folder.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("models--") else {
            continue;
        };
        let repo = rest.replacen("--", "/", 1);
        let refs = read_refs(&folder.join("refs"));
        let Ok(snaps) = std::fs::read_dir(folder.join("snapshots")) else {
            continue;
        };
        let mut snaps: Vec<PathBuf> = snaps.flatten().map(|e| e.path()).collect();
        snaps.sort();
        for dir in snaps {
            let commit = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let has_config = dir.join("config.json").is_file();
            let fastvlm_config = has_config && FastVlmConfig::from_dir(&dir).is_ok();
            let fastvlm_name = repo.to_ascii_lowercase().contains("fastvlm");
            if !(fastvlm_config || (!has_config && fastvlm_name)) {
                continue;
            }
            out.push(CachedModel {
                repo: repo.clone(),
                refs: refs
                    .iter()
                    .filter(|(_, c)| *c == commit)
                    .map(|(r, _)| r.clone())
                    .collect(),
                commit,
                status: check_checkpoint(&dir),
                dir,
            });
        }
    }
    out
}

/// `(ref name, commit)` pairs under `refs/` (ref names may contain `/`, e.g. `refs/pr/1`).
fn read_refs(refs: &Path) -> Vec<(String, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if let Ok(c) = std::fs::read_to_string(&p) {
                let name = p
                    .strip_prefix(base)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                out.push((name, c.trim().to_string()));
            }
        }
    }
    let mut out = vec![];
    walk(refs, refs, &mut out);
    out.sort();
    out
}

/// The files of a repository that make up a checkpoint, in download order: `config.json` first (so
/// a repository that is not FastVLM is refused before gigabytes move), then the weights, then the
/// tokenizer and the rest. Only top-level files; PyTorch pickles, images and docs are left out.
pub fn select_files(siblings: &[String]) -> Vec<String> {
    const SMALL: [&str; 12] = [
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "chat_template.json",
        "processor_config.json",
    ];
    let top: Vec<&String> = siblings.iter().filter(|f| !f.contains('/')).collect();
    let rank = |f: &str| -> Option<usize> {
        if f == "config.json" {
            Some(0)
        } else if f == "model.safetensors.index.json" {
            Some(1)
        } else if f.ends_with(".safetensors") {
            Some(2)
        } else if SMALL.contains(&f) || f == "preprocessor_config.json" {
            Some(3)
        } else {
            None
        }
    };
    let mut files: Vec<(usize, String)> = top
        .into_iter()
        .filter_map(|f| rank(f).map(|r| (r, f.clone())))
        .collect();
    files.sort();
    files.into_iter().map(|(_, f)| f).collect()
}

/// How `fetch` reaches the hub.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub repo: String,
    pub revision: Option<String>,
    pub cache: PathBuf,
    pub endpoint: String,
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` is set: do not try the network at all.
    pub offline: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// How often a broken file transfer is retried (from where it stopped) before giving up.
    pub retries: usize,
}

impl FetchOptions {
    /// Options from the environment (`HF_ENDPOINT`, `HF_TOKEN` or the token file, `HF_HUB_OFFLINE`,
    /// the cache variables), for `repo` at `revision`.
    pub fn from_env(repo: &str, revision: Option<&str>) -> Self {
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| {
                std::fs::read_to_string(hf_home().join("token"))
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
            .unwrap_or(false);
        Self {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
            cache: cache_dir(),
            endpoint: std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|e| !e.trim().is_empty())
                .map(|e| e.trim().trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            token,
            offline,
            progress: std::io::stderr().is_terminal(),
            retries: 5,
        }
    }

    fn offline_error(&self, cause: impl Into<String>) -> StoreError {
        let folder = repo_folder(&self.cache, &self.repo);
        let rev = self.revision.as_deref().unwrap_or("main");
        StoreError::Offline {
            endpoint: self.endpoint.clone(),
            cause: cause.into(),
            repo: self.repo.clone(),
            manual_dir: folder.join("snapshots").join("manual"),
            manual_ref: folder.join("refs").join(rev),
        }
    }

    fn api_error(&self, file: Option<&str>, e: ApiError) -> StoreError {
        if let ApiError::RequestError(err) = &e {
            match err.as_ref() {
                ureq::Error::Transport(t) => {
                    if file.is_none() {
                        return self.offline_error(t.to_string());
                    }
                }
                // a proxy or gateway that cannot reach the hub
                ureq::Error::Status(s @ (502..=504), _) if file.is_none() => {
                    return self.offline_error(format!("HTTP {s} from the way to the hub"));
                }
                ureq::Error::Status(404, _) if file.is_none() => {
                    return StoreError::RepoNotFound {
                        repo: self.repo.clone(),
                        revision: self.revision.clone(),
                        endpoint: self.endpoint.clone(),
                    }
                }
                ureq::Error::Status(s @ (401 | 403), _) => {
                    return StoreError::Unauthorized {
                        repo: self.repo.clone(),
                        endpoint: self.endpoint.clone(),
                        status: *s,
                        token_path: hf_home().join("token"),
                    }
                }
                ureq::Error::Status(..) => {}
            }
        }
        StoreError::Download {
            repo: self.repo.clone(),
            file: file.unwrap_or("the file list").to_string(),
            cause: e.to_string(),
        }
    }
}

/// What `fetch` did.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub dir: PathBuf,
    pub commit: String,
    pub downloaded: Vec<String>,
    pub already_present: Vec<String>,
}

/// Downloads the checkpoint files of `opts.repo` into the cache (resuming partial files, skipping
/// complete ones) and returns its snapshot directory. Nothing is written to the cache before the hub
/// has answered, so an offline attempt leaves no trace.
pub fn fetch(opts: &FetchOptions) -> Result<Fetched, StoreError> {
    if parse_repo_id(&opts.repo).is_none() {
        return Err(StoreError::BadRepoId(opts.repo.clone()));
    }
    if opts.offline {
        return Err(opts.offline_error("HF_HUB_OFFLINE is set"));
    }
    let api = ApiBuilder::from_cache(Cache::new(opts.cache.clone()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        .with_progress(false)
        .with_retries(opts.retries)
        .with_user_agent("scenesay", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| opts.api_error(None, e))?;
    let repo = Repo::with_revision(
        opts.repo.clone(),
        RepoType::Model,
        opts.revision.clone().unwrap_or_else(|| "main".into()),
    );
    let api_repo = api.repo(repo);
    let info = api_repo.info().map_err(|e| opts.api_error(None, e))?;
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = select_files(&siblings);
    if !files.iter().any(|f| f == "config.json") {
        return Err(StoreError::NotFastVlm {
            repo: opts.repo.clone(),
            reason: "the repository has no config.json".into(),
        });
    }
    if !files.iter().any(|f| f.ends_with(".safetensors")) {
        return Err(StoreError::NotFastVlm {
            repo: opts.repo.clone(),
            reason: "the repository has no *.safetensors weights (scenesay reads safetensors only)"
                .into(),
        });
    }
    let dir = repo_folder(&opts.cache, &opts.repo)
        .join("snapshots")
        .join(&info.sha);
    let mut fetched = Fetched {
        dir: dir.clone(),
        commit: info.sha.clone(),
        downloaded: vec![],
        already_present: vec![],
    };
    let n = files.len();
    for (i, file) in files.iter().enumerate() {
        if dir.join(file).is_file() {
            fetched.already_present.push(file.clone());
        } else {
            let bar = FileBar::new(opts.progress, format!("[{}/{n}] {file}", i + 1));
            api_repo
                .download_with_progress(file, bar)
                .map_err(|e| opts.api_error(Some(file), e))?;
            fetched.downloaded.push(file.clone());
        }
        if file == "config.json" {
            if let Err(e) = FastVlmConfig::from_dir(&dir) {
                return Err(StoreError::NotFastVlm {
                    repo: opts.repo.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }
    if let Some(problems) = check_checkpoint(&dir).err() {
        return Err(StoreError::Incomplete {
            repo: opts.repo.clone(),
            dir,
            missing: problems,
        });
    }
    Ok(fetched)
}

/// A per-file progress bar on stderr (hidden when stderr is not a terminal).
struct FileBar {
    bar: indicatif::ProgressBar,
}

impl FileBar {
    fn new(visible: bool, label: String) -> Self {
        let bar = if visible {
            indicatif::ProgressBar::new(0)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label);
        Self { bar }
    }
}

impl Progress for FileBar {
    // The hub client calls `init` again when it resumes (then `update` with the bytes already on
    // disk), so `init` restarts the count instead of adding to it.
    fn init(&mut self, size: usize, _filename: &str) {
        self.bar.set_length(size as u64);
        self.bar.set_position(0);
        self.bar.reset_eta();
    }

    fn update(&mut self, size: usize) {
        self.bar.inc(size as u64);
    }

    fn finish(&mut self) {
        self.bar.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(dir: &Path, name: &str) -> u64 {
        let t = candle_core::Tensor::arange(0f32, 24., &candle_core::Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let u = candle_core::Tensor::zeros(5, candle_core::DType::BF16, &candle_core::Device::Cpu)
            .unwrap();
        let p = dir.join(name);
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("a.weight".to_string(), t), ("b".to_string(), u)]),
            &p,
        )
        .unwrap();
        std::fs::metadata(&p).unwrap().len()
    }

    #[test]
    fn weights_are_checked_against_their_headers() {
        let d = tempfile::tempdir().unwrap();
        let size = weights(d.path(), "model.safetensors");
        let info = check_weights(d.path()).unwrap();
        assert_eq!(
            info,
            WeightsInfo {
                files: 1,
                bytes: size,
                tensors: 2
            }
        );
        // cut off, as an interrupted download leaves it
        let p = d.path().join("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let e = check_weights(d.path()).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("model.safetensors: cut off:")
                && e[0].contains(&format!("of {size} bytes")),
            "{e:?}"
        );
        std::fs::write(&p, [bytes.clone(), vec![0]].concat()).unwrap();
        assert!(check_weights(d.path()).unwrap_err()[0].contains("damaged"));
        std::fs::write(&p, b"<html>rate limited</html>").unwrap();
        assert!(check_weights(d.path()).unwrap_err()[0].contains("not a safetensors file"));
        std::fs::remove_file(&p).unwrap();
        assert!(check_weights(d.path()).unwrap_err()[0].contains("cannot open"));
    }

    #[test]
    fn every_shard_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let a = weights(d.path(), "model-00001-of-00002.safetensors");
        let b = weights(d.path(), "model-00002-of-00002.safetensors");
        std::fs::write(
            d.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let info = check_weights(d.path()).unwrap();
        assert_eq!((info.files, info.bytes, info.tensors), (2, a + b, 4));
        std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
        let e = check_weights(d.path()).unwrap_err();
        assert!(
            e[0].starts_with("model-00002-of-00002.safetensors: cannot open"),
            "{e:?}"
        );
    }

    #[test]
    fn repo_ids() {
        assert_eq!(
            parse_repo_id("apple/FastVLM-0.5B"),
            Some(RepoRef {
                repo: "apple/FastVLM-0.5B".into(),
                revision: None
            })
        );
        assert_eq!(
            parse_repo_id("apple/FastVLM-7B@v1.0").unwrap().revision,
            Some("v1.0".into())
        );
        for bad in [
            "",
            "apple",
            "/abs/path",
            "./rel/dir",
            "a/b/c",
            "apple/",
            "../x",
            "a/..",
            "a/b@",
            "http://x/y",
            "a b/c",
        ] {
            assert_eq!(parse_repo_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_selection_orders_config_then_weights_and_drops_the_rest() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let apple = s(&[
            ".gitattributes",
            "README.md",
            "acc_vs_latency_qwen-2.png",
            "added_tokens.json",
            "merges.txt",
            "model.safetensors",
            "config.json",
            "vocab.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json",
            "training_args.bin",
            "llava_qwen.py",
        ]);
        assert_eq!(
            select_files(&apple),
            s(&[
                "config.json",
                "model.safetensors",
                "added_tokens.json",
                "generation_config.json",
                "merges.txt",
                "special_tokens_map.json",
                "tokenizer_config.json",
                "vocab.json",
            ])
        );
        let sharded = s(&[
            "model-00002-of-00002.safetensors",
            "pytorch_model.bin",
            "model.safetensors.index.json",
            "coreml/model.safetensors",
            "model-00001-of-00002.safetensors",
            "config.json",
            "tokenizer.json",
        ]);
        assert_eq!(
            select_files(&sharded),
            s(&[
                "config.json",
                "model.safetensors.index.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "tokenizer.json",
            ])
        );
    }

    fn fixture(layout: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/tiny-fastvlm-{layout}"))
    }

    /// Puts a copy of a fixture checkpoint in `cache` as `repo` at `commit`, the way the hub
    /// client lays it out (blobs + links), with `refs/main`.
    fn install(cache: &Path, repo: &str, commit: &str, layout: &str, skip: &[&str]) -> PathBuf {
        let folder = repo_folder(cache, repo);
        let snap = folder.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(folder.join("blobs")).unwrap();
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs/main"), commit).unwrap();
        for e in std::fs::read_dir(fixture(layout)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if skip.contains(&name.as_str()) {
                continue;
            }
            let blob = folder.join("blobs").join(format!("{commit}-{name}"));
            std::fs::copy(e.path(), &blob).unwrap();
            std::os::unix::fs::symlink(&blob, snap.join(&name)).unwrap();
        }
        snap
    }

    #[test]
    fn resolution_order_path_then_cache_then_config_then_default() {
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        let cfg = PathBuf::from("/configured/model");
        // an existing path wins
        let p = fixture("hf");
        assert_eq!(resolve_model_in(c, p.to_str(), Some(&cfg)).unwrap(), p);
        // a repo id not in the cache: a clear error naming fetch
        let e = resolve_model_in(c, Some("apple/FastVLM-1.5B"), Some(&cfg)).unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("scenesay model fetch apple/FastVLM-1.5B"),
            "{e}"
        );
        // nothing given, no config, empty cache
        let e = resolve_model_in(c, None, None).unwrap_err();
        assert!(matches!(e, StoreError::NoModel { .. }), "{e}");
        // the config default
        assert_eq!(resolve_model_in(c, None, Some(&cfg)).unwrap(), cfg);
        // the repo id once it is in the cache (at main, or at a named commit)
        let snap = install(c, "apple/FastVLM-1.5B", "abc123", "apple", &[]);
        assert_eq!(
            resolve_model_in(c, Some("apple/FastVLM-1.5B"), Some(&cfg)).unwrap(),
            snap
        );
        assert_eq!(
            resolve_model_in(c, Some("apple/FastVLM-1.5B@abc123"), None).unwrap(),
            snap
        );
        assert!(resolve_model_in(c, Some("apple/FastVLM-1.5B@other"), None).is_err());
        // the default repo is the last resort
        let snap0 = install(c, DEFAULT_REPO, "def456", "hf", &[]);
        assert_eq!(resolve_model_in(c, None, None).unwrap(), snap0);
        assert_eq!(resolve_model_in(c, None, Some(&cfg)).unwrap(), cfg);
    }

    #[test]
    fn incomplete_snapshots_are_reported_not_loaded() {
        let cache = tempfile::tempdir().unwrap();
        install(
            cache.path(),
            DEFAULT_REPO,
            "c0ffee",
            "apple",
            &["model.safetensors", "merges.txt"],
        );
        let e = resolve_model_in(cache.path(), Some(DEFAULT_REPO), None).unwrap_err();
        match &e {
            StoreError::Incomplete { missing, .. } => {
                assert!(
                    missing.iter().any(|m| m == "model.safetensors"),
                    "{missing:?}"
                );
                assert!(
                    missing.iter().any(|m| m.starts_with("merges.txt")),
                    "{missing:?}"
                );
            }
            other => panic!("{other}"),
        }
        assert!(e
            .to_string()
            .contains("scenesay model fetch apple/FastVLM-0.5B"));
    }

    #[test]
    fn list_finds_fastvlm_snapshots_only() {
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        install(c, "apple/FastVLM-0.5B", "aaa", "apple", &[]);
        install(c, "someone/fastvlm-hf", "bbb", "hf", &["tokenizer.json"]);
        // an unrelated model and a half-started FastVLM download
        let other = repo_folder(c, "org/bert").join("snapshots/ccc");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("config.json"), r#"{"model_type":"bert"}"#).unwrap();
        std::fs::create_dir_all(repo_folder(c, "apple/FastVLM-7B").join("snapshots/ddd")).unwrap();
        let list = list_cached(c);
        let names: Vec<_> = list
            .iter()
            .map(|m| (m.repo.as_str(), m.commit.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("apple/FastVLM-0.5B", "aaa"),
                ("apple/FastVLM-7B", "ddd"),
                ("someone/fastvlm-hf", "bbb")
            ]
        );
        let ok = list[0].status.as_ref().unwrap();
        assert_eq!(ok.layout, "apple");
        assert!(ok.bytes > 8_000_000);
        assert_eq!(list[0].refs, ["main"]);
        assert!(list[1].status.is_err());
        assert!(list[2].status.as_ref().unwrap_err()[0].contains("tokenizer.json"));
    }

    #[test]
    fn sharded_checkpoints_need_every_shard() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(fixture("hf").join(f), dir.path().join(f)).unwrap();
        }
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("model-00001-of-00002.safetensors"), b"x").unwrap();
        assert_eq!(
            check_checkpoint(dir.path()).unwrap_err(),
            ["model-00002-of-00002.safetensors"]
        );
        std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), b"x").unwrap();
        assert_eq!(check_checkpoint(dir.path()).unwrap().layout, "hf");
    }

    #[test]
    fn offline_fetch_writes_nothing() {
        let home = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            repo: DEFAULT_REPO.into(),
            revision: None,
            cache: home.path().join("hub"),
            // a closed port on the loopback interface: refused at once, never the outside network
            endpoint: "http://127.0.0.1:9".into(),
            token: None,
            offline: false,
            progress: false,
            retries: 0,
        };
        let e = fetch(&opts).unwrap_err();
        assert!(matches!(e, StoreError::Offline { .. }), "{e}");
        assert!(!home.path().join("hub").exists());
        let e = fetch(&FetchOptions {
            offline: true,
            ..opts.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("HF_HUB_OFFLINE"), "{e}");
        assert!(matches!(
            fetch(&FetchOptions {
                repo: "not a repo".into(),
                ..opts
            }),
            Err(StoreError::BadRepoId(_))
        ));
    }
}
