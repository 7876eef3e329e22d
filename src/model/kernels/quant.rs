//! Weight-only quantized matrices for the GEMM: 8-bit (symmetric, one f16 scale per 32 weights of
//! a column, from GGUF Q8_0) and 4-bit (affine, f16 scale and minimum per 32 weights, from GGUF
//! Q4_1), repacked into the GEMM's panels of [`NR`] columns. Activations stay f32: weights are
//! widened to f32 in registers (W8A32 / W4A32), so the only error is the weights' rounding.
//!
//! Layout: panel `pi`, block `b` (depth `32·b .. 32·b + 32`) at byte `(pi·kb + b)·block_bytes`:
//! * 8-bit: `NR` f16 scales, then `[32][NR]` i8;
//! * 4-bit: `NR` f16 scales, `NR` f16 minimums, then `[16][NR]` bytes whose low nibble is depth
//!   `2i` and high nibble depth `2i + 1`.

use rayon::prelude::*;

use super::gemm::{epilogue, Epilogue, RhsPanels, Tile, NR};
use super::simd::Simd;

/// Weights per quantization block along the depth.
pub const QBLOCK: usize = 32;

/// The two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    /// `w = d · q`, `q` in −127..=127.
    Q8,
    /// `w = d · q + m`, `q` in 0..=15.
    Q4,
}

impl QFormat {
    fn block_bytes(self) -> usize {
        match self {
            QFormat::Q8 => NR * 2 + QBLOCK * NR,
            QFormat::Q4 => NR * 4 + QBLOCK / 2 * NR,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QFormat::Q8 => "q8_0",
            QFormat::Q4 => "q4_1",
        }
    }
}

/// A quantized `[k, n]` right-hand operand (the transpose of an `[n, k]` weight).
#[derive(Debug)]
pub struct PackedQ {
    format: QFormat,
    n: usize,
    k: usize,
    data: Vec<u8>,
}

fn f16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

impl PackedQ {
    /// From GGUF Q8_0 rows (`n` rows of `k / 32` blocks: f16 scale + 32 × i8).
    pub fn from_q8_0(bytes: &[u8], n: usize, k: usize) -> Result<Self, String> {
        Self::repack(QFormat::Q8, bytes, n, k, 34, |blk, out_scale, _min, q| {
            *out_scale = f16_at(blk, 0);
            for (i, v) in q.iter_mut().enumerate() {
                *v = blk[2 + i];
            }
        })
    }

    /// From GGUF Q4_1 rows (`n` rows of `k / 32` blocks: f16 scale, f16 min, 16 bytes of nibbles,
    /// element `i < 16` in the low nibble of byte `i`, element `16 + i` in its high nibble).
    pub fn from_q4_1(bytes: &[u8], n: usize, k: usize) -> Result<Self, String> {
        Self::repack(
            QFormat::Q4,
            bytes,
            n,
            k,
            20,
            |blk, out_scale, out_min, q| {
                *out_scale = f16_at(blk, 0);
                *out_min = f16_at(blk, 2);
                for i in 0..16 {
                    q[i] = blk[4 + i] & 15;
                    q[16 + i] = blk[4 + i] >> 4;
                }
            },
        )
    }

    /// Repacks row-major GGUF blocks (`src_block` bytes each) into panels; `decode` turns one block
    /// into its scale, minimum and 32 raw codes (i8 as u8 for 8-bit, nibbles for 4-bit).
    fn repack(
        format: QFormat,
        bytes: &[u8],
        n: usize,
        k: usize,
        src_block: usize,
        decode: impl Fn(&[u8], &mut u16, &mut u16, &mut [u8; QBLOCK]) + Sync,
    ) -> Result<Self, String> {
        if !k.is_multiple_of(QBLOCK) {
            return Err(format!("rows of {k} values are not a multiple of {QBLOCK}"));
        }
        let kb = k / QBLOCK;
        if bytes.len() != n * kb * src_block {
            return Err(format!(
                "{} bytes of quantized data for a {n}×{k} matrix, expected {}",
                bytes.len(),
                n * kb * src_block
            ));
        }
        let bb = format.block_bytes();
        let panels = n.div_ceil(NR);
        let mut data = vec![0u8; panels * kb * bb];
        data.par_chunks_mut(kb * bb)
            .enumerate()
            .for_each(|(pi, panel)| {
                let mut q = [0u8; QBLOCK];
                for b in 0..kb {
                    let dst = &mut panel[b * bb..(b + 1) * bb];
                    for jj in 0..NR.min(n - pi * NR) {
                        let j = pi * NR + jj;
                        let src = &bytes[(j * kb + b) * src_block..(j * kb + b + 1) * src_block];
                        let (mut d, mut m) = (0u16, 0u16);
                        decode(src, &mut d, &mut m, &mut q);
                        dst[2 * jj..2 * jj + 2].copy_from_slice(&d.to_le_bytes());
                        match format {
                            QFormat::Q8 => {
                                for p in 0..QBLOCK {
                                    dst[2 * NR + p * NR + jj] = q[p];
                                }
                            }
                            QFormat::Q4 => {
                                dst[2 * NR + 2 * jj..2 * NR + 2 * jj + 2]
                                    .copy_from_slice(&m.to_le_bytes());
                                for pp in 0..QBLOCK / 2 {
                                    dst[4 * NR + pp * NR + jj] = q[2 * pp] | (q[2 * pp + 1] << 4);
                                }
                            }
                        }
                    }
                }
            });
        Ok(Self { format, n, k, data })
    }

    pub fn format(&self) -> QFormat {
        self.format
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn block_ptr(&self, pi: usize, b: usize) -> *const u8 {
        let kb = self.k / QBLOCK;
        // SAFETY: callers pass pi < panels and b < kb.
        unsafe {
            self.data
                .as_ptr()
                .add((pi * kb + b) * self.format.block_bytes())
        }
    }

    /// Weight `(p, j)` (depth `p`, column `j`), dequantized (for tests and slow paths).
    pub fn get(&self, p: usize, j: usize) -> f32 {
        let bb = self.format.block_bytes();
        let kb = self.k / QBLOCK;
        let (pi, jj, b, pp) = (j / NR, j % NR, p / QBLOCK, p % QBLOCK);
        let blk = &self.data[(pi * kb + b) * bb..(pi * kb + b + 1) * bb];
        let d = half::f16::from_bits(f16_at(blk, 2 * jj)).to_f32();
        match self.format {
            QFormat::Q8 => d * blk[2 * NR + pp * NR + jj] as i8 as f32,
            QFormat::Q4 => {
                let m = half::f16::from_bits(f16_at(blk, 2 * NR + 2 * jj)).to_f32();
                let byte = blk[4 * NR + (pp / 2) * NR + jj];
                let q = if pp % 2 == 0 { byte & 15 } else { byte >> 4 };
                d * q as f32 + m
            }
        }
    }
}

impl RhsPanels for PackedQ {
    type Elem = f32;
    type Raw = f32;

    fn raw_panel(&self, _pi: usize, _k0: usize) -> Option<*const f32> {
        None
    }

    fn n(&self) -> usize {
        self.n
    }

    fn k(&self) -> usize {
        self.k
    }

    /// Dequantizes rows `k0..k0 + kc` of a panel into `scratch` (GEMM with several rows: the cost
    /// is shared by every row tile of the block).
    #[inline(always)]
    unsafe fn panel<S: Simd>(
        &self,
        pi: usize,
        k0: usize,
        kc: usize,
        scratch: &mut Vec<f32>,
    ) -> *const f32 {
        debug_assert!(k0.is_multiple_of(QBLOCK) && kc.is_multiple_of(QBLOCK));
        if scratch.len() < kc * NR {
            scratch.resize(kc * NR, 0.0);
        }
        let out = scratch.as_mut_ptr();
        let nv = NR / S::LANES;
        for b in 0..kc / QBLOCK {
            let blk = self.block_ptr(pi, k0 / QBLOCK + b);
            let o = out.add(b * QBLOCK * NR);
            let mut sc = [S::zero(); NR];
            for (v, s) in sc.iter_mut().enumerate().take(nv) {
                *s = S::load_f16((blk as *const u16).add(v * S::LANES));
            }
            match self.format {
                QFormat::Q8 => {
                    let q = blk.add(2 * NR) as *const i8;
                    for p in 0..QBLOCK {
                        for v in 0..nv {
                            let w = S::mul(S::load_i8(q.add(p * NR + v * S::LANES)), sc[v]);
                            S::store(o.add(p * NR + v * S::LANES), w);
                        }
                    }
                }
                QFormat::Q4 => {
                    let mut mn = [S::zero(); NR];
                    for (v, m) in mn.iter_mut().enumerate().take(nv) {
                        *m = S::load_f16((blk as *const u16).add(NR + v * S::LANES));
                    }
                    let q = blk.add(4 * NR);
                    for pp in 0..QBLOCK / 2 {
                        for v in 0..nv {
                            let (lo, hi) = S::load_nibbles(q.add(pp * NR + v * S::LANES));
                            S::store(o.add(2 * pp * NR + v * S::LANES), S::fma(lo, sc[v], mn[v]));
                            S::store(
                                o.add((2 * pp + 1) * NR + v * S::LANES),
                                S::fma(hi, sc[v], mn[v]),
                            );
                        }
                    }
                }
            }
        }
        out
    }

    /// One row: streams the quantized blocks once, accumulating per block and scaling at its end.
    #[inline(always)]
    unsafe fn gemv<S: Simd>(
        &self,
        x: *const f32,
        p0: usize,
        p1: usize,
        c: *mut f32,
        ep: &Epilogue,
    ) {
        let kb = self.k / QBLOCK;
        let nv = NR / S::LANES;
        // block sums of x, for the 4-bit minimums
        let mut xsum = vec![0f32; if self.format == QFormat::Q4 { kb } else { 0 }];
        for (b, s) in xsum.iter_mut().enumerate() {
            *s = (0..QBLOCK).map(|p| *x.add(b * QBLOCK + p)).sum();
        }
        let mut tile = Tile([0f32; 8 * NR]);
        for pi in p0..p1 {
            let mut acc = [S::zero(); NR];
            for b in 0..kb {
                let blk = self.block_ptr(pi, b);
                let xb = x.add(b * QBLOCK);
                let mut a0 = [S::zero(); NR];
                let mut a1 = [S::zero(); NR];
                match self.format {
                    QFormat::Q8 => {
                        let q = blk.add(2 * NR) as *const i8;
                        let mut p = 0;
                        while p < QBLOCK {
                            let (x0, x1) = (S::splat(*xb.add(p)), S::splat(*xb.add(p + 1)));
                            for v in 0..nv {
                                a0[v] = S::fma(x0, S::load_i8(q.add(p * NR + v * S::LANES)), a0[v]);
                                a1[v] = S::fma(
                                    x1,
                                    S::load_i8(q.add((p + 1) * NR + v * S::LANES)),
                                    a1[v],
                                );
                            }
                            p += 2;
                        }
                        for v in 0..nv {
                            let sc = S::load_f16((blk as *const u16).add(v * S::LANES));
                            acc[v] = S::fma(S::add(a0[v], a1[v]), sc, acc[v]);
                        }
                    }
                    QFormat::Q4 => {
                        let q = blk.add(4 * NR);
                        for pp in 0..QBLOCK / 2 {
                            let (x0, x1) =
                                (S::splat(*xb.add(2 * pp)), S::splat(*xb.add(2 * pp + 1)));
                            for v in 0..nv {
                                let (lo, hi) = S::load_nibbles(q.add(pp * NR + v * S::LANES));
                                a0[v] = S::fma(x0, lo, a0[v]);
                                a1[v] = S::fma(x1, hi, a1[v]);
                            }
                        }
                        let xs = S::splat(xsum[b]);
                        for v in 0..nv {
                            let sc = S::load_f16((blk as *const u16).add(v * S::LANES));
                            let mn = S::load_f16((blk as *const u16).add(NR + v * S::LANES));
                            acc[v] = S::fma(S::add(a0[v], a1[v]), sc, S::fma(mn, xs, acc[v]));
                        }
                    }
                }
            }
            for v in 0..nv {
                S::store(tile.0.as_mut_ptr().add(v * S::LANES), acc[v]);
            }
            let j0 = pi * NR;
            epilogue::<S>(
                tile.0.as_ptr(),
                1,
                NR.min(self.n - j0),
                c.add(j0),
                0,
                j0,
                ep,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::{gemm_isa, Residual};
    use super::super::simd::Isa;
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

    /// Quantizes `[n, k]` rows into GGUF blocks the way candle does (reference: its own kernels).
    fn gguf(w: &[f32], n: usize, k: usize, dtype: candle_core::quantized::GgmlDType) -> Vec<u8> {
        let t = candle_core::Tensor::from_slice(w, (n, k), &candle_core::Device::Cpu).unwrap();
        let q = candle_core::quantized::QTensor::quantize(&t, dtype).unwrap();
        q.data().unwrap().into_owned()
    }

    #[test]
    fn repacked_weights_dequantize_like_candle_and_multiply_on_every_isa() {
        use candle_core::quantized::GgmlDType;
        for (dtype, fmt) in [
            (GgmlDType::Q8_0, QFormat::Q8),
            (GgmlDType::Q4_1, QFormat::Q4),
        ] {
            for &(m, n, k) in &[(1, 50, 64), (1, 97, 320), (5, 48, 32), (37, 130, 544)] {
                let w = pseudo(n * k, 3);
                let bytes = gguf(&w, n, k, dtype);
                let t =
                    candle_core::Tensor::from_slice(&w, (n, k), &candle_core::Device::Cpu).unwrap();
                let deq: Vec<f32> = candle_core::quantized::QTensor::quantize(&t, dtype)
                    .unwrap()
                    .dequantize(&candle_core::Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let pq = match fmt {
                    QFormat::Q8 => PackedQ::from_q8_0(&bytes, n, k).unwrap(),
                    QFormat::Q4 => PackedQ::from_q4_1(&bytes, n, k).unwrap(),
                };
                for j in 0..n {
                    for p in 0..k {
                        assert_eq!(pq.get(p, j), deq[j * k + p], "{fmt:?} ({p},{j})");
                    }
                }
                let a = pseudo(m * k, 4);
                let bias = pseudo(n, 5);
                let c0 = pseudo(m * n, 6);
                for isa in Isa::all_supported() {
                    let mut c = c0.clone();
                    let ep = Epilogue::bias(Some(&bias)).with_residual(Residual::Add);
                    gemm_isa(isa, &a, k, m, &pq, &mut c, n, ep, true);
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = c0[i * n + j] as f64
                                + bias[j] as f64
                                + (0..k)
                                    .map(|p| a[i * k + p] as f64 * deq[j * k + p] as f64)
                                    .sum::<f64>();
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                                "{isa:?} {fmt:?} m{m} n{n} k{k} ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(PackedQ::from_q8_0(&[0; 34], 1, 48).is_err());
        assert!(PackedQ::from_q8_0(&[0; 33], 1, 32).is_err());
        assert!(PackedQ::from_q4_1(&[0; 20], 1, 32).is_ok());
    }
}
