//! Attention kernels: vectorised row softmax, and FastViT's multi-head self-attention over the
//! pixels of a feature map (no mask, no position bias) on the packed GEMM.

use rayon::prelude::*;

use super::gemm::{gemm, Epilogue, PackedB};
use super::simd::{dispatch, Simd, SimdFn};

/// `row = softmax(row · scale)` for each row of `n` values.
pub fn softmax_rows_inplace(x: &mut [f32], n: usize, scale: f32) {
    for row in x.chunks_mut(n) {
        dispatch(SoftmaxRow { row, scale });
    }
}

/// Softmax of one row (vectorised max, exp, sum, scale).
pub struct SoftmaxRow<'a> {
    pub row: &'a mut [f32],
    pub scale: f32,
}

impl SimdFn for SoftmaxRow<'_> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        let n = self.row.len();
        let p = self.row.as_mut_ptr();
        // SAFETY: every access is inside the row (partial vectors at the end).
        unsafe {
            let mut mx = S::splat(f32::NEG_INFINITY);
            let mut j = 0;
            while j + S::LANES <= n {
                mx = S::max(mx, S::load(p.add(j)));
                j += S::LANES;
            }
            let mut m = S::reduce_max(mx);
            for k in j..n {
                m = m.max(*p.add(k));
            }
            let sc = S::splat(self.scale);
            let shift = S::splat(-m * self.scale);
            let mut sum = S::zero();
            j = 0;
            while j < n {
                let w = S::LANES.min(n - j);
                let e = S::exp(S::fma(S::load_n(p.add(j), w), sc, shift));
                let e = if w < S::LANES { S::keep_first(e, w) } else { e };
                S::store_n(p.add(j), e, w);
                sum = S::add(sum, e);
                j += S::LANES;
            }
            let inv = S::splat(1.0 / S::reduce_add(sum));
            j = 0;
            while j < n {
                let w = S::LANES.min(n - j);
                S::store_n(p.add(j), S::mul(S::load_n(p.add(j), w), inv), w);
                j += S::LANES;
            }
        }
    }
}

thread_local! {
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Multi-head self-attention of `n` tokens: `qkv` is `[n, 3c]` (q, k, v side by side, heads of
/// `d` channels each); writes `softmax(q·kᵀ/√d)·v` per head into `out` (`[n, c]`).
pub fn self_attention(qkv: &[f32], n: usize, c: usize, d: usize, out: &mut [f32]) {
    assert_eq!(qkv.len(), n * 3 * c, "self_attention: qkv size");
    assert_eq!(out.len(), n * c, "self_attention: output size");
    assert!(d > 0 && c.is_multiple_of(d), "self_attention: head width");
    let heads = c / d;
    let scale = 1.0 / (d as f32).sqrt();
    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let kt = PackedB::<f32>::pack_with(d, n, |p, j| qkv[j * 3 * c + c + h * d + p]);
            let v = PackedB::<f32>::from_in_out(&qkv[2 * c + h * d..], n, d, 3 * c);
            let mut o = vec![0f32; n * d];
            SCORES.with(|s| {
                let mut s = s.borrow_mut();
                s.resize(n * n, 0.0);
                gemm(
                    &qkv[h * d..],
                    3 * c,
                    n,
                    &kt,
                    &mut s,
                    n,
                    Epilogue::default(),
                    false,
                );
                softmax_rows_inplace(&mut s, n, scale);
                gemm(&s, n, n, &v, &mut o, d, Epilogue::default(), false);
            });
            o
        })
        .collect();
    for (h, o) in per_head.iter().enumerate() {
        for (i, row) in o.chunks(d).enumerate() {
            out[i * c + h * d..i * c + (h + 1) * d].copy_from_slice(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_definition() {
        for n in [1, 5, 16, 37, 300] {
            let mut x: Vec<f32> = (0..2 * n)
                .map(|i| ((i * 37) % 23) as f32 * 0.7 - 5.0)
                .collect();
            let orig = x.clone();
            softmax_rows_inplace(&mut x, n, 0.3);
            for (r, row) in orig.chunks(n).enumerate() {
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let z: f64 = row.iter().map(|v| ((*v as f64 - m) * 0.3).exp()).sum();
                for j in 0..n {
                    let want = ((row[j] as f64 - m) * 0.3).exp() / z;
                    assert!(
                        (x[r * n + j] as f64 - want).abs() < 1e-6,
                        "n{n}: {} vs {want}",
                        x[r * n + j]
                    );
                }
            }
        }
    }

    #[test]
    fn self_attention_matches_the_definition() {
        let (n, c, d) = (19, 64, 32);
        let qkv: Vec<f32> = (0..n * 3 * c)
            .map(|i| ((i * 13) % 29) as f32 * 0.05 - 0.7)
            .collect();
        let mut out = vec![0f32; n * c];
        self_attention(&qkv, n, c, d, &mut out);
        for h in 0..c / d {
            for i in 0..n {
                let q = |p: usize| qkv[i * 3 * c + h * d + p] as f64;
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..d)
                            .map(|p| q(p) * qkv[j * 3 * c + c + h * d + p] as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for e in 0..d {
                    let want: f64 = (0..n)
                        .map(|j| (s[j] - m).exp() / z * qkv[j * 3 * c + 2 * c + h * d + e] as f64)
                        .sum();
                    let got = out[i * c + h * d + e] as f64;
                    assert!((got - want).abs() < 1e-5, "({h},{i},{e}): {got} vs {want}");
                }
            }
        }
    }
}
