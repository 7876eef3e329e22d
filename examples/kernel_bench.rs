//! Micro-benchmark of the model's kernels on FastViTHD / Qwen2 shapes (release build):
//! `cargo run --release --example kernel_bench [-- --threads N]`.

use std::time::Instant;

use scenesay::model::kernels::gemm::{gemm, Epilogue, PackedB};

/// CPU time of the calling thread (robust to other processes on a shared machine when the
/// benchmark runs single-threaded).
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn best_of(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let single = rayon::current_num_threads() == 1;
    (0..runs)
        .map(|_| {
            let (t, c) = (Instant::now(), thread_cpu_s());
            f();
            if single {
                thread_cpu_s() - c
            } else {
                t.elapsed().as_secs_f64()
            }
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    println!(
        "isa {:?}, {threads} threads",
        scenesay::model::kernels::simd::Isa::detect()
    );
    for &(n, c) in &[(1024usize, 768usize), (256, 1536), (64, 768)] {
        if only
            .as_ref()
            .is_some_and(|o| !"attention".contains(o.as_str()))
        {
            break;
        }
        let qkv: Vec<f32> = (0..n * 3 * c)
            .map(|i| ((i * 7) % 13) as f32 * 0.01)
            .collect();
        let mut out = vec![0f32; n * c];
        let t = best_of(5, || {
            scenesay::model::kernels::attention::self_attention(&qkv, n, c, 32, &mut out)
        });
        let flop = 4.0 * (n * n * c) as f64;
        println!(
            "attention n{n} c{c}: {:.2} ms, {:.1} GFLOP/s",
            t * 1e3,
            flop / t / 1e9
        );
    }
    for &(m, n, k, what) in &[
        (65536usize, 384usize, 96usize, "stage0 fc1 @1024"),
        (65536, 96, 384, "stage0 fc2 @1024"),
        (4096, 1536, 384, "stage2 fc1 @1024"),
        (4096, 384, 1536, "stage2 fc2 @1024"),
        (256, 6144, 1536, "stage4 fc1 @1024"),
        (16, 6144, 1536, "stage4 fc1 @256"),
        (281, 4864, 896, "llm up @281"),
        (281, 896, 4864, "llm down @281"),
        (1024, 1024, 1024, "square 1024"),
        (1, 4864, 896, "gemv up"),
        (1, 896, 4864, "gemv down"),
    ] {
        if only.as_ref().is_some_and(|o| !what.contains(o.as_str())) {
            continue;
        }
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 * 0.01).collect();
        let packed = PackedB::<f32>::from_out_in(&w, n, k, |x| x);
        let pbf = PackedB::<half::bf16>::from_out_in(&w, n, k, half::bf16::from_f32);
        let mut c = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let runs = ((2e10 / flop) as usize).clamp(3, 200);
        let t = best_of(runs, || {
            gemm(&a, k, m, &packed, &mut c, n, Epilogue::default(), true)
        });
        let tb = best_of(runs, || {
            gemm(&a, k, m, &pbf, &mut c, n, Epilogue::default(), true)
        });
        // candle's GEMM (the gemm crate) on the same product, weights as [k, n] row-major
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let tg = best_of(runs, || unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                wt.as_ptr(),
                1,
                n as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            )
        });
        println!(
            "{what:>18} m{m:>6} n{n:>5} k{k:>5}: ours f32 {:>6.1} GFLOP/s ({:.2} ms), bf16-weights {:>6.1}, gemm crate {:>6.1}",
            flop / t / 1e9,
            t * 1e3,
            flop / tb / 1e9,
            flop / tg / 1e9
        );
    }
}
