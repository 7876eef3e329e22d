//! `scenesay batch`: describe every image under the given files and folders, one JSON line per
//! image as each finishes, resumable through `--out`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::model_args::ModelArgs;
use crate::describer::Timings;
use crate::exit::{self, WithExit};
use crate::jobs::inputs;
use crate::jobs::prefetch::Prefetcher;
use crate::jobs::progress;
use crate::jobs::resume::JsonLines;
use crate::model::{FastVlmConfig, GenerationParams};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  scenesay batch ~/Pictures/holiday --out holiday.jsonl\n  \
    (interrupt it and run the same command again: it continues where it stopped)"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// What to ask about each image.
    #[arg(long, default_value = "Describe the image.")]
    pub prompt: String,

    /// Square side images are resized to, a multiple of 64 (256 → 16 image tokens, fast; 1024 →
    /// 256, the detail the released models were trained at). Default: the model's native resolution.
    #[arg(long, value_name = "N")]
    pub resolution: Option<u32>,

    /// Most tokens to generate per image (greedy decoding).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,

    /// Images read, decoded and resized ahead of the model, in parallel, while it describes the
    /// current one. There is only ever one model in memory (it is 2.5 GB or more, and it already
    /// computes on every core, see --threads); this overlaps the file work with it. 0 decodes on the
    /// model's thread; raise it for folders of large photos on machines with many cores.
    #[arg(long, short = 'j', default_value_t = 1, value_name = "N")]
    pub jobs: usize,

    /// Append the JSON lines to this file instead of printing them. Re-running with the same file
    /// skips the images it already holds a description of (same prompt and resolution), so an
    /// interrupted batch resumes; images that failed are tried again.
    #[arg(long, value_name = "FILE.jsonl")]
    pub out: Option<PathBuf>,

    /// Image files, and folders to search for images (recursively; by file extension and by
    /// content; hidden files and folders are skipped).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// A described image.
#[derive(Serialize)]
struct Described<'a> {
    path: String,
    text: &'a str,
    prompt: &'a str,
    resolution: u32,
    width: u32,
    height: u32,
    tokens: usize,
    /// `end` (the model finished) or `max_tokens` (cut at --max-tokens).
    stop: &'static str,
    timings: BatchTimings<'a>,
}

#[derive(Serialize)]
struct BatchTimings<'a> {
    /// Reading, decoding and resizing the file (done ahead, off the model's thread).
    image_ms: f64,
    #[serde(flatten)]
    model: &'a Timings,
}

/// An image (or input path) that could not be described.
#[derive(Serialize)]
struct Failed {
    path: String,
    error: String,
}

fn key(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The images an existing output already describes with this prompt and resolution.
fn already_described(
    records: &[serde_json::Value],
    prompt: &str,
    resolution: u32,
) -> HashSet<PathBuf> {
    records
        .iter()
        .filter(|r| r.get("text").is_some_and(|t| t.is_string()) && r.get("error").is_none())
        .filter(|r| r.get("prompt").and_then(|p| p.as_str()) == Some(prompt))
        .filter(|r| r.get("resolution").and_then(|x| x.as_u64()) == Some(resolution as u64))
        .filter_map(|r| r.get("path").and_then(|p| p.as_str()))
        .map(|p| key(Path::new(p)))
        .collect()
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let params = GenerationParams {
        max_tokens: a.max_tokens,
        ..Default::default()
    };
    params.validate().exit_code(exit::USAGE)?;
    let dir = a.model.resolve()?;
    let resolution = match a.resolution {
        Some(r) => r,
        None => {
            FastVlmConfig::from_dir(&dir)
                .with_context(|| format!("cannot load the model in {}", dir.display()))
                .exit_code(exit::MODEL_UNAVAILABLE)?
                .native_resolution
        }
    };

    let found = inputs::collect(&a.paths);
    if found.images.is_empty() && found.errors.is_empty() {
        return Err(anyhow::anyhow!(
            "no images found in {} ({} other file(s) ignored)",
            a.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            found.skipped
        ))
        .exit_code(exit::NO_INPUT);
    }
    let (mut out, done) = match &a.out {
        Some(p) => {
            let (w, existing) = JsonLines::open(p).exit_code(exit::NO_INPUT)?;
            if let Some(t) = &existing.torn {
                eprintln!(
                    "note: removed an unfinished last line from {} ({} bytes)",
                    p.display(),
                    t.len()
                );
            }
            if !existing.bad_lines.is_empty() {
                eprintln!(
                    "note: {} line(s) of {} are not JSON and were ignored: {:?}",
                    existing.bad_lines.len(),
                    p.display(),
                    existing.bad_lines
                );
            }
            (
                w,
                already_described(&existing.records, &a.prompt, resolution),
            )
        }
        None => (JsonLines::stdout(), HashSet::new()),
    };
    let total = found.images.len();
    let todo: Vec<PathBuf> = found
        .images
        .into_iter()
        .filter(|p| !done.contains(&key(p)))
        .collect();
    let skipped_done = total - todo.len();
    if skipped_done > 0 {
        eprintln!(
            "{skipped_done} of {total} image(s) already described in {}: skipping them",
            a.out.as_deref().unwrap_or(Path::new("-")).display()
        );
    }
    if found.skipped > 0 {
        tracing::info!("{} non-image file(s) ignored", found.skipped);
    }

    let mut failed = 0usize;
    for e in &found.errors {
        failed += 1;
        eprintln!("error: {}: {}", e.path.display(), e.error);
        out.write(&Failed {
            path: e.path.display().to_string(),
            error: e.error.clone(),
        })?;
    }
    if todo.is_empty() {
        eprintln!("nothing left to describe");
        return Ok(if failed == 0 { exit::OK } else { exit::PARTIAL });
    }

    let mut model = a.model.load_from(&dir)?;
    model.check_resolution(resolution).exit_code(exit::USAGE)?;
    if model.tokenizer().is_none() {
        return Err(anyhow::anyhow!(
            "{} has no tokenizer (tokenizer.json, or vocab.json + merges.txt): cannot write text",
            model.dir.display()
        ))
        .exit_code(exit::MODEL_UNAVAILABLE);
    }
    let cancel = crate::signals::interrupt_flag();
    let pb = progress::bar(todo.len() as u64);
    let mut described = 0usize;
    let mut interrupted = false;
    for (path, prepared) in Prefetcher::new(todo, resolution, a.jobs) {
        if cancel.is_set() {
            interrupted = true;
            break;
        }
        pb.set_message(progress::label(&path));
        let result = prepared.and_then(|p| {
            let g = model
                .generate(
                    &p.square,
                    &a.prompt,
                    resolution,
                    &params,
                    &mut |_| {},
                    &|| cancel.is_set(),
                )
                .with_context(|| format!("{}: description failed", path.display()))?;
            Ok((p, g))
        });
        match result {
            Ok((_, g)) if g.cancelled => {
                interrupted = true; // not written: a re-run describes it again
                break;
            }
            Ok((p, g)) => {
                described += 1;
                let line = Described {
                    path: path.display().to_string(),
                    text: g.text.trim(),
                    prompt: &a.prompt,
                    resolution,
                    width: p.width,
                    height: p.height,
                    tokens: g.token_ids.len(),
                    stop: if g.stopped_on_eos {
                        "end"
                    } else {
                        "max_tokens"
                    },
                    timings: BatchTimings {
                        image_ms: p.image_ms,
                        model: &g.timings,
                    },
                };
                pb.suspend(|| out.write(&line))?;
            }
            Err(e) => {
                failed += 1;
                let line = Failed {
                    path: path.display().to_string(),
                    error: format!("{e:#}"),
                };
                pb.suspend(|| {
                    eprintln!("error: {e:#}");
                    out.write(&line)
                })?;
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    eprintln!(
        "described {described}, failed {failed}{}{}",
        if skipped_done > 0 {
            format!(", {skipped_done} already done")
        } else {
            String::new()
        },
        a.out
            .as_ref()
            .map(|p| format!("; results in {}", p.display()))
            .unwrap_or_default()
    );
    Ok(if interrupted {
        eprintln!("interrupted: run the same command again to continue");
        exit::INTERRUPTED
    } else if failed == 0 {
        exit::OK
    } else if described == 0 && skipped_done == 0 {
        exit::FAILURE
    } else {
        exit::PARTIAL
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn done_means_described_with_the_same_prompt_and_resolution() {
        let recs = [
            json!({"path": "/x/a.jpg", "text": "a cat", "prompt": "P", "resolution": 256}),
            json!({"path": "/x/b.jpg", "error": "not a readable image"}),
            json!({"path": "/x/c.jpg", "text": "a dog", "prompt": "other", "resolution": 256}),
            json!({"path": "/x/d.jpg", "text": "a hat", "prompt": "P", "resolution": 1024}),
            json!({"text": "no path"}),
            json!("just a string"),
        ];
        let done = already_described(&recs, "P", 256);
        assert_eq!(done, HashSet::from([PathBuf::from("/x/a.jpg")]));
    }
}
