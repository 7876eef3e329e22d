//! Single-precision GEMM on pre-packed weights, with a fused epilogue.
//!
//! `c[i, j] = epilogue(Σ_p a[i, p] · b[p, j])`: `a` is a row-major f32 matrix (activations, any row
//! stride), `b` is a weight matrix packed once at load time into panels of [`NR`] columns
//! (`[k][NR]` each, zero-padded), stored as f32, bf16 or f16 and widened to f32 in registers, so the
//! arithmetic is always f32. The epilogue adds a bias, applies GELU / SiLU / ReLU and adds the result
//! to what `c` holds (optionally scaled per column: FastViT's layer-scale residual), all on the tile
//! while it is in cache.
//!
//! Blocking follows BLIS: for each block of `MC` rows and `KC` depth the rows of `a` are packed into
//! `MR`-row micro-panels; a register-tiled micro-kernel (`8 × 48` on AVX-512, `6 × 48` on AVX2,
//! `4 × 48` scalar) multiplies one micro-panel with one weight panel. Work is split over rayon
//! threads by row blocks and, when there are few rows, by column panels. One row (LLM decoding) takes
//! a streaming matrix-vector path instead.

use rayon::prelude::*;

use super::simd::{dispatch_with, Isa, Simd, SimdFn};

/// Columns of a packed weight panel (three AVX-512 registers).
pub const NR: usize = 48;
/// Depth of one packed block.
const KC: usize = 256;
/// Depth steps ahead that the micro-kernels prefetch the weight panel (measured: +5–10 % on
/// compute-bound shapes, up to 2× when few rows stream large weights).
const PREFETCH: usize = 8;
/// Rows of one packed block (a multiple of every micro-kernel's MR: 4, 6, 8).
const MC: usize = 144;

/// Element type of packed weights, widened to f32 when loaded.
pub trait BElem: Copy + Send + Sync + Default + 'static {
    /// Loads `S::LANES` elements as f32.
    ///
    /// # Safety
    /// `p` must point to `S::LANES` readable elements and the CPU must support `S`.
    unsafe fn load<S: Simd>(p: *const Self) -> S::V;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    const NAME: &'static str;
}

impl BElem for f32 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f32) -> S::V {
        S::load(p)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    const NAME: &'static str = "f32";
}

impl BElem for half::bf16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const half::bf16) -> S::V {
        S::load_bf16(p as *const u16)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    const NAME: &'static str = "bf16";
}

impl BElem for half::f16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const half::f16) -> S::V {
        S::load_f16(p as *const u16)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    const NAME: &'static str = "f16";
}

/// A `[k, n]` matrix (the right-hand operand) packed into `ceil(n / NR)` panels of `[k][NR]`.
#[derive(Debug, Clone)]
pub struct PackedB<T: BElem = f32> {
    n: usize,
    k: usize,
    data: Vec<T>,
}

impl<T: BElem> PackedB<T> {
    /// Packs the matrix whose element `(p, j)` (depth `p < k`, column `j < n`) is `get(p, j)`.
    pub fn pack_with(k: usize, n: usize, get: impl Fn(usize, usize) -> T + Sync) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![T::default(); panels * k * NR];
        if k > 0 {
            data.par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(pi, panel)| {
                    let j0 = pi * NR;
                    let w = NR.min(n - j0);
                    for (p, row) in panel.chunks_mut(NR).enumerate() {
                        for (jj, v) in row[..w].iter_mut().enumerate() {
                            *v = get(p, j0 + jj);
                        }
                    }
                });
        }
        Self { n, k, data }
    }

    /// Packs a PyTorch `Linear` / 1×1-conv weight `w[n][k]` (out × in, row-major), so that
    /// `a · packed` computes `a · wᵀ`.
    pub fn from_out_in<S: Copy + Sync>(
        w: &[S],
        n: usize,
        k: usize,
        conv: impl Fn(S) -> T + Sync,
    ) -> Self {
        assert_eq!(w.len(), n * k, "PackedB::from_out_in: weight size");
        // column-blocked transpose: read rows of w, write panel rows
        let panels = n.div_ceil(NR);
        let mut data = vec![T::default(); panels * k * NR];
        if k > 0 {
            data.par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(pi, panel)| {
                    let j0 = pi * NR;
                    for jj in 0..NR.min(n - j0) {
                        let src = &w[(j0 + jj) * k..(j0 + jj + 1) * k];
                        for (p, &v) in src.iter().enumerate() {
                            panel[p * NR + jj] = conv(v);
                        }
                    }
                });
        }
        Self { n, k, data }
    }

    /// Packs the `[n, k]` matrix (out × in) whose row `j` `row(j, buf)` writes into `buf` (`k`
    /// elements), so that `a · packed` computes `a · matrixᵀ`.
    pub fn from_rows(n: usize, k: usize, row: impl Fn(usize, &mut [T]) + Sync) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![T::default(); panels * k * NR];
        if k > 0 {
            data.par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(pi, panel)| {
                    let mut buf = vec![T::default(); k];
                    for jj in 0..NR.min(n - pi * NR) {
                        row(pi * NR + jj, &mut buf);
                        for (p, &v) in buf.iter().enumerate() {
                            panel[p * NR + jj] = v;
                        }
                    }
                });
        }
        Self { n, k, data }
    }

    /// Packs a row-major `[k][n]` matrix with row stride `rs` (e.g. V in attention).
    pub fn from_in_out(src: &[f32], k: usize, n: usize, rs: usize) -> Self {
        assert!(
            k == 0 || src.len() >= (k - 1) * rs + n,
            "PackedB::from_in_out: size"
        );
        Self::pack_with(k, n, |p, j| T::from_f32(src[p * rs + j]))
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<T>()
    }

    /// Element `(p, j)` (for tests and slow paths).
    pub fn get(&self, p: usize, j: usize) -> f32 {
        self.data[((j / NR) * self.k + p) * NR + j % NR].to_f32()
    }

    #[inline(always)]
    fn panel_ptr(&self, pi: usize, p0: usize) -> *const T {
        debug_assert!(pi < self.panels() && p0 <= self.k);
        // SAFETY: inside `data` by the assertion above.
        unsafe { self.data.as_ptr().add((pi * self.k + p0) * NR) }
    }
}

/// The right-hand operand of [`gemm`]: `n` columns in panels of [`NR`], depth `k`.
pub trait RhsPanels: Sync {
    /// Element type of the panels handed to the micro-kernel.
    type Elem: BElem;
    /// Element type of the panels as stored, when the micro-kernel can read them directly.
    type Raw: BElem;
    fn n(&self) -> usize;
    fn k(&self) -> usize;
    /// Rows `k0..k0 + kc` of panel `pi` (`[kc][NR]`): in place, or unpacked into `scratch`.
    ///
    /// # Safety
    /// The CPU must support `S`; the returned pointer is valid while `self` and `scratch` are.
    unsafe fn panel<S: Simd>(
        &self,
        pi: usize,
        k0: usize,
        kc: usize,
        scratch: &mut Vec<f32>,
    ) -> *const Self::Elem;
    /// Rows from `k0` of panel `pi` as stored (`[k - k0][NR]`), when the micro-kernel can widen
    /// them itself: cheaper than [`Self::panel`] when few row tiles share the panel.
    fn raw_panel(&self, pi: usize, k0: usize) -> Option<*const Self::Raw>;
    /// One row `x` (`k` floats) times panels `p0..p1`, through the epilogue into `c` (the row).
    ///
    /// # Safety
    /// The CPU must support `S`; `c` holds `n` floats and nobody else writes these panels' columns.
    unsafe fn gemv<S: Simd>(&self, x: *const f32, p0: usize, p1: usize, c: *mut f32, ep: &Epilogue);
}

impl<T: BElem> RhsPanels for PackedB<T> {
    type Elem = f32;
    type Raw = T;
    fn raw_panel(&self, pi: usize, k0: usize) -> Option<*const T> {
        Some(self.panel_ptr(pi, k0))
    }
    fn n(&self) -> usize {
        self.n
    }
    fn k(&self) -> usize {
        self.k
    }
    /// f32 panels are used in place; half-precision ones are widened once per chunk into
    /// `scratch` (shared by every row tile of the block) rather than in the micro-kernel's loop.
    #[inline(always)]
    unsafe fn panel<S: Simd>(
        &self,
        pi: usize,
        k0: usize,
        kc: usize,
        scratch: &mut Vec<f32>,
    ) -> *const f32 {
        let src = self.panel_ptr(pi, k0);
        if T::NAME == "f32" {
            return src as *const f32;
        }
        if scratch.len() < kc * NR {
            scratch.resize(kc * NR, 0.0);
        }
        let dst = scratch.as_mut_ptr();
        let mut i = 0;
        while i < kc * NR {
            S::store(dst.add(i), T::load::<S>(src.add(i)));
            i += S::LANES;
        }
        dst
    }
    #[inline(always)]
    unsafe fn gemv<S: Simd>(
        &self,
        x: *const f32,
        p0: usize,
        p1: usize,
        c: *mut f32,
        ep: &Epilogue,
    ) {
        let k = self.k;
        let n = self.n;
        let nv = NR / S::LANES;
        let mut tile = Tile([0f32; 8 * NR]);
        for pi in p0..p1 {
            let bp = self.panel_ptr(pi, 0);
            // two interleaved accumulator sets hide the FMA latency
            let mut acc0 = [S::zero(); 48];
            let mut acc1 = [S::zero(); 48];
            let mut p = 0;
            while p + 2 <= k {
                let x0 = S::splat(*x.add(p));
                let x1 = S::splat(*x.add(p + 1));
                for v in 0..nv {
                    acc0[v] = S::fma(x0, T::load::<S>(bp.add(p * NR + v * S::LANES)), acc0[v]);
                    acc1[v] = S::fma(
                        x1,
                        T::load::<S>(bp.add((p + 1) * NR + v * S::LANES)),
                        acc1[v],
                    );
                }
                p += 2;
            }
            if p < k {
                let x0 = S::splat(*x.add(p));
                for v in 0..nv {
                    acc0[v] = S::fma(x0, T::load::<S>(bp.add(p * NR + v * S::LANES)), acc0[v]);
                }
            }
            for v in 0..nv {
                S::store(
                    tile.0.as_mut_ptr().add(v * S::LANES),
                    S::add(acc0[v], acc1[v]),
                );
            }
            let j0 = pi * NR;
            epilogue::<S>(tile.0.as_ptr(), 1, NR.min(n - j0), c.add(j0), 0, j0, ep);
        }
    }
}

/// Activation applied in the epilogue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Act {
    #[default]
    None,
    Gelu,
    Silu,
    Relu,
}

/// How the result combines with what `c` already holds.
#[derive(Debug, Clone, Copy, Default)]
pub enum Residual<'a> {
    /// `c = v`
    #[default]
    None,
    /// `c = c + v`
    Add,
    /// `c = c + scale[j] · v` (layer scale)
    Scaled(&'a [f32]),
}

/// Per-element work fused into the GEMM's store: `v = act(acc + bias[j])`, then [`Residual`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub act: Act,
    pub residual: Residual<'a>,
}

impl<'a> Epilogue<'a> {
    pub fn bias(bias: Option<&'a [f32]>) -> Self {
        Self {
            bias,
            ..Default::default()
        }
    }

    pub fn with_act(mut self, act: Act) -> Self {
        self.act = act;
        self
    }

    pub fn with_residual(mut self, residual: Residual<'a>) -> Self {
        self.residual = residual;
        self
    }
}

/// A raw pointer that may cross threads: every thread writes a disjoint part of the output.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes, coordinated by the work split below.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `c[i·ldc + j] = epilogue(Σ_p a[i·lda + p] · b(p, j))` for `i < m`, `j < b.n()`. Runs on the rayon
/// pool when `parallel`.
#[allow(clippy::too_many_arguments)]
pub fn gemm<R: RhsPanels>(
    a: &[f32],
    lda: usize,
    m: usize,
    b: &R,
    c: &mut [f32],
    ldc: usize,
    ep: Epilogue,
    parallel: bool,
) {
    gemm_isa(Isa::detect(), a, lda, m, b, c, ldc, ep, parallel)
}

/// [`gemm`] with an explicit instruction set (which the CPU must support).
#[allow(clippy::too_many_arguments)]
pub fn gemm_isa<R: RhsPanels>(
    isa: Isa,
    a: &[f32],
    lda: usize,
    m: usize,
    b: &R,
    c: &mut [f32],
    ldc: usize,
    ep: Epilogue,
    parallel: bool,
) {
    let (n, k) = (b.n(), b.k());
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= k && ldc >= n, "gemm: strides");
    assert!(a.len() >= (m - 1) * lda + k, "gemm: lhs too small");
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: output too small");
    if let Some(bias) = ep.bias {
        assert!(bias.len() >= n, "gemm: bias too small");
    }
    if let Residual::Scaled(s) = ep.residual {
        assert!(s.len() >= n, "gemm: residual scale too small");
    }
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let cp = SendPtr(c.as_mut_ptr());
    let panels = n.div_ceil(NR);
    if m == 1 {
        let groups = if threads > 1 && k * n >= 1 << 15 {
            (threads * 4).min(panels)
        } else {
            1
        };
        let per = panels.div_ceil(groups);
        let job = |g: usize| {
            let (p0, p1) = (g * per, ((g + 1) * per).min(panels));
            if p0 < p1 {
                dispatch_with(
                    isa,
                    Gemv {
                        x: a.as_ptr(),
                        b,
                        c: cp,
                        p0,
                        p1,
                        ep,
                    },
                );
            }
        };
        if groups > 1 {
            (0..groups).into_par_iter().for_each(job);
        } else {
            job(0);
        }
        return;
    }
    let m_blocks = m.div_ceil(MC);
    let target = 4 * threads;
    let n_groups = if threads == 1 || m_blocks >= target {
        1
    } else {
        panels.min(target.div_ceil(m_blocks))
    };
    let per = panels.div_ceil(n_groups);
    let n_groups = panels.div_ceil(per);
    let items = m_blocks * n_groups;
    let job = |it: usize| {
        let (mb, g) = (it / n_groups, it % n_groups);
        let m0 = mb * MC;
        BUFFERS.with(|bufs| {
            let mut bufs = bufs.borrow_mut();
            let (apack, scratch, unpacked) = &mut *bufs;
            dispatch_with(
                isa,
                Block {
                    a: a.as_ptr(),
                    lda,
                    b,
                    c: cp,
                    ldc,
                    ep,
                    m0,
                    rows: MC.min(m - m0),
                    p0: g * per,
                    p1: ((g + 1) * per).min(panels),
                    apack,
                    scratch,
                    unpacked,
                },
            )
        });
    };
    if items > 1 && threads > 1 {
        (0..items).into_par_iter().for_each(job);
    } else {
        (0..items).for_each(job);
    }
}

/// Rows of one fused-MLP block: its hidden activations (`rows × hidden` floats) stay within about
/// 1 MiB, in the core's L2 cache.
fn mlp_rows(hidden: usize) -> usize {
    ((1 << 18) / hidden.max(1)).clamp(16, 256) / 8 * 8
}

/// Whether [`mlp_fused`] pays off: many rows (the early, large feature maps) and weights small
/// enough to be re-read once per row block from cache.
pub fn mlp_fusable(m: usize, hidden: usize) -> bool {
    let rows = mlp_rows(hidden);
    m >= 4 * rows * rayon::current_num_threads().max(1) && hidden <= 2048
}

thread_local! {
    static HIDDEN: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A two-layer MLP in row blocks: `c = ep2(act(a · w1 + b1) · w2)` where the hidden activations
/// of each block of rows never leave the cache (no `m × hidden` buffer is written or read back).
/// `c` is `[m, w2.n()]` row-major; rows are split across the rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn mlp_fused<R1: RhsPanels, R2: RhsPanels>(
    a: &[f32],
    m: usize,
    w1: &R1,
    ep1: Epilogue,
    w2: &R2,
    ep2: Epilogue,
    c: &mut [f32],
) {
    let (k, hidden, n) = (w1.k(), w1.n(), w2.n());
    assert_eq!(w2.k(), hidden, "mlp_fused: inner widths");
    assert_eq!(a.len(), m * k, "mlp_fused: input size");
    assert_eq!(c.len(), m * n, "mlp_fused: output size");
    let isa = Isa::detect();
    let rows = mlp_rows(hidden);
    c.par_chunks_mut(rows * n)
        .zip(a.par_chunks(rows * k))
        .for_each(|(cb, ab)| {
            let r = ab.len() / k.max(1);
            HIDDEN.with(|h| {
                let mut h = h.borrow_mut();
                if h.len() < r * hidden {
                    h.resize(r * hidden, 0.0);
                }
                gemm_isa(isa, ab, k, r, w1, &mut h[..r * hidden], hidden, ep1, false);
                gemm_isa(isa, &h[..r * hidden], hidden, r, w2, cb, n, ep2, false);
            });
        });
}

thread_local! {
    /// Per-thread buffers: packed rows of `a`, partial sums when `k > KC`, unpacked weights.
    #[allow(clippy::type_complexity)]
    static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// One block of rows × a range of column panels.
struct Block<'a, 'e, R: RhsPanels> {
    a: *const f32,
    lda: usize,
    b: &'a R,
    c: SendPtr,
    ldc: usize,
    ep: Epilogue<'e>,
    m0: usize,
    rows: usize,
    p0: usize,
    p1: usize,
    apack: &'a mut Vec<f32>,
    scratch: &'a mut Vec<f32>,
    unpacked: &'a mut Vec<f32>,
}

impl<R: RhsPanels> SimdFn for Block<'_, '_, R> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        let mr = S::GEMM_MR;
        let k = self.b.k();
        let tiles = self.rows.div_ceil(mr);
        let n = self.b.n();
        let chunks = k.div_ceil(KC).max(1);
        let full_tiles = self.rows / mr;
        let part_rows = self.rows - full_tiles * mr;
        // Full tiles read `a` in place; the last, partial tile is packed once for the whole depth,
        // chunk by chunk (`[kc][mr]` each), zero-padded to MR rows.
        grow(self.apack, mr * k.max(1));
        if part_rows > 0 {
            for ci in 0..chunks {
                let k0 = ci * KC;
                let kc = KC.min(k - k0);
                // SAFETY: rows m0..m0+rows of `a` exist (checked by `gemm`); apack holds mr·k.
                unsafe {
                    pack_a(
                        self.a,
                        self.lda,
                        self.m0 + full_tiles * mr,
                        part_rows,
                        k0,
                        kc,
                        mr,
                        self.apack.as_mut_ptr().add(mr * k0),
                    )
                };
            }
        }
        // one accumulator tile per row tile, kept across the depth chunks of one panel
        if chunks > 1 {
            grow(self.scratch, tiles * mr * NR);
        }
        let mut tile = Tile([0f32; 8 * NR]);
        for pi in self.p0..self.p1 {
            let j0 = pi * NR;
            let cols = NR.min(n - j0);
            for ci in 0..chunks {
                let k0 = ci * KC;
                let kc = KC.min(k - k0);
                let (first, last) = (ci == 0, ci + 1 == chunks);
                // Few row tiles: let the micro-kernel widen stored half-precision weights itself;
                // many: widen (or dequantize) the chunk once for all of them.
                let raw = if tiles < 6 {
                    self.b.raw_panel(pi, k0)
                } else {
                    None
                };
                // SAFETY: the CPU supports S (dispatch); the panel stays valid during this loop.
                let bp = match raw {
                    Some(_) => std::ptr::null(),
                    None => unsafe { self.b.panel::<S>(pi, k0, kc, self.unpacked) },
                };
                for t in 0..tiles {
                    let r0 = t * mr;
                    let rows = mr.min(self.rows - r0);
                    // SAFETY: full tiles read mr rows × kc columns of `a` in range; apack holds
                    // the packed rest; the panel has kc·NR elements; the tile (stack or scratch
                    // slot) mr·NR floats; the output rows/cols are in range.
                    unsafe {
                        let (ap, rs, cs) = if t < full_tiles {
                            (self.a.add((self.m0 + r0) * self.lda + k0), self.lda, 1)
                        } else {
                            (self.apack.as_ptr().add(mr * k0), 1, mr)
                        };
                        let tp = if chunks == 1 {
                            tile.0.as_mut_ptr()
                        } else {
                            self.scratch.as_mut_ptr().add(t * mr * NR)
                        };
                        match raw {
                            Some(rp) => S::gemm_ukr::<R::Raw>(kc, ap, rs, cs, rp, tp, !first),
                            None => S::gemm_ukr::<R::Elem>(kc, ap, rs, cs, bp, tp, !first),
                        }
                        if last {
                            let cptr = self.c.0.add((self.m0 + r0) * self.ldc + j0);
                            epilogue::<S>(tp, rows, cols, cptr, self.ldc, j0, &self.ep);
                        }
                    }
                }
            }
        }
    }
}

#[repr(align(64))]
pub(crate) struct Tile(pub(crate) [f32; 8 * NR]);

/// Packs rows `m0..m0 + rows` (zero beyond `m`), depth `k0..k0 + kc`, of `a` into `mr`-row
/// micro-panels: `dst[(t·kc + p)·mr + r] = a[(m0 + t·mr + r)·lda + k0 + p]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pack_a(
    a: *const f32,
    lda: usize,
    m0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    mr: usize,
    dst: *mut f32,
) {
    let tiles = rows.div_ceil(mr);
    for t in 0..tiles {
        let d = dst.add(t * mr * kc);
        for r in 0..mr {
            let i = t * mr + r;
            if i < rows {
                let src = a.add((m0 + i) * lda + k0);
                for p in 0..kc {
                    *d.add(p * mr + r) = *src.add(p);
                }
            } else {
                for p in 0..kc {
                    *d.add(p * mr + r) = 0.0;
                }
            }
        }
    }
}

/// Writes `rows × cols` of a tile (row stride [`NR`]) to `c` through the epilogue; `j0` is the
/// tile's first column (for bias and scale).
#[inline(always)]
pub(crate) unsafe fn epilogue<S: Simd>(
    tile: *const f32,
    rows: usize,
    cols: usize,
    c: *mut f32,
    ldc: usize,
    j0: usize,
    ep: &Epilogue,
) {
    for r in 0..rows {
        let crow = c.add(r * ldc);
        let trow = tile.add(r * NR);
        let mut j = 0;
        while j < cols {
            let w = S::LANES.min(cols - j);
            let mut v = S::load(trow.add(j));
            if let Some(bias) = ep.bias {
                v = S::add(v, S::load_n(bias.as_ptr().add(j0 + j), w));
            }
            v = match ep.act {
                Act::None => v,
                Act::Gelu => S::gelu(v),
                Act::Silu => S::silu(v),
                Act::Relu => S::max(v, S::zero()),
            };
            v = match ep.residual {
                Residual::None => v,
                Residual::Add => S::add(S::load_n(crow.add(j), w), v),
                Residual::Scaled(s) => S::fma(
                    S::load_n(s.as_ptr().add(j0 + j), w),
                    v,
                    S::load_n(crow.add(j), w),
                ),
            };
            S::store_n(crow.add(j), v, w);
            j += S::LANES;
        }
    }
}

/// One row times a range of panels (decoding): streams the weights once.
struct Gemv<'a, 'e, R: RhsPanels> {
    x: *const f32,
    b: &'a R,
    c: SendPtr,
    p0: usize,
    p1: usize,
    ep: Epilogue<'e>,
}

impl<R: RhsPanels> SimdFn for Gemv<'_, '_, R> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        // SAFETY: the dispatcher checked the ISA; `gemm` checked the sizes of x and c.
        unsafe {
            self.b
                .gemv::<S>(self.x, self.p0, self.p1, self.c.0, &self.ep)
        }
    }
}

/// Scalar micro-kernel, 4 × 48.
///
/// # Safety
/// See [`Simd::gemm_ukr`]: `a` readable at `r·a_rs + p·a_cs` for `r < 4`, `p < kc`; `b` holds
/// `kc · NR` elements; `tile` `4 · NR` floats.
#[inline(always)]
pub unsafe fn ukr_scalar<T: BElem>(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    tile: *mut f32,
    load: bool,
) {
    const MR: usize = 4;
    let mut acc = [[0f32; NR]; MR];
    if load {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = *tile.add(r * NR + j);
            }
        }
    }
    for p in 0..kc {
        let brow = b.add(p * NR);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = *a.add(r * a_rs + p * a_cs);
            for (j, v) in row.iter_mut().enumerate() {
                *v += av * (*brow.add(j)).to_f32();
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            *tile.add(r * NR + j) = *v;
        }
    }
}

/// AVX2 micro-kernel: 6 rows × 48 columns, as three 6 × 16 register tiles.
///
/// # Safety
/// The CPU must have AVX2 and FMA; pointers as for [`ukr_scalar`] with 6 rows.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn ukr_avx2<T: BElem>(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    tile: *mut f32,
    load: bool,
) {
    use super::simd::Avx2;
    use std::arch::x86_64::*;
    const MR: usize = 6;
    for s in 0..3 {
        let mut acc = [_mm256_setzero_ps(); 12];
        if load {
            for r in 0..MR {
                acc[2 * r] = _mm256_loadu_ps(tile.add(r * NR + s * 16));
                acc[2 * r + 1] = _mm256_loadu_ps(tile.add(r * NR + s * 16 + 8));
            }
        }
        let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r * a_rs));
        let mut bp = b.add(s * 16);
        let mut o = 0;
        for _ in 0..kc {
            if s == 0 {
                let q = bp.wrapping_add(PREFETCH * NR) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(q);
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(128));
            }
            let b0 = T::load::<Avx2>(bp);
            let b1 = T::load::<Avx2>(bp.add(8));
            for r in 0..MR {
                let av = _mm256_broadcast_ss(&*rows[r].add(o));
                acc[2 * r] = _mm256_fmadd_ps(av, b0, acc[2 * r]);
                acc[2 * r + 1] = _mm256_fmadd_ps(av, b1, acc[2 * r + 1]);
            }
            o += a_cs;
            bp = bp.add(NR);
        }
        for r in 0..MR {
            _mm256_storeu_ps(tile.add(r * NR + s * 16), acc[2 * r]);
            _mm256_storeu_ps(tile.add(r * NR + s * 16 + 8), acc[2 * r + 1]);
        }
    }
}

/// AVX-512 micro-kernel: 8 rows × 48 columns in 24 registers.
///
/// # Safety
/// The CPU must have AVX-512F; pointers as for [`ukr_scalar`] with 8 rows.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn ukr_avx512<T: BElem>(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    tile: *mut f32,
    load: bool,
) {
    use super::simd::Avx512;
    use std::arch::x86_64::*;
    const MR: usize = 8;
    let mut acc = [_mm512_setzero_ps(); 24];
    if load {
        for r in 0..MR {
            for v in 0..3 {
                acc[3 * r + v] = _mm512_loadu_ps(tile.add(r * NR + v * 16));
            }
        }
    }
    // one base pointer per row and a shared offset: independent addresses, no add chain
    let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r * a_rs));
    let mut bp = b;
    let mut o = 0;
    for _ in 0..kc {
        // fetch the weights 8 depth steps ahead (no fault past the end: prefetches never fault)
        let q = bp.wrapping_add(PREFETCH * NR) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(q);
        _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(64));
        _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(128));
        let b0 = T::load::<Avx512>(bp);
        let b1 = T::load::<Avx512>(bp.add(16));
        let b2 = T::load::<Avx512>(bp.add(32));
        for r in 0..MR {
            let av = _mm512_set1_ps(*rows[r].add(o));
            acc[3 * r] = _mm512_fmadd_ps(av, b0, acc[3 * r]);
            acc[3 * r + 1] = _mm512_fmadd_ps(av, b1, acc[3 * r + 1]);
            acc[3 * r + 2] = _mm512_fmadd_ps(av, b2, acc[3 * r + 2]);
        }
        o += a_cs;
        bp = bp.add(NR);
    }
    for r in 0..MR {
        for v in 0..3 {
            _mm512_storeu_ps(tile.add(r * NR + v * 16), acc[3 * r + v]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn ukr_avx2<T: BElem>(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    tile: *mut f32,
    load: bool,
) {
    ukr_scalar(kc, a, a_rs, a_cs, b, tile, load)
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn ukr_avx512<T: BElem>(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    tile: *mut f32,
    load: bool,
) {
    ukr_scalar(kc, a, a_rs, a_cs, b, tile, load)
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

    fn gelu(x: f64) -> f64 {
        0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / 2f64.sqrt()))
    }

    #[test]
    fn gemm_matches_naive_for_every_shape_epilogue_dtype_and_isa() {
        // shapes around the block edges: m (1, tails of MR and MC), n (tails of NR), k (tails of KC)
        let shapes = [
            (1, 5, 3),
            (1, 100, 600),
            (2, 48, 7),
            (7, 49, 96),
            (13, 97, 530),
            (150, 50, 40),
            (300, 200, 1100),
        ];
        for isa in Isa::all_supported() {
            for &(m, n, k) in &shapes {
                let lda = k + 3;
                let ldc = n + 2;
                let a = pseudo((m - 1) * lda + k, 1);
                let w = pseudo(n * k, 2);
                let bias = pseudo(n, 3);
                let scale = pseudo(n, 4);
                let c0 = pseudo((m - 1) * ldc + n, 5);
                for (ei, act) in [Act::None, Act::Gelu, Act::Silu, Act::Relu]
                    .iter()
                    .enumerate()
                {
                    let resid = match ei {
                        0 => Residual::None,
                        1 => Residual::Add,
                        _ => Residual::Scaled(&scale),
                    };
                    let ep = Epilogue {
                        bias: if ei == 3 { None } else { Some(&bias) },
                        act: *act,
                        residual: resid,
                    };
                    let want: Vec<f64> = (0..m * n)
                        .map(|idx| {
                            let (i, j) = (idx / n, idx % n);
                            let mut s: f64 = (0..k)
                                .map(|p| a[i * lda + p] as f64 * w[j * k + p] as f64)
                                .sum();
                            if let Some(b) = ep.bias {
                                s += b[j] as f64;
                            }
                            s = match act {
                                Act::None => s,
                                Act::Gelu => gelu(s),
                                Act::Silu => s / (1.0 + (-s).exp()),
                                Act::Relu => s.max(0.0),
                            };
                            let old = c0[i * ldc + j] as f64;
                            match resid {
                                Residual::None => s,
                                Residual::Add => old + s,
                                Residual::Scaled(sc) => old + sc[j] as f64 * s,
                            }
                        })
                        .collect();
                    for parallel in [false, true] {
                        let packed = PackedB::<f32>::from_out_in(&w, n, k, |x| x);
                        let mut c = c0.clone();
                        gemm_isa(isa, &a, lda, m, &packed, &mut c, ldc, ep, parallel);
                        for i in 0..m {
                            for j in 0..ldc {
                                if i * ldc + j >= c0.len() {
                                    break;
                                }
                                let got = c[i * ldc + j];
                                if j >= n {
                                    assert_eq!(got, c0[i * ldc + j], "padding written");
                                    continue;
                                }
                                let want = want[i * n + j];
                                assert!(
                                    (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                    "{isa:?} m{m} n{n} k{k} {act:?} ({i},{j}): {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_mlp_equals_two_gemms() {
        let (m, k, hidden, n) = (1000, 40, 136, 40);
        let a = pseudo(m * k, 11);
        let w1 = PackedB::<f32>::from_out_in(&pseudo(hidden * k, 12), hidden, k, |x| x);
        let w2 = PackedB::<f32>::from_out_in(&pseudo(n * hidden, 13), n, hidden, |x| x);
        let (b1, b2, g) = (pseudo(hidden, 14), pseudo(n, 15), pseudo(n, 16));
        let ep1 = Epilogue::bias(Some(&b1)).with_act(Act::Gelu);
        let ep2 = Epilogue::bias(Some(&b2)).with_residual(Residual::Scaled(&g));
        let c0 = pseudo(m * n, 17);
        let mut want = c0.clone();
        let mut h = vec![0f32; m * hidden];
        gemm(&a, k, m, &w1, &mut h, hidden, ep1, true);
        gemm(&h, hidden, m, &w2, &mut want, n, ep2, true);
        let mut got = c0.clone();
        mlp_fused(&a, m, &w1, ep1, &w2, ep2, &mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn half_precision_weights_are_widened_exactly() {
        let (m, n, k) = (9, 60, 70);
        let a = pseudo(100 * k, 7);
        let w: Vec<f32> = pseudo(n * k, 8)
            .into_iter()
            .map(|x| half::bf16::from_f32(x).to_f32())
            .collect();
        let pf = PackedB::<f32>::from_out_in(&w, n, k, |x| x);
        let pb = PackedB::<half::bf16>::from_out_in(&w, n, k, half::bf16::from_f32);
        let ph = PackedB::<half::f16>::from_out_in(&w, n, k, half::f16::from_f32);
        for isa in Isa::all_supported() {
            // one row (GEMV), few row tiles (widened in the micro-kernel), many (widened per chunk)
            for m in [1, m, 100] {
                let mut cf = vec![0f32; m * n];
                let mut cb = vec![0f32; m * n];
                let mut ch = vec![0f32; m * n];
                gemm_isa(isa, &a, k, m, &pf, &mut cf, n, Epilogue::default(), true);
                gemm_isa(isa, &a, k, m, &pb, &mut cb, n, Epilogue::default(), true);
                gemm_isa(isa, &a, k, m, &ph, &mut ch, n, Epilogue::default(), true);
                assert_eq!(cf, cb, "{isa:?}: bf16 storage of bf16 values is exact");
                for (x, y) in cf.iter().zip(&ch) {
                    assert!((x - y).abs() < 1e-2, "{isa:?}: f16 {x} vs {y}");
                }
            }
        }
        assert_eq!(pb.get(3, 50), w[50 * k + 3]);
        assert_eq!(pb.bytes(), 2 * NR * k * 2);
    }
}
