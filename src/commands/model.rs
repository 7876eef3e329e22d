//! `scenesay model fetch` (download a FastVLM checkpoint into the Hugging Face cache) and
//! `scenesay model list` (what is available locally).

use std::path::Path;

use crate::exit::{self, WithExit};
use crate::model_store::{self, FetchOptions, StoreError, DEFAULT_REPO, KNOWN_REPOS};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Download a FastVLM checkpoint into the Hugging Face cache.
    ///
    /// The cache is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. A progress bar
    /// shows each file. Run it again after an interruption: finished files are kept and a partial
    /// file resumes where it stopped. Afterwards any command finds the
    /// model by its repository id (`--model apple/FastVLM-1.5B`), and apple/FastVLM-0.5B is used when
    /// no model is named. Set HF_ENDPOINT for a mirror, HF_TOKEN for a gated repository.
    Fetch(FetchArgs),
    /// Show the FastVLM checkpoints available locally.
    ///
    /// Lists those in the Hugging Face cache (complete or not, with what is missing), the one named
    /// by $SCENESAY_MODEL, the configuration's `[model] path`, and which model a command uses when
    /// none is named.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Configuration file whose `[model] path` to show. Default: the one `scenesay run` uses
    /// ($XDG_CONFIG_HOME/scenesay/config.toml, then /etc/scenesay/config.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Repository id: apple/FastVLM-0.5B, apple/FastVLM-1.5B, apple/FastVLM-7B, or any repository
    /// holding a FastVLM checkpoint in Apple's or the transformers layout.
    #[arg(value_name = "REPO", default_value = DEFAULT_REPO)]
    pub repo: String,

    /// Branch, tag or commit to download.
    #[arg(long, value_name = "R")]
    pub revision: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    match a.action {
        Action::Fetch(f) => fetch(f),
        Action::List(l) => match super::run::load_config(l.config.as_deref()) {
            Ok((config, _)) => list(config.model_dir().as_deref()),
            Err(e) => {
                // what is in the cache is still worth showing; then the configuration's error
                show(None, true)?;
                Err(e)
            }
        },
    }
}

fn fetch(a: FetchArgs) -> anyhow::Result<u8> {
    // `owner/name@rev` is accepted here too, like everywhere a repository id is
    let (repo, revision) = match model_store::parse_repo_id(&a.repo) {
        Some(r) => (r.repo, a.revision.or(r.revision)),
        None => {
            return Err(StoreError::BadRepoId(a.repo)).exit_code(exit::USAGE);
        }
    };
    let opts = FetchOptions::from_env(&repo, revision.as_deref());
    if !KNOWN_REPOS.contains(&repo.as_str()) {
        eprintln!("note: {repo} is not one of the released FastVLM checkpoints ({}); it is checked after its config.json arrives", KNOWN_REPOS.join(", "));
    }
    eprintln!(
        "fetching {repo}{} from {} into {}",
        revision
            .as_deref()
            .map(|r| format!(" at {r}"))
            .unwrap_or_default(),
        opts.endpoint,
        opts.cache.display()
    );
    let code = |e: &StoreError| match e {
        StoreError::BadRepoId(_) | StoreError::RepoNotFound { .. } => exit::USAGE,
        StoreError::NotFastVlm { .. } => exit::FAILURE,
        _ => exit::MODEL_UNAVAILABLE,
    };
    let got = match model_store::fetch(&opts) {
        Ok(g) => g,
        Err(e) => {
            let c = code(&e);
            return Err(e).exit_code(c);
        }
    };
    if got.downloaded.is_empty() {
        eprintln!(
            "{repo} was already complete ({} files)",
            got.already_present.len()
        );
    } else {
        eprintln!(
            "downloaded {} file(s){}",
            got.downloaded.len(),
            if got.already_present.is_empty() {
                String::new()
            } else {
                format!(", {} already there", got.already_present.len())
            }
        );
    }
    let how = if repo == DEFAULT_REPO {
        "it is used when no --model is given".to_string()
    } else {
        format!("use it with --model {repo}")
    };
    eprintln!("{repo} is ready ({how})");
    // the directory on stdout, for scripts
    println!("{}", got.dir.display());
    Ok(exit::OK)
}

/// Prints the cached checkpoints, $SCENESAY_MODEL and `config_default` (the configuration's
/// `[model] path`), each with its state.
pub fn list(config_default: Option<&Path>) -> anyhow::Result<u8> {
    show(config_default, false)
}

/// [`list`]; `config_broken`: the configuration could not be read, so the default model is unknown
/// unless $SCENESAY_MODEL names one.
fn show(config_default: Option<&Path>, config_broken: bool) -> anyhow::Result<u8> {
    let cache = model_store::cache_dir();
    let found = model_store::list_cached(&cache);
    println!("model cache: {}", cache.display());
    if found.is_empty() {
        println!("  (no FastVLM checkpoints; `scenesay model fetch` downloads {DEFAULT_REPO})");
    }
    for m in &found {
        let name = match m.refs.as_slice() {
            [] => format!("{}@{}", m.repo, m.commit),
            refs if refs.iter().any(|r| r == "main") => m.repo.clone(),
            refs => format!("{}@{}", m.repo, refs[0]),
        };
        match &m.status {
            Ok(info) => println!(
                "  {name:<28} {:>8}  {} layout, {}  {}",
                human_bytes(info.bytes),
                info.layout,
                size_name(info.hidden_size),
                m.dir.display()
            ),
            Err(missing) => println!(
                "  {name:<28} incomplete (missing {}; `scenesay model fetch {}` finishes it)  {}",
                missing.join(", "),
                m.repo,
                m.dir.display()
            ),
        }
    }
    let env = std::env::var_os("SCENESAY_MODEL")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string_lossy().into_owned());
    let mut others: Vec<(&str, String)> = vec![];
    if let Some(v) = &env {
        others.push(("SCENESAY_MODEL", v.clone()));
    }
    if let Some(p) = config_default {
        others.push(("[model] path", p.display().to_string()));
    }
    for (what, v) in others {
        let state = if Path::new(&v).is_dir() {
            match model_store::check_checkpoint(Path::new(&v)) {
                Ok(info) => format!(
                    "{}, {} layout, {}",
                    human_bytes(info.bytes),
                    info.layout,
                    size_name(info.hidden_size)
                ),
                Err(missing) => format!("incomplete: missing {}", missing.join(", ")),
            }
        } else {
            match model_store::resolve_model_in(&cache, Some(&v), None) {
                Ok(dir) => format!("in the cache: {}", dir.display()),
                Err(_) => "not found".into(),
            }
        };
        println!("{what}: {v} ({state})");
    }
    if config_broken {
        println!("[model] path: unknown (the configuration is invalid, see below)");
    }
    match model_store::resolve_model_in(&cache, env.as_deref(), config_default) {
        _ if config_broken && env.is_none() => {
            println!("used when no --model is given: unknown until the configuration is fixed")
        }
        Ok(d) => println!("used when no --model is given: {}", d.display()),
        Err(_) => println!("used when no --model is given: none yet"),
    }
    Ok(exit::OK)
}

/// The released size a hidden width belongs to.
fn size_name(hidden: usize) -> String {
    match hidden {
        896 => "0.5B".into(),
        1536 => "1.5B".into(),
        3584 => "7B".into(),
        h => format!("hidden size {h}"),
    }
}

fn human_bytes(b: u64) -> String {
    indicatif::HumanBytes(b).to_string()
}
