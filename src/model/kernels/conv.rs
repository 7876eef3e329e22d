//! Direct convolutions and per-pixel kernels on NHWC activations (`[h, w, c]`, channels
//! contiguous): depthwise / grouped k×k convolutions vectorised over channels, the stem's dense
//! convolution as im2col + GEMM, channel LayerNorm, layout conversions. Every convolution pads
//! with zeros by `k / 2`, as FastViTHD does.

use rayon::prelude::*;

use super::gemm::Act;
use super::simd::{dispatch_with, Isa, Simd, SimdFn};

/// Output side of a convolution with padding `k / 2`.
pub fn conv_out(size: usize, k: usize, stride: usize) -> usize {
    (size + 2 * (k / 2) - k) / stride + 1
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each thread writes a disjoint set of output rows.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Depthwise-style convolution weights in NHWC order: `w[(ky·k + kx)·co + o]`, where output
/// channel `o` reads input channel `o / mult` (`mult = 1`: depthwise; `2`: FastViTHD's grouped
/// downsample and final conv).
#[derive(Debug, Clone)]
pub struct DwWeights {
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
    pub c_in: usize,
    pub mult: usize,
    pub k: usize,
    pub stride: usize,
}

impl DwWeights {
    /// From PyTorch's `[c_in · mult, 1, k, k]` weight and optional bias.
    pub fn from_torch(
        weight: &[f32],
        bias: Option<&[f32]>,
        c_in: usize,
        mult: usize,
        k: usize,
        stride: usize,
    ) -> Self {
        let co = c_in * mult;
        assert_eq!(weight.len(), co * k * k, "DwWeights: weight size");
        let mut w = vec![0f32; co * k * k];
        for o in 0..co {
            for t in 0..k * k {
                w[t * co + o] = weight[o * k * k + t];
            }
        }
        Self {
            w,
            bias: bias.map_or_else(|| vec![0.0; co], |b| b.to_vec()),
            c_in,
            mult,
            k,
            stride,
        }
    }

    pub fn c_out(&self) -> usize {
        self.c_in * self.mult
    }
}

/// Copies `x` (`[h, w, c]`) into the middle of a zero border of `pad` pixels.
pub fn pad_nhwc(x: &[f32], h: usize, w: usize, c: usize, pad: usize, out: &mut Vec<f32>) {
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    out.clear();
    out.resize(hp * wp * c, 0.0);
    out.par_chunks_mut(wp * c)
        .enumerate()
        .skip(pad)
        .take(h)
        .for_each(|(y, row)| {
            let src = &x[(y - pad) * w * c..(y - pad + 1) * w * c];
            row[pad * c..(pad + w) * c].copy_from_slice(src);
        });
}

/// Depthwise / grouped convolution of `x` (`[h, w, c_in]`), then `act`; writes `out`
/// (`[ho, wo, c_in · mult]`, resized) and returns `(ho, wo)`.
pub fn dw_conv(
    x: &[f32],
    h: usize,
    w: usize,
    wt: &DwWeights,
    act: Act,
    out: &mut Vec<f32>,
) -> (usize, usize) {
    dw_conv_isa(Isa::detect(), x, h, w, wt, act, out)
}

/// [`dw_conv`] with an explicit instruction set.
pub fn dw_conv_isa(
    isa: Isa,
    x: &[f32],
    h: usize,
    w: usize,
    wt: &DwWeights,
    act: Act,
    out: &mut Vec<f32>,
) -> (usize, usize) {
    let (c, k, s) = (wt.c_in, wt.k, wt.stride);
    assert_eq!(x.len(), h * w * c, "dw_conv: input size");
    assert!(wt.mult == 1 || wt.mult == 2, "dw_conv: mult 1 or 2");
    assert!(k % 2 == 1 && s >= 1, "dw_conv: odd kernel, stride ≥ 1");
    let (ho, wo) = (conv_out(h, k, s), conv_out(w, k, s));
    let co = wt.c_out();
    out.resize(ho * wo * co, 0.0);
    // split rows, and channels too when there are few rows
    let threads = rayon::current_num_threads();
    let cgroups = if ho >= 4 * threads {
        1
    } else {
        (4 * threads).div_ceil(ho).min(co.div_ceil(16)).max(1)
    };
    let cper = co.div_ceil(cgroups).div_ceil(16) * 16;
    let cgroups = co.div_ceil(cper);
    let op = SendPtr(out.as_mut_ptr());
    (0..ho * cgroups).into_par_iter().for_each(|it| {
        let (oy, g) = (it / cgroups, it % cgroups);
        let (o_lo, o_hi) = (g * cper, ((g + 1) * cper).min(co));
        dispatch_with(
            isa,
            DwRow {
                x,
                h,
                w,
                c,
                wt,
                act,
                oy,
                wo,
                o_lo,
                o_hi,
                out: op,
            },
        );
    });
    (ho, wo)
}

/// One output row (and a range of output channels) of a depthwise convolution.
struct DwRow<'a> {
    x: &'a [f32],
    h: usize,
    w: usize,
    c: usize,
    wt: &'a DwWeights,
    act: Act,
    oy: usize,
    wo: usize,
    o_lo: usize,
    o_hi: usize,
    out: SendPtr,
}

#[inline(always)]
unsafe fn act_v<S: Simd>(v: S::V, act: Act) -> S::V {
    match act {
        Act::None => v,
        Act::Gelu => S::gelu(v),
        Act::Silu => S::silu(v),
        Act::Relu => S::max(v, S::zero()),
    }
}

/// Loads the inputs of output channels `o0..o0 + n` (`n ≤ LANES`) from the pixel at `px`
/// (channel `o / mult`).
#[inline(always)]
unsafe fn load_in<S: Simd, const MULT: usize>(px: *const f32, o0: usize, n: usize) -> S::V {
    if MULT == 1 {
        S::load_n(px.add(o0), n)
    } else {
        S::load_dup2(px.add(o0 / 2), n)
    }
}

impl DwRow<'_> {
    /// One output pixel with bounds checks (image borders).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn edge_pixel<S: Simd, const MULT: usize>(
        &self,
        ox: usize,
        o0: usize,
        nl: usize,
        bias: S::V,
        iy0: isize,
        ky: (usize, usize),
    ) {
        let (k, s, c, w) = (self.wt.k, self.wt.stride, self.c, self.w);
        let co = c * MULT;
        let ix0 = (ox * s) as isize - (k / 2) as isize;
        let kx_lo = (-ix0).max(0) as usize;
        let kx_hi = (w as isize - ix0).clamp(0, k as isize) as usize;
        let mut a = bias;
        for ky in ky.0..ky.1 {
            let xrow = self.x.as_ptr().add((iy0 + ky as isize) as usize * w * c);
            for kx in kx_lo..kx_hi {
                let wv = S::load_n(self.wt.w.as_ptr().add((ky * k + kx) * co + o0), nl);
                let px = xrow.add((ix0 + kx as isize) as usize * c);
                a = S::fma(wv, load_in::<S, MULT>(px, o0, nl), a);
            }
        }
        let dst = self.out.0.add((self.oy * self.wo + ox) * co + o0);
        S::store_n(dst, act_v::<S>(a, self.act), nl);
    }

    #[inline(always)]
    unsafe fn run<S: Simd, const MULT: usize>(&self) {
        const P: usize = 8;
        let (k, s, c, h, w, wo) = (self.wt.k, self.wt.stride, self.c, self.h, self.w, self.wo);
        let pad = k / 2;
        let co = c * MULT;
        let wp = self.wt.w.as_ptr();
        let iy0 = (self.oy * s) as isize - pad as isize;
        let ky = (
            (-iy0).max(0) as usize,
            (h as isize - iy0).clamp(0, k as isize) as usize,
        );
        // output columns whose taps all fall inside the image
        let ox_lo = pad.div_ceil(s).min(wo);
        let ox_hi = if w + pad >= k {
            ((w + pad - k) / s + 1).min(wo)
        } else {
            0
        }
        .max(ox_lo);
        let mut o0 = self.o_lo;
        while o0 < self.o_hi {
            let nl = S::LANES.min(self.o_hi - o0);
            let bias = S::load_n(self.wt.bias.as_ptr().add(o0), nl);
            for ox in 0..ox_lo {
                self.edge_pixel::<S, MULT>(ox, o0, nl, bias, iy0, ky);
            }
            let mut ox = ox_lo;
            while ox + P <= ox_hi {
                let mut acc = [bias; P];
                let ix0 = ox * s - pad;
                for kyy in ky.0..ky.1 {
                    let xrow = self
                        .x
                        .as_ptr()
                        .add(((iy0 + kyy as isize) as usize * w + ix0) * c);
                    for kx in 0..k {
                        let wv = S::load_n(wp.add((kyy * k + kx) * co + o0), nl);
                        for (q, a) in acc.iter_mut().enumerate() {
                            let px = xrow.add((q * s + kx) * c);
                            *a = S::fma(wv, load_in::<S, MULT>(px, o0, nl), *a);
                        }
                    }
                }
                for (q, a) in acc.iter().enumerate() {
                    let dst = self.out.0.add((self.oy * wo + ox + q) * co + o0);
                    S::store_n(dst, act_v::<S>(*a, self.act), nl);
                }
                ox += P;
            }
            for ox in ox..wo {
                self.edge_pixel::<S, MULT>(ox, o0, nl, bias, iy0, ky);
            }
            o0 += S::LANES;
        }
    }
}

impl SimdFn for DwRow<'_> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        // SAFETY: every tap read is bounds-checked against the image (edge pixels) or lies in
        // the interior by construction; weights cover `co` channels per tap; this output row /
        // channel range is written by this call alone.
        unsafe {
            if self.wt.mult == 1 {
                self.run::<S, 1>()
            } else {
                self.run::<S, 2>()
            }
        }
    }
}

/// A dense k×k convolution with few input channels (the stem's 3 → 96), weights tap-major:
/// `w[((ci·k + ky)·k + kx)·co + o]`.
#[derive(Debug, Clone)]
pub struct DenseWeights {
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
}

impl DenseWeights {
    /// From PyTorch's `[c_out, c_in, k, k]` weight and optional bias.
    pub fn from_torch(
        weight: &[f32],
        bias: Option<&[f32]>,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
    ) -> Self {
        let taps = c_in * k * k;
        assert_eq!(weight.len(), c_out * taps, "DenseWeights: weight size");
        let mut w = vec![0f32; taps * c_out];
        for o in 0..c_out {
            for t in 0..taps {
                w[t * c_out + o] = weight[o * taps + t];
            }
        }
        Self {
            w,
            bias: bias.map_or_else(|| vec![0.0; c_out], |b| b.to_vec()),
            c_in,
            c_out,
            k,
            stride,
        }
    }
}

/// Dense convolution of NCHW pixels `[c_in, h, w]` straight into NHWC `[ho, wo, c_out]`, then
/// `act` (no im2col buffer). Returns `(ho, wo)`.
pub fn dense_conv_nchw(
    x: &[f32],
    h: usize,
    w: usize,
    wt: &DenseWeights,
    act: Act,
    out: &mut Vec<f32>,
) -> (usize, usize) {
    assert_eq!(x.len(), wt.c_in * h * w, "dense_conv: input size");
    let (ho, wo) = (conv_out(h, wt.k, wt.stride), conv_out(w, wt.k, wt.stride));
    out.resize(ho * wo * wt.c_out, 0.0);
    let isa = Isa::detect();
    out.par_chunks_mut(wo * wt.c_out)
        .enumerate()
        .for_each(|(oy, row)| {
            dispatch_with(
                isa,
                DenseRow {
                    x,
                    h,
                    w,
                    wt,
                    act,
                    oy,
                    row,
                },
            )
        });
    (ho, wo)
}

struct DenseRow<'a> {
    x: &'a [f32],
    h: usize,
    w: usize,
    wt: &'a DenseWeights,
    act: Act,
    oy: usize,
    row: &'a mut [f32],
}

impl SimdFn for DenseRow<'_> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        // output channels in groups of up to CV vectors, pixels one at a time: CV accumulators
        const CV: usize = 6;
        let (k, s, co, ci) = (self.wt.k, self.wt.stride, self.wt.c_out, self.wt.c_in);
        let (h, w) = (self.h, self.w);
        let pad = (k / 2) as isize;
        let wo = self.row.len() / co;
        let iy0 = (self.oy * s) as isize - pad;
        let ky_lo = (-iy0).max(0) as usize;
        let ky_hi = (h as isize - iy0).clamp(0, k as isize) as usize;
        let wp = self.wt.w.as_ptr();
        let xp = self.x.as_ptr();
        let mut o0 = 0;
        while o0 < co {
            let nvec = (co - o0).div_ceil(S::LANES).min(CV);
            let width = (nvec * S::LANES).min(co - o0);
            let lanes = |v: usize| S::LANES.min(width - v * S::LANES);
            for ox in 0..wo {
                let ix0 = (ox * s) as isize - pad;
                let kx_lo = (-ix0).max(0) as usize;
                let kx_hi = (w as isize - ix0).clamp(0, k as isize) as usize;
                // SAFETY: taps are bounds-checked against the image; weight rows hold co floats;
                // this output row belongs to this call alone.
                unsafe {
                    let mut acc = [S::zero(); CV];
                    for (v, a) in acc.iter_mut().enumerate().take(nvec) {
                        *a = S::load_n(self.wt.bias.as_ptr().add(o0 + v * S::LANES), lanes(v));
                    }
                    for c in 0..ci {
                        for ky in ky_lo..ky_hi {
                            let xrow = xp.add((c * h + (iy0 + ky as isize) as usize) * w);
                            for kx in kx_lo..kx_hi {
                                let xv = S::splat(*xrow.add((ix0 + kx as isize) as usize));
                                let wrow = wp.add(((c * k + ky) * k + kx) * co + o0);
                                for (v, a) in acc.iter_mut().enumerate().take(nvec) {
                                    let wv = S::load_n(wrow.add(v * S::LANES), lanes(v));
                                    *a = S::fma(xv, wv, *a);
                                }
                            }
                        }
                    }
                    let dst = self.row.as_mut_ptr().add(ox * co + o0);
                    for (v, a) in acc.iter().enumerate().take(nvec) {
                        S::store_n(dst.add(v * S::LANES), act_v::<S>(*a, self.act), lanes(v));
                    }
                }
            }
            o0 += width;
        }
    }
}

/// im2col of a dense k×k convolution reading NCHW pixels `[c, h, w]`: rows are output pixels,
/// columns `(ci, ky, kx)` (PyTorch's weight order), zero outside the image.
pub fn im2col_nchw(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    out: &mut Vec<f32>,
) -> (usize, usize) {
    assert_eq!(x.len(), c * h * w, "im2col: input size");
    let (ho, wo) = (conv_out(h, k, stride), conv_out(w, k, stride));
    let pad = (k / 2) as isize;
    let kk = c * k * k;
    out.resize(ho * wo * kk, 0.0);
    out.par_chunks_mut(wo * kk)
        .enumerate()
        .for_each(|(oy, row)| {
            for ox in 0..wo {
                let dst = &mut row[ox * kk..(ox + 1) * kk];
                for ci in 0..c {
                    for ky in 0..k {
                        let iy = (oy * stride) as isize + ky as isize - pad;
                        for kx in 0..k {
                            let ix = (ox * stride) as isize + kx as isize - pad;
                            dst[(ci * k + ky) * k + kx] =
                                if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                    x[(ci * h + iy as usize) * w + ix as usize]
                                } else {
                                    0.0
                                };
                        }
                    }
                }
            }
        });
    (ho, wo)
}

/// LayerNorm over the channels of each pixel (`x` is `[n, c]`): biased variance, affine.
pub fn layer_norm_rows(
    x: &[f32],
    c: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    out: &mut Vec<f32>,
) {
    assert_eq!(x.len() % c, 0, "layer_norm: size");
    out.resize(x.len(), 0.0);
    let isa = Isa::detect();
    out.par_chunks_mut(c * 64)
        .zip(x.par_chunks(c * 64))
        .for_each(|(o, xi)| {
            dispatch_with(
                isa,
                LayerNormRows {
                    x: xi,
                    out: o,
                    c,
                    weight,
                    bias,
                    eps,
                },
            )
        });
}

struct LayerNormRows<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    c: usize,
    weight: &'a [f32],
    bias: &'a [f32],
    eps: f32,
}

impl SimdFn for LayerNormRows<'_> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        let c = self.c;
        for (xr, orow) in self.x.chunks(c).zip(self.out.chunks_mut(c)) {
            // SAFETY: every access is inside a row of `c` floats (partial vectors at the end).
            unsafe {
                let (xp, op) = (xr.as_ptr(), orow.as_mut_ptr());
                let mut sum = S::zero();
                let mut j = 0;
                while j < c {
                    sum = S::add(sum, S::load_n(xp.add(j), S::LANES.min(c - j)));
                    j += S::LANES;
                }
                let mean = S::reduce_add(sum) / c as f32;
                let mv = S::splat(mean);
                let mut sq = S::zero();
                j = 0;
                while j < c {
                    let n = S::LANES.min(c - j);
                    let d = S::sub(S::load_n(xp.add(j), n), mv);
                    let d = if n < S::LANES {
                        // the zero lanes became -mean: drop them
                        S::keep_first(d, n)
                    } else {
                        d
                    };
                    sq = S::fma(d, d, sq);
                    j += S::LANES;
                }
                let inv = 1.0 / (S::reduce_add(sq) / c as f32 + self.eps).sqrt();
                let iv = S::splat(inv);
                j = 0;
                while j < c {
                    let n = S::LANES.min(c - j);
                    let d = S::mul(S::sub(S::load_n(xp.add(j), n), mv), iv);
                    let v = S::fma(
                        d,
                        S::load_n(self.weight.as_ptr().add(j), n),
                        S::load_n(self.bias.as_ptr().add(j), n),
                    );
                    S::store_n(op.add(j), v, n);
                    j += S::LANES;
                }
            }
        }
    }
}

/// Squeeze-excite gating then GELU, in place: `x[i, j] = gelu(x[i, j] · g[j])` with
/// `g = sigmoid(gate)` when `sigmoid`, else `gate`.
pub fn scale_columns_gelu(x: &mut [f32], gate: &[f32], sigmoid: bool) {
    let c = gate.len();
    assert_eq!(x.len() % c.max(1), 0, "scale_columns_gelu: size");
    let g: Vec<f32> = if sigmoid {
        gate.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
    } else {
        gate.to_vec()
    };
    let isa = Isa::detect();
    x.par_chunks_mut(c * 16).for_each(|rows| {
        dispatch_with(isa, ScaleGelu { x: rows, g: &g });
    });
}

struct ScaleGelu<'a> {
    x: &'a mut [f32],
    g: &'a [f32],
}

impl SimdFn for ScaleGelu<'_> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        let c = self.g.len();
        for row in self.x.chunks_mut(c) {
            let mut j = 0;
            // SAFETY: inside the row and the gate (partial vectors at the end).
            unsafe {
                while j < c {
                    let n = S::LANES.min(c - j);
                    let p = row.as_mut_ptr().add(j);
                    let v = S::mul(S::load_n(p, n), S::load_n(self.g.as_ptr().add(j), n));
                    S::store_n(p, S::gelu(v), n);
                    j += S::LANES;
                }
            }
        }
    }
}

/// Mean over rows of `x` (`[n, c]`) → `[c]`.
pub fn column_means(x: &[f32], c: usize) -> Vec<f32> {
    let n = x.len() / c;
    let mut sum = vec![0f64; c];
    for row in x.chunks(c) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += *v as f64;
        }
    }
    sum.into_iter().map(|s| (s / n as f64) as f32).collect()
}

/// `[c, h·w]` (NCHW) → `[h·w, c]` (NHWC).
pub fn nchw_to_nhwc(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    transpose(x, c, hw, &mut out);
    out
}

/// `[h·w, c]` (NHWC) → `[c, h·w]` (NCHW).
pub fn nhwc_to_nchw(x: &[f32], hw: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    transpose(x, hw, c, &mut out);
    out
}

/// Blocked transpose of a row-major `[r, c]` matrix into `[c, r]`.
pub fn transpose(x: &[f32], r: usize, c: usize, out: &mut [f32]) {
    assert_eq!(x.len(), r * c, "transpose: size");
    assert_eq!(out.len(), r * c, "transpose: output size");
    const B: usize = 32;
    out.par_chunks_mut(B * r).enumerate().for_each(|(jb, dst)| {
        let j0 = jb * B;
        let jw = B.min(c - j0);
        for i0 in (0..r).step_by(B) {
            for i in i0..(i0 + B).min(r) {
                for jj in 0..jw {
                    dst[jj * r + i] = x[i * c + j0 + jj];
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Grouped convolution on NCHW, the oracle.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[f32],
        ci: usize,
        h: usize,
        w: usize,
        weight: &[f32],
        bias: &[f32],
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
                    let mut s = bias[o] as f64;
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

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what}: index {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn depthwise_and_grouped_match_naive_on_every_isa() {
        // (c, h, w, k, stride, mult): FastViTHD's 3×3 / 7×7 depthwise, stride-2 stem, grouped ×2
        // downsample and final conv; odd sizes and channel counts exercise borders and tails.
        for isa in Isa::all_supported() {
            for &(c, h, w, k, stride, mult) in &[
                (3, 9, 7, 3, 1, 1),
                (16, 8, 19, 7, 1, 1),
                (21, 11, 6, 3, 2, 1),
                (19, 10, 9, 7, 2, 2),
                (32, 4, 4, 3, 1, 2),
                (1, 2, 3, 7, 1, 1),
                (40, 17, 13, 7, 2, 2),
            ] {
                let x = pseudo(c * h * w, 1);
                let wt = pseudo(c * mult * k * k, 2);
                let b = pseudo(c * mult, 3);
                let want = naive_conv(&x, c, h, w, &wt, &b, c * mult, k, stride, c);
                let dw = DwWeights::from_torch(&wt, Some(&b), c, mult, k, stride);
                let xn = nchw_to_nhwc(&x, c, h * w);
                let mut out = vec![];
                let (ho, wo) = dw_conv_isa(isa, &xn, h, w, &dw, Act::None, &mut out);
                assert_eq!((ho, wo), (conv_out(h, k, stride), conv_out(w, k, stride)));
                let got = nhwc_to_nchw(&out, ho * wo, c * mult);
                assert_close(
                    &got,
                    &want,
                    &format!("{isa:?} c{c} {h}x{w} k{k} s{stride} m{mult}"),
                );
                // fused GELU
                dw_conv_isa(isa, &xn, h, w, &dw, Act::Gelu, &mut out);
                let got = nhwc_to_nchw(&out, ho * wo, c * mult);
                let want_g: Vec<f32> = want
                    .iter()
                    .map(|&v| {
                        (0.5 * v as f64
                            * (1.0 + candle_core::cpu::erf::erf_f64(v as f64 / 2f64.sqrt())))
                            as f32
                    })
                    .collect();
                assert_close(&got, &want_g, &format!("{isa:?} gelu"));
            }
        }
    }

    #[test]
    fn im2col_gemm_is_the_dense_conv() {
        use super::super::gemm::{gemm, Epilogue, PackedB};
        let (ci, h, w, co, k, s) = (3, 13, 10, 5, 3, 2);
        let x = pseudo(ci * h * w, 4);
        let wt = pseudo(co * ci * k * k, 5);
        let b = pseudo(co, 6);
        let mut cols = vec![];
        let (ho, wo) = im2col_nchw(&x, ci, h, w, k, s, &mut cols);
        let packed = PackedB::<f32>::from_out_in(&wt, co, ci * k * k, |v| v);
        let mut out = vec![0f32; ho * wo * co];
        gemm(
            &cols,
            ci * k * k,
            ho * wo,
            &packed,
            &mut out,
            co,
            Epilogue::bias(Some(&b)),
            true,
        );
        let want = naive_conv(&x, ci, h, w, &wt, &b, co, k, s, 1);
        assert_close(&nhwc_to_nchw(&out, ho * wo, co), &want, "stem conv");
    }

    #[test]
    fn direct_dense_conv_matches_naive_on_every_isa() {
        for isa in Isa::all_supported() {
            for &(ci, h, w, co, k, s) in &[
                (3, 13, 10, 96, 3, 2),
                (3, 8, 8, 16, 3, 2),
                (2, 7, 9, 21, 3, 1),
            ] {
                let x = pseudo(ci * h * w, 4);
                let wt = pseudo(co * ci * k * k, 5);
                let b = pseudo(co, 6);
                let dw = DenseWeights::from_torch(&wt, Some(&b), ci, co, k, s);
                let mut out = vec![];
                let (ho, wo) = dispatch_isa_dense(isa, &x, h, w, &dw, &mut out);
                let want = naive_conv(&x, ci, h, w, &wt, &b, co, k, s, 1);
                assert_close(
                    &nhwc_to_nchw(&out, ho * wo, co),
                    &want,
                    &format!("{isa:?} dense {ci}->{co}"),
                );
            }
        }
    }

    /// [`dense_conv_nchw`] with an explicit instruction set (test helper).
    fn dispatch_isa_dense(
        isa: Isa,
        x: &[f32],
        h: usize,
        w: usize,
        wt: &DenseWeights,
        out: &mut Vec<f32>,
    ) -> (usize, usize) {
        let (ho, wo) = (conv_out(h, wt.k, wt.stride), conv_out(w, wt.k, wt.stride));
        out.resize(ho * wo * wt.c_out, 0.0);
        for (oy, row) in out.chunks_mut(wo * wt.c_out).enumerate() {
            dispatch_with(
                isa,
                DenseRow {
                    x,
                    h,
                    w,
                    wt,
                    act: Act::None,
                    oy,
                    row,
                },
            );
        }
        (ho, wo)
    }

    #[test]
    fn layer_norm_matches_the_definition_on_every_width() {
        for c in [1, 7, 16, 33, 768] {
            let x = pseudo(5 * c, c as u32);
            let g = pseudo(c, 9);
            let b = pseudo(c, 10);
            let mut out = vec![];
            layer_norm_rows(&x, c, &g, &b, 1e-5, &mut out);
            for (r, row) in x.chunks(c).enumerate() {
                let mean = row.iter().map(|v| *v as f64).sum::<f64>() / c as f64;
                let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
                for j in 0..c {
                    let want =
                        (row[j] as f64 - mean) / (var + 1e-5).sqrt() * g[j] as f64 + b[j] as f64;
                    let got = out[r * c + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "c{c} ({r},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn transposes_round_trip() {
        let x = pseudo(37 * 70, 11);
        let t = nchw_to_nhwc(&x, 37, 70);
        assert_eq!(t[5 * 37 + 3], x[3 * 70 + 5]);
        assert_eq!(nhwc_to_nchw(&t, 70, 37), x);
    }
}
