//! `scenesay bench`: times every stage of the model on one checkpoint — preprocessing, vision
//! encoder, projector, LLM prefill, time to first token, decode speed — and reports medians, the
//! encoder's achieved GFLOP/s and the peak resident memory. `--json` prints one object shaped like
//! the PyTorch reference timer's output so the two compare field by field.
//!
//! `--idle SECONDS` measures the daemon instead: see [`super::bench_idle`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::model_args::{open_image, ModelArgs};
use crate::exit::{self, WithExit};
use crate::model::prompt::PromptIds;
use crate::model::{vision, FastVlm, FeatureMap};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Square input sides to time, comma-separated (multiples of 64).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "256,512,1024",
        value_name = "R,R,…"
    )]
    pub resolutions: Vec<u32>,

    /// Timed runs per measurement (after one warm-up run); the report gives their median.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub runs: usize,

    /// Greedy tokens generated per decode measurement.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub new_tokens: usize,

    /// Image to use (default: a synthetic 640×480 gradient, the same as the reference timer's).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<PathBuf>,

    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Instead of timing the model's stages: run the daemon on a noisy static view for SECONDS
    /// (after its first narration), with the change gate on and then off, then change the view;
    /// print the processor share (percent of one core) and how long the change took to be
    /// narrated, side by side.
    #[arg(long, value_name = "SECONDS")]
    pub idle: Option<f64>,

    /// With --idle: frames per second of the view.
    #[arg(long, default_value_t = 2.0, value_name = "FPS")]
    pub fps: f64,

    /// With --idle: sensor-like noise on every frame, up to ± this many levels.
    #[arg(long, default_value_t = 8, value_name = "LEVELS")]
    pub noise: u8,
}

/// Median of a non-empty sample (mean of the two middle values for an even count).
pub fn median(xs: &[f64]) -> f64 {
    assert!(!xs.is_empty(), "median of nothing");
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The reference timer's synthetic image: a 640×480 gradient (R = x, G = y, B = (x + y) mod 256).
pub fn synthetic_image() -> image::RgbImage {
    image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([
            (x * 255 / 639) as u8,
            (y * 255 / 479) as u8,
            ((x + y) % 256) as u8,
        ])
    })
}

/// The reference timer's prompt shape without a tokenizer: 14 text tokens, the image, 11 more.
/// Ids are deterministic pseudo-random ordinary tokens (their values do not change the timing).
pub fn synthetic_prompt(vocab: usize, seed: u32) -> PromptIds {
    let limit = vocab.clamp(16, 151_646) as u32 - 8;
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s % limit
    };
    PromptIds {
        before: (0..14).map(|_| next()).collect(),
        after: (0..11).map(|_| next()).collect(),
    }
}

/// Medians (seconds) and raw samples of one resolution.
#[derive(Debug, Clone, Serialize)]
pub struct ResolutionReport {
    pub prompt: &'static str,
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    pub preprocess_s: f64,
    pub vision_s: f64,
    pub vision_gflop: f64,
    pub vision_gflop_per_s: f64,
    pub projector_s: f64,
    pub prefill_s: f64,
    pub ttft_s: f64,
    pub decode_new_tokens: usize,
    pub decode_s: f64,
    pub decode_tok_per_s: f64,
    pub preprocess_all_s: Vec<f64>,
    pub vision_all_s: Vec<f64>,
    pub projector_all_s: Vec<f64>,
    pub prefill_all_s: Vec<f64>,
    pub ttft_all_s: Vec<f64>,
    pub decode_all_s: Vec<f64>,
}

/// The whole report (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub engine: String,
    pub checkpoint: String,
    pub layout: crate::model::Layout,
    /// The requested LLM precision (`--dtype`).
    pub dtype: String,
    /// How the LLM's weights are held (e.g. bf16 storage with f32 arithmetic, or q8_0).
    pub llm_weights: String,
    pub threads: usize,
    pub runs: usize,
    pub load_s: f64,
    pub resolutions: BTreeMap<u32, ResolutionReport>,
    pub peak_rss_mb: f64,
}

/// Peak resident set size of this process so far, in MiB.
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return f64::NAN;
    }
    ru.ru_maxrss as f64 / 1024.0 // Linux reports KiB
}

/// Runs `f` once to warm up, then `runs` times; returns the durations in seconds.
fn sample<T>(
    runs: usize,
    progress: &ProgressBar,
    label: &str,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Vec<f64>> {
    progress.set_message(format!("{label} (warm-up)"));
    f()?;
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        progress.set_message(format!("{label} {}/{runs}", i + 1));
        let t = Instant::now();
        f()?;
        out.push(t.elapsed().as_secs_f64());
        progress.inc(1);
    }
    Ok(out)
}

fn argmax(logits: &Tensor) -> anyhow::Result<u32> {
    Ok(logits.argmax(0)?.to_scalar::<u32>()?)
}

/// Greedy decode of `n` tokens after a prefill of `embeds`; returns the seconds the `n` steps took.
fn decode(m: &mut FastVlm, embeds: &Tensor, n: usize) -> anyhow::Result<f64> {
    let h = m.prefill(embeds)?;
    let mut next = argmax(&m.last_logits(&h)?)?;
    let t = Instant::now();
    for _ in 0..n {
        let h = m.extend(&m.token_embeds(&[next])?)?;
        next = argmax(&m.last_logits(&h)?)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn bench_resolution(
    m: &mut FastVlm,
    img: &image::RgbImage,
    res: u32,
    a: &Args,
    progress: &ProgressBar,
) -> anyhow::Result<ResolutionReport> {
    let runs = a.runs;
    let (prompt, kind) = match m.tokenizer() {
        Some(_) => (m.prompt_ids("Describe the image.")?, "tokenizer"),
        None => (synthetic_prompt(m.config.text.vocab_size, res), "synthetic"),
    };
    let px = |s: &str| format!("{res} px: {s}");
    let pre = sample(runs, progress, &px("preprocess"), || {
        Ok(m.preprocess(img, res)?)
    })?;
    let pixels: FeatureMap = m.preprocess(img, res)?;
    let vis = sample(runs, progress, &px("vision encoder"), || {
        Ok(m.vision().forward_nhwc(&pixels, &mut |_, _| {})?)
    })?;
    let features = m.vision().forward_nhwc(&pixels, &mut |_, _| {})?;
    let image_tokens = features.hw();
    let tokens = m.tokens_tensor(features)?;
    let proj = sample(runs, progress, &px("projector"), || Ok(m.project(&tokens)?))?;
    let projected = m.project(&tokens)?;
    let embeds = m.input_embeds(&prompt, &projected)?;
    let prompt_tokens = embeds.dim(1)?;
    let prefill = sample(runs, progress, &px("prefill"), || {
        let h = m.prefill(&embeds)?;
        Ok(m.last_logits(&h)?)
    })?;
    let ttft = sample(runs, progress, &px("time to first token"), || {
        let enc = m.encode_pixels(&pixels)?;
        let e = m.input_embeds(&prompt, &enc.projected)?;
        let h = m.prefill(&e)?;
        Ok(m.last_logits(&h)?)
    })?;
    progress.set_message(px("decode (warm-up)"));
    decode(m, &embeds, a.new_tokens)?;
    let mut dec = Vec::with_capacity(runs);
    for i in 0..runs {
        progress.set_message(px(&format!("decode {}/{runs}", i + 1)));
        dec.push(decode(m, &embeds, a.new_tokens)?);
        progress.inc(1);
    }
    let gflop = vision::encoder_flops(&m.config.vision, res as usize, res as usize) / 1e9;
    let vision_s = median(&vis);
    let decode_s = median(&dec);
    Ok(ResolutionReport {
        prompt: kind,
        prompt_tokens,
        image_tokens,
        preprocess_s: median(&pre),
        vision_s,
        vision_gflop: gflop,
        vision_gflop_per_s: gflop / vision_s,
        projector_s: median(&proj),
        prefill_s: median(&prefill),
        ttft_s: median(&ttft),
        decode_new_tokens: a.new_tokens,
        decode_s,
        decode_tok_per_s: a.new_tokens as f64 / decode_s,
        preprocess_all_s: pre,
        vision_all_s: vis,
        projector_all_s: proj,
        prefill_all_s: prefill,
        ttft_all_s: ttft,
        decode_all_s: dec,
    })
}

fn print_table(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{} ({:?} layout), LLM {} (weights {}), {} threads, medians of {} runs, load {:.2} s",
        r.checkpoint, r.layout, r.dtype, r.llm_weights, r.threads, r.runs, r.load_s
    )?;
    writeln!(
        out,
        "{:>6} {:>7} {:>11} {:>11} {:>9} {:>11} {:>10} {:>10} {:>9}",
        "res",
        "tokens",
        "preprocess",
        "vision",
        "GFLOP/s",
        "projector",
        "prefill",
        "TTFT",
        "decode"
    )?;
    for (res, x) in &r.resolutions {
        writeln!(
            out,
            "{:>6} {:>7} {:>9.1}ms {:>10.3}s {:>9.1} {:>9.1}ms {:>9.3}s {:>9.3}s {:>5.1} t/s",
            res,
            x.prompt_tokens,
            x.preprocess_s * 1e3,
            x.vision_s,
            x.vision_gflop_per_s,
            x.projector_s * 1e3,
            x.prefill_s,
            x.ttft_s,
            x.decode_tok_per_s
        )?;
    }
    writeln!(out, "peak RSS {:.0} MiB", r.peak_rss_mb)
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    if let Some(idle_s) = a.idle {
        let mut base = crate::config::Config::default();
        base.model.dtype = a.model.precision();
        // a measurement: a screen that locks meanwhile must not pause it
        base.session.follow_logind = false;
        let dir = a.model.resolve()?;
        let b = super::bench_idle::IdleBench {
            idle_s,
            fps: a.fps,
            noise: a.noise,
            width: base.capture.width,
            height: base.capture.height,
        };
        let cfg = base.clone();
        return super::bench_idle::run(b, base, move || {
            Ok(Box::new(super::run::load_model(&dir, &cfg)?)
                as Box<dyn crate::describer::Describer>)
        });
    }
    if a.runs == 0 {
        return Err(
            exit::Exit::new(exit::USAGE, anyhow::anyhow!("--runs must be at least 1")).into(),
        );
    }
    if a.resolutions.is_empty() {
        return Err(exit::Exit::new(
            exit::USAGE,
            anyhow::anyhow!("--resolutions needs at least one size, e.g. 256,512,1024"),
        )
        .into());
    }
    let img = match &a.image {
        Some(p) => open_image(p).exit_code(exit::NO_INPUT)?,
        None => synthetic_image(),
    };
    let t = Instant::now();
    let mut m = a.model.load()?;
    let load_s = t.elapsed().as_secs_f64();
    for &r in &a.resolutions {
        m.check_resolution(r).exit_code(exit::USAGE)?;
    }
    let per_res = (5 * a.runs) as u64;
    let progress = ProgressBar::with_draw_target(
        Some(per_res * a.resolutions.len() as u64),
        ProgressDrawTarget::stderr(),
    );
    progress.set_style(
        ProgressStyle::with_template("bench [{bar:20}] {pos}/{len} {msg} ({elapsed})")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let mut resolutions = BTreeMap::new();
    for &res in &a.resolutions {
        let r = bench_resolution(&mut m, &img, res, &a, &progress)?;
        progress.suspend(|| {
            eprintln!(
                "{res} px: vision {:.3} s ({:.0} GFLOP/s), prefill {:.3} s, TTFT {:.3} s, decode {:.1} tokens/s",
                r.vision_s, r.vision_gflop_per_s, r.prefill_s, r.ttft_s, r.decode_tok_per_s
            )
        });
        resolutions.insert(res, r);
    }
    progress.finish_and_clear();
    let report = Report {
        engine: format!("scenesay {}", env!("CARGO_PKG_VERSION")),
        checkpoint: m
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        layout: m.config.layout,
        dtype: m.precision().name().to_string(),
        llm_weights: m.precision_name(),
        threads: rayon::current_num_threads(),
        runs: a.runs,
        load_s,
        resolutions,
        peak_rss_mb: peak_rss_mb(),
    };
    let stdout = std::io::stdout();
    let mut o = stdout.lock();
    if a.json {
        writeln!(o, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_table(&report, &mut o)?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn synthetic_prompt_has_the_reference_shape_and_ordinary_ids() {
        let p = synthetic_prompt(151_936, 256);
        assert_eq!((p.before.len(), p.after.len()), (14, 11));
        assert!(p.before.iter().chain(&p.after).all(|&t| t < 151_646 - 8));
        assert_eq!(p, synthetic_prompt(151_936, 256), "deterministic");
        let tiny = synthetic_prompt(1000, 1);
        assert!(tiny.before.iter().chain(&tiny.after).all(|&t| t < 992));
    }

    #[test]
    fn synthetic_image_is_the_reference_gradient() {
        let img = synthetic_image();
        assert_eq!(img.dimensions(), (640, 480));
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(
            img.get_pixel(639, 479).0,
            [255, 255, ((639 + 479) % 256) as u8]
        );
    }

    #[test]
    fn encoder_flops_match_the_fastvithd_figures() {
        let cfg = crate::model::config::VisionConfig::fastvithd();
        let g = |r| vision::encoder_flops(&cfg, r, r) / 1e9;
        assert!((g(256) - 29.6).abs() < 0.1, "{}", g(256));
        assert!((g(512) - 119.1).abs() < 0.1, "{}", g(512));
        assert!((g(1024) - 486.7).abs() < 0.1, "{}", g(1024));
    }
}
