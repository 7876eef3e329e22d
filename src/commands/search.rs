//! `scenesay search`: which photos show QUERY? One yes/no question per photo, answered from the
//! model's next-token logits (one prefill, no text generation), at low resolution by default.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::model_args::ModelArgs;
use crate::exit::{self, WithExit};
use crate::jobs::inputs;
use crate::jobs::prefetch::{Prefetcher, Prepared};
use crate::jobs::progress;
use crate::jobs::resume::JsonLines;
use crate::jobs::yesno::{AnswerTokens, YesNo};
use crate::model::prompt::PromptIds;
use crate::model::FastVlm;

/// The question asked about every photo; `{query}` is replaced by QUERY.
pub const DEFAULT_QUESTION: &str = "Does this photo show {query}? Answer yes or no.";

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  scenesay search \"a beach\" ~/Pictures\n  \
    scenesay search --threshold 0.8 --json \"a dog\" ~/Pictures > dogs.jsonl")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Square side photos are resized to, a multiple of 64: 256 (16 image tokens) is quick and
    /// enough to tell what a photo shows; 512 or 1024 look closer, several times slower.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub resolution: u32,

    /// List photos whose score is at least this (0 to 1; 0.5 = the model leans to yes).
    #[arg(long, default_value_t = 0.5, value_name = "S")]
    pub threshold: f64,

    /// Print one JSON object per photo, as each is scored (path, score, p_yes, p_no, match,
    /// timings; or path and error), instead of the sorted list of matches.
    #[arg(long)]
    pub json: bool,

    /// The question asked about each photo; {query} stands for QUERY.
    #[arg(long, default_value = DEFAULT_QUESTION, value_name = "TEXT")]
    pub question: String,

    /// Photos read, decoded and resized ahead of the model, in parallel (see `scenesay batch
    /// --help`; at 256 px the file work is a large share of the time). 0 decodes on the model's thread.
    #[arg(long, short = 'j', default_value_t = 1, value_name = "N")]
    pub jobs: usize,

    /// What to look for, in words: "a beach", "my red bicycle", "people smiling".
    #[arg(value_name = "QUERY")]
    pub query: String,

    /// Photos, and folders to search (recursively; by file extension and by content).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Scored {
    path: String,
    #[serde(flatten)]
    answer: YesNo,
    #[serde(rename = "match")]
    matched: bool,
    timings: SearchTimings,
}

#[derive(Serialize)]
struct SearchTimings {
    image_ms: f64,
    vision_ms: f64,
    prefill_ms: f64,
}

#[derive(Serialize)]
struct Failed {
    path: String,
    error: String,
}

/// Asks the question about one prepared photo: encode, splice, one prefill, read the yes/no mass.
fn ask(
    model: &mut FastVlm,
    prompt: &PromptIds,
    answers: &AnswerTokens,
    p: &Prepared,
    resolution: u32,
) -> anyhow::Result<(YesNo, SearchTimings)> {
    let t0 = Instant::now();
    let pixels = model.preprocess(&p.square, resolution)?;
    let enc = model.encode_pixels(&pixels)?;
    let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let answer = model.yes_no_projected(prompt, answers, &enc.projected)?;
    let prefill_ms = t1.elapsed().as_secs_f64() * 1e3;
    Ok((
        answer,
        SearchTimings {
            image_ms: p.image_ms,
            vision_ms,
            prefill_ms,
        },
    ))
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    if !(0.0..=1.0).contains(&a.threshold) {
        return Err(anyhow::anyhow!(
            "--threshold {} is outside 0..1",
            a.threshold
        ))
        .exit_code(exit::USAGE);
    }
    if a.query.trim().is_empty() {
        return Err(anyhow::anyhow!(
            "QUERY is empty: say what to look for, e.g. \"a beach\""
        ))
        .exit_code(exit::USAGE);
    }
    if !a.question.contains("{query}") {
        return Err(anyhow::anyhow!(
            "--question must contain {{query}} (where QUERY goes)"
        ))
        .exit_code(exit::USAGE);
    }
    let dir = a.model.resolve()?;
    let found = inputs::collect(&a.paths);
    if found.images.is_empty() && found.errors.is_empty() {
        return Err(anyhow::anyhow!(
            "no photos found in {} ({} other file(s) ignored)",
            a.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            found.skipped
        ))
        .exit_code(exit::NO_INPUT);
    }
    let mut model = a.model.load_from(&dir)?;
    model
        .check_resolution(a.resolution)
        .exit_code(exit::USAGE)?;
    let tok = model
        .tokenizer()
        .with_context(|| {
            format!(
                "{} has no tokenizer: cannot ask questions",
                model.dir.display()
            )
        })
        .exit_code(exit::MODEL_UNAVAILABLE)?;
    let answers = AnswerTokens::from_encoder(|w| tok.encode(w))
        .with_context(|| format!("tokenizer of {}", model.dir.display()))
        .exit_code(exit::MODEL_UNAVAILABLE)?;
    let question = a.question.replace("{query}", a.query.trim());
    let prompt = model.prompt_ids(&question)?;
    tracing::info!(
        "asking \"{question}\"; yes tokens {:?}, no tokens {:?}",
        answers.yes,
        answers.no
    );

    let mut out = JsonLines::stdout();
    let mut failed = 0usize;
    for e in &found.errors {
        failed += 1;
        eprintln!("error: {}: {}", e.path.display(), e.error);
        if a.json {
            out.write(&Failed {
                path: e.path.display().to_string(),
                error: e.error.clone(),
            })?;
        }
    }
    let cancel = crate::signals::interrupt_flag();
    let pb = progress::bar(found.images.len() as u64);
    let mut scored: Vec<(f64, PathBuf)> = vec![];
    let mut interrupted = false;
    for (path, prepared) in Prefetcher::new(found.images, a.resolution, a.jobs) {
        if cancel.is_set() {
            interrupted = true;
            break;
        }
        pb.set_message(progress::label(&path));
        let result = prepared.and_then(|p| {
            ask(&mut model, &prompt, &answers, &p, a.resolution)
                .with_context(|| format!("{}: scoring failed", path.display()))
        });
        match result {
            Ok((answer, timings)) => {
                let matched = answer.score >= a.threshold;
                if a.json {
                    let line = Scored {
                        path: path.display().to_string(),
                        answer,
                        matched,
                        timings,
                    };
                    pb.suspend(|| out.write(&line))?;
                }
                scored.push((answer.score, path));
            }
            Err(e) => {
                failed += 1;
                let line = Failed {
                    path: path.display().to_string(),
                    error: format!("{e:#}"),
                };
                pb.suspend(|| {
                    eprintln!("error: {e:#}");
                    if a.json {
                        out.write(&line)
                    } else {
                        Ok(())
                    }
                })?;
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut matches: Vec<&(f64, PathBuf)> =
        scored.iter().filter(|(s, _)| *s >= a.threshold).collect();
    if !a.json {
        matches.sort_by(|x, y| y.0.total_cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
        let mut text = String::new();
        for (s, p) in &matches {
            text.push_str(&format!("{s:.3}\t{}\n", p.display()));
        }
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        o.write_all(text.as_bytes())
            .and_then(|_| o.flush())
            .context("cannot write standard output")?;
    }
    eprintln!(
        "{} of {} photo(s) show \"{}\" (score ≥ {}){}",
        matches.len(),
        scored.len(),
        a.query.trim(),
        a.threshold,
        if failed > 0 {
            format!("; {failed} could not be read")
        } else {
            String::new()
        }
    );
    Ok(if interrupted {
        exit::INTERRUPTED
    } else if failed == 0 {
        exit::OK
    } else if scored.is_empty() {
        exit::FAILURE
    } else {
        exit::PARTIAL
    })
}
