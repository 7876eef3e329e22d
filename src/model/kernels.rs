//! CPU kernels for the FastViTHD encoder: direct (depthwise / grouped) convolutions, dense
//! convolutions through im2col + GEMM, 1×1 convolutions as GEMMs, and elementwise helpers.
//!
//! Layout everywhere: one image, NCHW, `f32`, contiguous (`[C, H, W]` row-major). Every convolution
//! pads with zeros by `k / 2` on each side, as FastViTHD does. candle's own `conv2d` is two orders of
//! magnitude too slow on depthwise kernels, so the encoder is built on these instead; matrix products
//! go through the `gemm` crate (candle's own GEMM) with rayon parallelism.

use rayon::prelude::*;

/// Output side of a convolution with padding `k / 2`.
pub fn conv_out(size: usize, k: usize, stride: usize) -> usize {
    (size + 2 * (k / 2) - k) / stride + 1
}

/// Depthwise-style convolution: output channel `o` reads only input channel `o / mult`.
///
/// * `mult == 1`: plain depthwise conv (`groups = C`, weight `[C, 1, k, k]`).
/// * `mult == 2`: FastViTHD's grouped downsample / final conv (`groups = C`, weight `[2C, 1, k, k]`).
///
/// Returns `(output [C·mult, ho, wo], ho, wo)`.
#[allow(clippy::too_many_arguments)]
pub fn conv_depthwise(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    stride: usize,
    mult: usize,
) -> (Vec<f32>, usize, usize) {
    let co = c * mult;
    assert_eq!(x.len(), c * h * w, "conv_depthwise: input size");
    assert_eq!(weight.len(), co * k * k, "conv_depthwise: weight size");
    if let Some(b) = bias {
        assert_eq!(b.len(), co, "conv_depthwise: bias size");
    }
    let (ho, wo) = (conv_out(h, k, stride), conv_out(w, k, stride));
    let pad = (k / 2) as isize;
    let mut out = vec![0f32; co * ho * wo];
    out.par_chunks_mut(ho * wo)
        .enumerate()
        .for_each(|(o, dst)| {
            let src = &x[(o / mult) * h * w..(o / mult + 1) * h * w];
            let wk = &weight[o * k * k..(o + 1) * k * k];
            let b = bias.map_or(0.0, |b| b[o]);
            for oy in 0..ho {
                let iy0 = (oy * stride) as isize - pad;
                // rows of the kernel that fall inside the image
                let ky_lo = (-iy0).max(0) as usize;
                let ky_hi = ((h as isize - iy0).min(k as isize)).max(0) as usize;
                let row = &mut dst[oy * wo..(oy + 1) * wo];
                row.iter_mut().for_each(|v| *v = b);
                for ky in ky_lo..ky_hi {
                    let srow = &src[(iy0 + ky as isize) as usize * w..][..w];
                    for kx in 0..k {
                        let wv = wk[ky * k + kx];
                        let off = kx as isize - pad;
                        // output columns ox with 0 <= ox*stride + off < w
                        let ox_lo = if off < 0 {
                            ((-off) as usize).div_ceil(stride)
                        } else {
                            0
                        };
                        let ox_hi = if (w as isize - off) <= 0 {
                            0
                        } else {
                            ((w as isize - off - 1) as usize / stride + 1).min(wo)
                        };
                        for ox in ox_lo..ox_hi {
                            let ix = (ox * stride) as isize + off;
                            row[ox] += wv * srow[ix as usize];
                        }
                    }
                }
            }
        });
    (out, ho, wo)
}

/// Dense convolution (`groups = 1`), weight `[co, ci, k, k]`, through im2col and one GEMM.
/// Returns `(output [co, ho, wo], ho, wo)`.
#[allow(clippy::too_many_arguments)]
pub fn conv_dense(
    x: &[f32],
    ci: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    co: usize,
    k: usize,
    stride: usize,
) -> (Vec<f32>, usize, usize) {
    assert_eq!(x.len(), ci * h * w, "conv_dense: input size");
    assert_eq!(weight.len(), co * ci * k * k, "conv_dense: weight size");
    let (ho, wo) = (conv_out(h, k, stride), conv_out(w, k, stride));
    let pad = (k / 2) as isize;
    let kk = ci * k * k;
    let n = ho * wo;
    // cols[(c, ky, kx), (oy, ox)]
    let mut cols = vec![0f32; kk * n];
    cols.par_chunks_mut(n).enumerate().for_each(|(r, dst)| {
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let src = &x[c * h * w..(c + 1) * h * w];
        for oy in 0..ho {
            let iy = (oy * stride) as isize + ky as isize - pad;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for ox in 0..wo {
                let ix = (ox * stride) as isize + kx as isize - pad;
                if ix >= 0 && ix < w as isize {
                    dst[oy * wo + ox] = src[iy as usize * w + ix as usize];
                }
            }
        }
    });
    let mut out = vec![0f32; co * n];
    if let Some(b) = bias {
        assert_eq!(b.len(), co, "conv_dense: bias size");
        for (o, row) in out.chunks_mut(n).enumerate() {
            row.iter_mut().for_each(|v| *v = b[o]);
        }
    }
    matmul(weight, &cols, &mut out, co, kk, n, bias.is_some());
    (out, ho, wo)
}

/// 1×1 convolution: `out[co, hw] = weight[co, ci] · x[ci, hw] + bias`.
pub fn conv_pointwise(
    x: &[f32],
    ci: usize,
    hw: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    co: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), ci * hw, "conv_pointwise: input size");
    assert_eq!(weight.len(), co * ci, "conv_pointwise: weight size");
    let mut out = vec![0f32; co * hw];
    if let Some(b) = bias {
        assert_eq!(b.len(), co, "conv_pointwise: bias size");
        for (o, row) in out.chunks_mut(hw).enumerate() {
            row.iter_mut().for_each(|v| *v = b[o]);
        }
    }
    matmul(weight, x, &mut out, co, ci, hw, bias.is_some());
    out
}

/// Row-major GEMM: `out[m, n] (+)= a[m, k] · b[k, n]`; accumulates into `out` when `accumulate`.
pub fn matmul(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    matmul_strided(
        a,
        (k as isize, 1),
        b,
        (n as isize, 1),
        out,
        m,
        k,
        n,
        accumulate,
    )
}

/// GEMM with explicit (row, column) strides for `a` and `b`; `out` is row-major `[m, n]`.
/// `a` transposed is `(1, m)`-strided, for example.
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided(
    a: &[f32],
    (a_rs, a_cs): (isize, isize),
    b: &[f32],
    (b_rs, b_cs): (isize, isize),
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert!(out.len() >= m * n, "matmul: output too small");
    let last = |rs: isize, cs: isize, r: usize, c: usize| {
        if r == 0 || c == 0 {
            0
        } else {
            ((r - 1) as isize * rs + (c - 1) as isize * cs) as usize + 1
        }
    };
    assert!(a.len() >= last(a_rs, a_cs, m, k), "matmul: lhs too small");
    assert!(b.len() >= last(b_rs, b_cs, k, n), "matmul: rhs too small");
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k > 32 * 32 * 32 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above check every index the strides can reach, and `out` does not alias
    // `a` or `b` (it is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

/// Exact (erf) GELU, as PyTorch's `nn.GELU()`.
pub fn gelu(v: f32) -> f32 {
    0.5 * v * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// Applies exact GELU in place, in parallel.
pub fn gelu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(4096)
        .for_each(|c| c.iter_mut().for_each(|v| *v = gelu(*v)));
}

/// Per-channel affine map in place: `x[c, :] = x[c, :] * scale[c] + shift[c]`.
pub fn channel_affine_inplace(x: &mut [f32], hw: usize, scale: &[f32], shift: &[f32]) {
    x.par_chunks_mut(hw).enumerate().for_each(|(c, row)| {
        let (s, t) = (scale[c], shift[c]);
        row.iter_mut().for_each(|v| *v = *v * s + t);
    });
}

/// Layer-scaled residual in place: `x[c, :] += gamma[c] · y[c, :]`.
pub fn residual_scaled_inplace(x: &mut [f32], y: &[f32], hw: usize, gamma: &[f32]) {
    assert_eq!(x.len(), y.len(), "residual: sizes");
    x.par_chunks_mut(hw)
        .zip(y.par_chunks(hw))
        .enumerate()
        .for_each(|(c, (xr, yr))| {
            let g = gamma[c];
            xr.iter_mut().zip(yr).for_each(|(a, b)| *a += g * *b);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward grouped convolution used as the oracle.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[f32],
        ci: usize,
        h: usize,
        w: usize,
        weight: &[f32],
        bias: Option<&[f32]>,
        co: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) -> Vec<f32> {
        let (ho, wo) = (conv_out(h, k, stride), conv_out(w, k, stride));
        let (cig, cog) = (ci / groups, co / groups);
        let pad = (k / 2) as isize;
        let mut out = vec![0f32; co * ho * wo];
        for o in 0..co {
            let g = o / cog;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = bias.map_or(0.0, |b| b[o]) as f64;
                    for j in 0..cig {
                        let c = g * cig + j;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride) as isize + ky as isize - pad;
                                let ix = (ox * stride) as isize + kx as isize - pad;
                                if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                    s += (weight[((o * cig + j) * k + ky) * k + kx]
                                        * x[(c * h + iy as usize) * w + ix as usize])
                                        as f64;
                                }
                            }
                        }
                    }
                    out[(o * ho + oy) * wo + ox] = s as f32;
                }
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "index {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn depthwise_matches_naive_for_all_fastvithd_shapes() {
        // (c, h, w, k, stride, mult): depthwise 3×3 / 7×7, stride-2 stem, grouped ×2 downsample and
        // final conv, odd sizes to exercise the borders.
        for &(c, h, w, k, stride, mult) in &[
            (3, 9, 7, 3, 1, 1),
            (4, 8, 8, 7, 1, 1),
            (2, 11, 6, 3, 2, 1),
            (3, 10, 9, 7, 2, 2),
            (2, 4, 4, 3, 1, 2),
            (1, 2, 3, 7, 1, 1),
            (2, 5, 5, 7, 2, 2),
        ] {
            let x = pseudo(c * h * w, 1);
            let wt = pseudo(c * mult * k * k, 2);
            let b = pseudo(c * mult, 3);
            let (got, ho, wo) = conv_depthwise(&x, c, h, w, &wt, Some(&b), k, stride, mult);
            assert_eq!((ho, wo), (conv_out(h, k, stride), conv_out(w, k, stride)));
            let want = naive_conv(&x, c, h, w, &wt, Some(&b), c * mult, k, stride, c);
            assert_close(&got, &want);
        }
    }

    #[test]
    fn dense_and_pointwise_match_naive() {
        let (ci, h, w, co) = (3, 13, 10, 5);
        let x = pseudo(ci * h * w, 4);
        let wt = pseudo(co * ci * 9, 5);
        let b = pseudo(co, 6);
        let (got, _, _) = conv_dense(&x, ci, h, w, &wt, Some(&b), co, 3, 2);
        assert_close(&got, &naive_conv(&x, ci, h, w, &wt, Some(&b), co, 3, 2, 1));
        let wt1 = pseudo(co * ci, 7);
        let got = conv_pointwise(&x, ci, h * w, &wt1, Some(&b), co);
        assert_close(&got, &naive_conv(&x, ci, h, w, &wt1, Some(&b), co, 1, 1, 1));
    }

    #[test]
    fn gelu_is_the_erf_form() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-2.0) - -0.045_500_26).abs() < 1e-6);
        assert_eq!(gelu(0.0), 0.0);
    }
}
