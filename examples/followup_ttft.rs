//! Time to the first word of a follow-up question against a fresh ask, on a checkpoint (the
//! full-size random weights of `full_size_checkpoint` measure the real model's cost):
//!
//! `cargo run --release --example followup_ttft -- MODEL_DIR [IMAGE] [RESOLUTION] [RUNS]`
//!
//! Each run asks a question about the picture afresh — once with the picture encoded anew (what
//! `ctl ask` costs on a new camera frame) and once with its encoding remembered (the prompt only) —
//! then a follow-up that goes on with the conversation (only the new turn's tokens). Prints the
//! median time to the first token of each, over RUNS runs (3).

use std::path::PathBuf;

use scenesay::model::{FastVlm, GenerationParams, Precision};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        anyhow::bail!("usage: followup_ttft MODEL_DIR [IMAGE] [RESOLUTION] [RUNS]");
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let image = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("tests/fixtures/images/landscape_640x480.png"));
    let resolution: u32 = args.get(2).map(|v| v.parse()).transpose()?.unwrap_or(1024);
    let runs: usize = args.get(3).map(|v| v.parse()).transpose()?.unwrap_or(3);
    let img = image::open(&image)?.to_rgb8();
    let mut m = FastVlm::load(&dir, Precision::F32)?;
    let params = GenerationParams {
        max_tokens: 24,
        ..Default::default()
    };
    let (mut fresh, mut fresh_known, mut follow) = (vec![], vec![], vec![]);
    let (mut fresh_tokens, mut follow_tokens) = (0, 0);
    for run in 0..runs {
        m.forget_encoding();
        let g = m.generate(
            &img,
            "What is on the table?",
            resolution,
            &params,
            &mut |_| {},
            &|| false,
        )?;
        fresh.push(g.timings.ttft_ms);
        let g = m.generate(
            &img,
            "What is on the table?",
            resolution,
            &params,
            &mut |_| {},
            &|| false,
        )?;
        assert!(g.reused_encoding);
        fresh_known.push(g.timings.ttft_ms);
        fresh_tokens = g.prompt_tokens;
        let f = m
            .follow_up("And what colour is it?", &params, &mut |_| {}, &|| false)?
            .ok_or_else(|| anyhow::anyhow!("no conversation to follow up"))?;
        follow.push(f.timings.ttft_ms);
        follow_tokens = f.prompt_tokens;
        println!(
            "run {}: fresh {:.0} ms, fresh (encoding remembered) {:.0} ms, follow-up {:.0} ms",
            run + 1,
            fresh[run],
            fresh_known[run],
            follow[run]
        );
    }
    println!(
        "{} at {resolution} px, {} threads, medians of {runs}: time to the first token",
        dir.display(),
        rayon::current_num_threads()
    );
    println!(
        "  fresh ask, picture encoded:      {:>7.0} ms ({fresh_tokens} prompt tokens)",
        median(fresh)
    );
    println!(
        "  fresh ask, encoding remembered:  {:>7.0} ms ({fresh_tokens} prompt tokens)",
        median(fresh_known)
    );
    println!(
        "  follow-up (conversation kept):   {:>7.0} ms ({follow_tokens} new tokens)",
        median(follow)
    );
    Ok(())
}
