//! Per-stage CPU time (all threads) of the vision encoder on a checkpoint (release build); run it
//! with one thread for figures that other processes on the machine barely disturb:
//! `RAYON_NUM_THREADS=1 cargo run --release --example vision_profile -- MODEL_DIR [RES] [RUNS]`
//! (`WALL=1` for wall-clock time instead).

/// CPU time of the whole process (all threads): robust to other processes on a shared machine.
fn cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    let clock = if std::env::var("WALL").is_ok_and(|v| v == "1") {
        libc::CLOCK_MONOTONIC
    } else {
        libc::CLOCK_PROCESS_CPUTIME_ID
    };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

use scenesay::model::{FastVlm, FeatureMap, Precision};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: vision_profile MODEL_DIR [RES] [RUNS]"),
    );
    let res: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(1024);
    let runs: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(2);
    let m = FastVlm::load(&dir, Precision::F32).expect("load");
    let pixels = FeatureMap::new(
        3,
        res,
        res,
        (0..3 * res * res)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect(),
    );
    let mut totals: Vec<(String, f64)> = vec![];
    for run in 0..=runs {
        let mut t = cpu_s();
        let mut names = vec![];
        let t0 = cpu_s();
        m.vision()
            .forward_nhwc(&pixels, &mut |name, _| {
                names.push((name.to_string(), cpu_s() - t));
                t = cpu_s();
            })
            .expect("forward");
        let total = cpu_s() - t0;
        if run == 0 {
            continue; // warm-up
        }
        if totals.is_empty() {
            totals = names.iter().map(|(n, _)| (n.clone(), 0.0)).collect();
            totals.push(("total".into(), 0.0));
        }
        for (i, (_, s)) in names.iter().enumerate() {
            totals[i].1 += s / runs as f64;
        }
        let last = totals.len() - 1;
        totals[last].1 += total / runs as f64;
    }
    for (n, s) in &totals {
        if !n.contains("blocks.") || n.ends_with(".0") {
            println!("{n:>24} {:>8.1} ms", s * 1e3);
        }
    }
}
