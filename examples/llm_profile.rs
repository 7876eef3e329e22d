//! Times the language model alone on a checkpoint (release build): prefill of T tokens and decode
//! steps, for profiling. `cargo run --release --example llm_profile -- MODEL_DIR [T] [RUNS]`.

use std::time::Instant;

use scenesay::model::{FastVlm, Precision};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: llm_profile MODEL_DIR [T] [RUNS]"),
    );
    let t: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(41);
    let runs: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut m = FastVlm::load(&dir, Precision::F32).expect("load");
    let ids: Vec<u32> = (0..t as u32).map(|i| (i * 7919) % 150_000).collect();
    let embeds = m.token_embeds(&ids).expect("embed");
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t0 = Instant::now();
        let h = m.prefill(&embeds).expect("prefill");
        let _ = m.last_logits(&h).expect("logits");
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!("prefill {t} tokens: best {:.1} ms", best * 1e3);
    let step = m.token_embeds(&[42]).expect("embed");
    let t0 = Instant::now();
    for _ in 0..runs * 4 {
        let h = m.extend(&step).expect("extend");
        let _ = m.last_logits(&h).expect("logits");
    }
    println!(
        "decode: {:.1} ms per token",
        t0.elapsed().as_secs_f64() * 1e3 / (runs * 4) as f64
    );
}
