//! A small SIMD layer with run-time dispatch: one generic kernel body, compiled for AVX-512,
//! AVX2 + FMA and plain scalar code, picked once at start-up from what the CPU reports (no
//! `-C target-cpu=native` needed, so one binary runs everywhere). Also the vector maths the
//! kernels share: `exp`, `erf`, exact GELU, sigmoid.

use std::sync::OnceLock;

/// The instruction sets the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    /// The best instruction set this CPU supports (`SCENESAY_ISA=scalar|avx2|avx512` can lower it,
    /// for testing the other code paths).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let best = Self::best_supported();
            match std::env::var("SCENESAY_ISA").ok().as_deref() {
                Some("scalar") => Isa::Scalar,
                Some("avx2") => best.min(Isa::Avx2),
                _ => best,
            }
        })
    }

    fn best_supported() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every instruction set this CPU can run (for tests that check each path).
    pub fn all_supported() -> Vec<Isa> {
        let best = Self::best_supported();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| *i <= best)
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// One vector register's worth of `f32` and the operations the kernels use.
///
/// # Safety
/// Every method is `unsafe` for the same two reasons: it may only run on a CPU with the
/// instruction set of the implementing type (guaranteed by [`dispatch`]), and the pointer methods
/// read / write `LANES` (or the given `n`) elements, which must be valid.
#[allow(clippy::missing_safety_doc)]
pub trait Simd: Copy + 'static {
    const LANES: usize;
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads `n < LANES` floats, the rest zero.
    unsafe fn load_part(p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n < LANES` lanes.
    unsafe fn store_part(p: *mut f32, v: Self::V, n: usize);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Round to the nearest integer (ties to even), as a float.
    unsafe fn round(a: Self::V) -> Self::V;
    /// `2^n` for integer-valued `n` in [-126, 127].
    unsafe fn pow2i(n: Self::V) -> Self::V;
    unsafe fn reduce_add(a: Self::V) -> f32;
    unsafe fn reduce_max(a: Self::V) -> f32;
    /// `1 / x` to about 1 ulp (hardware estimate + one Newton step; no slow division).
    unsafe fn recip(x: Self::V) -> Self::V;
    /// Keeps the first `n` lanes, zeroes the rest.
    unsafe fn keep_first(v: Self::V, n: usize) -> Self::V;
    /// Output lane `i < n` gets `p[i / 2]` (reads `ceil(n / 2)` floats); lanes `≥ n` are zero or
    /// unspecified.
    unsafe fn load_dup2(p: *const f32, n: usize) -> Self::V;
    /// Loads `LANES` bf16 values as f32.
    unsafe fn load_bf16(p: *const u16) -> Self::V;
    /// Loads `LANES` IEEE f16 values as f32.
    unsafe fn load_f16(p: *const u16) -> Self::V;
    /// Loads `LANES` signed bytes as f32.
    unsafe fn load_i8(p: *const i8) -> Self::V;
    /// Loads `LANES` bytes; returns their low and high nibbles as f32.
    unsafe fn load_nibbles(p: *const u8) -> (Self::V, Self::V);

    /// Rows of the GEMM micro-kernel (see [`super::gemm`]).
    const GEMM_MR: usize;
    /// The GEMM micro-kernel: `tile[r, j] (+)= Σ_p a[r·a_rs + p·a_cs] · b_panel[p, j]` for
    /// `r < MR`, `j < NR`, `p < kc`.
    ///
    /// # Safety
    /// `a` must be readable at every offset above, `b` hold `kc · NR` elements, `tile` `MR · NR`
    /// floats.
    unsafe fn gemm_ukr<T: super::gemm::BElem>(
        kc: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const T,
        tile: *mut f32,
        load: bool,
    );

    /// Loads `n ≤ LANES` floats (full or partial).
    #[inline(always)]
    unsafe fn load_n(p: *const f32, n: usize) -> Self::V {
        if n >= Self::LANES {
            Self::load(p)
        } else {
            Self::load_part(p, n)
        }
    }

    /// Stores `n ≤ LANES` floats (full or partial).
    #[inline(always)]
    unsafe fn store_n(p: *mut f32, v: Self::V, n: usize) {
        if n >= Self::LANES {
            Self::store(p, v)
        } else {
            Self::store_part(p, v, n)
        }
    }

    /// `e^x` (Cephes polynomial, ≈ 1 ulp; inputs clamped to [-87, 88.3]).
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        let x = Self::min(Self::max(x, Self::splat(-87.0)), Self::splat(88.3));
        let n = Self::round(Self::mul(x, Self::splat(std::f32::consts::LOG2_E)));
        let r = Self::fma(n, Self::splat(-0.693_359_4), x);
        let r = Self::fma(n, Self::splat(2.121_944_4e-4), r);
        let mut p = Self::splat(1.987_569_1e-4);
        p = Self::fma(p, r, Self::splat(1.398_2e-3));
        p = Self::fma(p, r, Self::splat(8.333_452e-3));
        p = Self::fma(p, r, Self::splat(4.166_579_6e-2));
        p = Self::fma(p, r, Self::splat(0.166_666_65));
        p = Self::fma(p, r, Self::splat(0.5));
        let y = Self::add(Self::fma(p, Self::mul(r, r), r), Self::splat(1.0));
        Self::mul(y, Self::pow2i(n))
    }

    /// `erf(x)`: rational minimax approximation on [-4, 4] (beyond, ±1 in f32), max error ≈ 1e-7.
    #[inline(always)]
    unsafe fn erf(x: Self::V) -> Self::V {
        let x = Self::min(Self::max(x, Self::splat(-4.0)), Self::splat(4.0));
        let x2 = Self::mul(x, x);
        let mut p = Self::splat(-2.726_142_3e-10);
        p = Self::fma(p, x2, Self::splat(2.770_681_4e-8));
        p = Self::fma(p, x2, Self::splat(-2.101_024e-6));
        p = Self::fma(p, x2, Self::splat(-5.692_506_4e-5));
        p = Self::fma(p, x2, Self::splat(-7.349_906_3e-4));
        p = Self::fma(p, x2, Self::splat(-2.954_6e-3));
        p = Self::fma(p, x2, Self::splat(-1.609_603_3e-2));
        p = Self::mul(p, x);
        let mut q = Self::splat(-1.456_607_2e-5);
        q = Self::fma(q, x2, Self::splat(-2.133_740_6e-4));
        q = Self::fma(q, x2, Self::splat(-1.682_827e-3));
        q = Self::fma(q, x2, Self::splat(-7.373_329e-3));
        q = Self::fma(q, x2, Self::splat(-1.426_473_9e-2));
        Self::mul(p, Self::recip(q))
    }

    /// Exact (erf) GELU: `0.5 · x · (1 + erf(x / √2))`, as PyTorch's `nn.GELU()`.
    #[inline(always)]
    unsafe fn gelu(x: Self::V) -> Self::V {
        let e = Self::erf(Self::mul(x, Self::splat(std::f32::consts::FRAC_1_SQRT_2)));
        let h = Self::mul(x, Self::splat(0.5));
        Self::fma(h, e, h)
    }

    /// `1 / (1 + e^-x)`
    #[inline(always)]
    unsafe fn sigmoid(x: Self::V) -> Self::V {
        let one = Self::splat(1.0);
        Self::recip(Self::add(one, Self::exp(Self::sub(Self::zero(), x))))
    }

    /// `x · sigmoid(x)` (SiLU).
    #[inline(always)]
    unsafe fn silu(x: Self::V) -> Self::V {
        Self::mul(x, Self::sigmoid(x))
    }
}

/// Plain scalar code (one lane): the fallback for CPUs without AVX2.
#[derive(Clone, Copy)]
pub struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    type V = f32;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    #[inline(always)]
    unsafe fn load_part(_p: *const f32, _n: usize) -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn store_part(_p: *mut f32, _v: f32, _n: usize) {}
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn min(a: f32, b: f32) -> f32 {
        a.min(b)
    }
    #[inline(always)]
    unsafe fn round(a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    unsafe fn pow2i(n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    unsafe fn reduce_add(a: f32) -> f32 {
        a
    }
    #[inline(always)]
    unsafe fn reduce_max(a: f32) -> f32 {
        a
    }
    #[inline(always)]
    unsafe fn recip(x: f32) -> f32 {
        1.0 / x
    }
    #[inline(always)]
    unsafe fn keep_first(v: f32, n: usize) -> f32 {
        if n >= 1 {
            v
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn load_dup2(p: *const f32, _n: usize) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> f32 {
        f32::from_bits((*p as u32) << 16)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> f32 {
        half::f16::from_bits(*p).to_f32()
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> f32 {
        *p as f32
    }
    #[inline(always)]
    unsafe fn load_nibbles(p: *const u8) -> (f32, f32) {
        ((*p & 15) as f32, (*p >> 4) as f32)
    }
    const GEMM_MR: usize = 4;
    #[inline(always)]
    unsafe fn gemm_ukr<T: super::gemm::BElem>(
        kc: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const T,
        tile: *mut f32,
        load: bool,
    ) {
        super::gemm::ukr_scalar::<T>(kc, a, a_rs, a_cs, b, tile, load)
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX2 + FMA: 8 lanes.
    #[derive(Clone, Copy)]
    pub struct Avx2;

    #[inline(always)]
    unsafe fn mask8(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }

    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, n: usize) -> __m256 {
            _mm256_maskload_ps(p, mask8(n))
        }
        #[inline(always)]
        unsafe fn store_part(p: *mut f32, v: __m256, n: usize) {
            _mm256_maskstore_ps(p, mask8(n), v)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            _mm256_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            _mm256_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            _mm256_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn round(a: __m256) -> __m256 {
            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m256) -> __m256 {
            let i = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i))
        }
        #[inline(always)]
        unsafe fn reduce_add(a: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
        #[inline(always)]
        unsafe fn reduce_max(a: __m256) -> f32 {
            let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
        #[inline(always)]
        unsafe fn recip(x: __m256) -> __m256 {
            // 12-bit estimate: two Newton steps to full precision
            let two = _mm256_set1_ps(2.0);
            let r = _mm256_rcp_ps(x);
            let r = _mm256_mul_ps(r, _mm256_fnmadd_ps(x, r, two));
            _mm256_mul_ps(r, _mm256_fnmadd_ps(x, r, two))
        }
        #[inline(always)]
        unsafe fn keep_first(v: __m256, n: usize) -> __m256 {
            _mm256_and_ps(v, _mm256_castsi256_ps(mask8(n)))
        }
        #[inline(always)]
        unsafe fn load_dup2(p: *const f32, n: usize) -> __m256 {
            let x = if n >= 8 {
                _mm256_castps128_ps256(_mm_loadu_ps(p))
            } else {
                _mm256_maskload_ps(p, mask8(n.div_ceil(2)))
            };
            _mm256_permutevar8x32_ps(x, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3))
        }
        #[inline(always)]
        unsafe fn load_bf16(p: *const u16) -> __m256 {
            let h = _mm_loadu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
        #[inline(always)]
        unsafe fn load_i8(p: *const i8) -> __m256 {
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
        }
        #[inline(always)]
        unsafe fn load_nibbles(p: *const u8) -> (__m256, __m256) {
            let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
            let lo = _mm256_and_si256(v, _mm256_set1_epi32(15));
            let hi = _mm256_srli_epi32::<4>(v);
            (_mm256_cvtepi32_ps(lo), _mm256_cvtepi32_ps(hi))
        }
        const GEMM_MR: usize = 6;
        #[inline(always)]
        unsafe fn gemm_ukr<T: crate::model::kernels::gemm::BElem>(
            kc: usize,
            a: *const f32,
            a_rs: usize,
            a_cs: usize,
            b: *const T,
            tile: *mut f32,
            load: bool,
        ) {
            crate::model::kernels::gemm::ukr_avx2::<T>(kc, a, a_rs, a_cs, b, tile, load)
        }
    }

    /// AVX-512 (F, BW, DQ, VL): 16 lanes.
    #[derive(Clone, Copy)]
    pub struct Avx512;

    #[inline(always)]
    fn mask16(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, n: usize) -> __m512 {
            _mm512_maskz_loadu_ps(mask16(n), p)
        }
        #[inline(always)]
        unsafe fn store_part(p: *mut f32, v: __m512, n: usize) {
            _mm512_mask_storeu_ps(p, mask16(n), v)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            _mm512_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            _mm512_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn round(a: __m512) -> __m512 {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m512) -> __m512 {
            let i = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(i))
        }
        #[inline(always)]
        unsafe fn reduce_add(a: __m512) -> f32 {
            _mm512_reduce_add_ps(a)
        }
        #[inline(always)]
        unsafe fn reduce_max(a: __m512) -> f32 {
            _mm512_reduce_max_ps(a)
        }
        #[inline(always)]
        unsafe fn recip(x: __m512) -> __m512 {
            let r = _mm512_rcp14_ps(x);
            _mm512_mul_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(2.0)))
        }
        #[inline(always)]
        unsafe fn keep_first(v: __m512, n: usize) -> __m512 {
            _mm512_maskz_mov_ps(mask16(n), v)
        }
        #[inline(always)]
        unsafe fn load_dup2(p: *const f32, n: usize) -> __m512 {
            let x = if n >= 16 {
                _mm512_castps256_ps512(_mm256_loadu_ps(p))
            } else {
                _mm512_maskz_loadu_ps(mask16(n.div_ceil(2)), p)
            };
            let idx = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            _mm512_permutexvar_ps(idx, x)
        }
        #[inline(always)]
        unsafe fn load_bf16(p: *const u16) -> __m512 {
            let h = _mm256_loadu_si256(p as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
        }
        #[inline(always)]
        unsafe fn load_i8(p: *const i8) -> __m512 {
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
        }
        #[inline(always)]
        unsafe fn load_nibbles(p: *const u8) -> (__m512, __m512) {
            let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
            let lo = _mm512_and_si512(v, _mm512_set1_epi32(15));
            let hi = _mm512_srli_epi32::<4>(v);
            (_mm512_cvtepi32_ps(lo), _mm512_cvtepi32_ps(hi))
        }
        const GEMM_MR: usize = 8;
        #[inline(always)]
        unsafe fn gemm_ukr<T: crate::model::kernels::gemm::BElem>(
            kc: usize,
            a: *const f32,
            a_rs: usize,
            a_cs: usize,
            b: *const T,
            tile: *mut f32,
            load: bool,
        ) {
            crate::model::kernels::gemm::ukr_avx512::<T>(kc, a, a_rs, a_cs, b, tile, load)
        }
    }
}

/// A kernel body generic over the instruction set; [`dispatch`] runs it with the best one.
pub trait SimdFn {
    type Out;
    fn call<S: Simd>(self) -> Self::Out;
}

/// Runs `f` compiled for `isa` (which the CPU must support: take it from [`Isa::detect`] or
/// [`Isa::all_supported`]).
#[inline]
pub fn dispatch_with<F: SimdFn>(isa: Isa, f: F) -> F::Out {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` says the CPU has these features.
        Isa::Avx512 => unsafe { run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { run_avx2(f) },
        _ => f.call::<Scalar>(),
    }
}

/// Runs `f` with the best instruction set of this CPU.
#[inline]
pub fn dispatch<F: SimdFn>(f: F) -> F::Out {
    dispatch_with(Isa::detect(), f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
unsafe fn run_avx512<F: SimdFn>(f: F) -> F::Out {
    f.call::<Avx512>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2<F: SimdFn>(f: F) -> F::Out {
    f.call::<Avx2>()
}

/// Applies a unary vector function to a slice in place.
pub struct MapInPlace<'a, F> {
    pub data: &'a mut [f32],
    pub f: F,
}

/// Exact GELU over a slice (in place).
#[derive(Clone, Copy)]
pub struct GeluOp;
/// SiLU over a slice (in place).
#[derive(Clone, Copy)]
pub struct SiluOp;
/// `e^x` over a slice (in place).
#[derive(Clone, Copy)]
pub struct ExpOp;
/// `erf` over a slice (in place).
#[derive(Clone, Copy)]
pub struct ErfOp;

/// A unary vector function that [`MapInPlace`] can apply.
pub trait UnaryOp: Copy {
    /// # Safety
    /// The CPU must support `S`.
    unsafe fn apply<S: Simd>(self, x: S::V) -> S::V;
}

impl UnaryOp for GeluOp {
    #[inline(always)]
    unsafe fn apply<S: Simd>(self, x: S::V) -> S::V {
        S::gelu(x)
    }
}
impl UnaryOp for SiluOp {
    #[inline(always)]
    unsafe fn apply<S: Simd>(self, x: S::V) -> S::V {
        S::silu(x)
    }
}
impl UnaryOp for ExpOp {
    #[inline(always)]
    unsafe fn apply<S: Simd>(self, x: S::V) -> S::V {
        S::exp(x)
    }
}
impl UnaryOp for ErfOp {
    #[inline(always)]
    unsafe fn apply<S: Simd>(self, x: S::V) -> S::V {
        S::erf(x)
    }
}

impl<F: UnaryOp> SimdFn for MapInPlace<'_, F> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        let n = self.data.len();
        let p = self.data.as_mut_ptr();
        let mut i = 0;
        // SAFETY: every access is inside `data`; the dispatcher checked the ISA.
        unsafe {
            while i + S::LANES <= n {
                S::store(p.add(i), self.f.apply::<S>(S::load(p.add(i))));
                i += S::LANES;
            }
            if i < n {
                let v = self.f.apply::<S>(S::load_part(p.add(i), n - i));
                S::store_part(p.add(i), v, n - i);
            }
        }
    }
}

/// Applies `op` to `data` in place, in parallel chunks.
pub fn map_inplace<F: UnaryOp + Send + Sync>(data: &mut [f32], op: F) {
    use rayon::prelude::*;
    let isa = Isa::detect();
    if data.len() <= 1 << 14 {
        dispatch_with(isa, MapInPlace { data, f: op });
    } else {
        data.par_chunks_mut(1 << 14)
            .for_each(|c| dispatch_with(isa, MapInPlace { data: c, f: op }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_with(isa: Isa, xs: &[f32], op: impl UnaryOp) -> Vec<f32> {
        let mut v = xs.to_vec();
        dispatch_with(
            isa,
            MapInPlace {
                data: &mut v,
                f: op,
            },
        );
        v
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    #[test]
    fn erf_and_gelu_are_accurate_on_every_isa() {
        let xs = grid(-9.0, 9.0, 20_011);
        for isa in Isa::all_supported() {
            let erf = map_with(isa, &xs, ErfOp);
            let gelu = map_with(isa, &xs, GeluOp);
            for (i, &x) in xs.iter().enumerate() {
                let want = candle_core::cpu::erf::erf_f64(x as f64);
                assert!(
                    (erf[i] as f64 - want).abs() < 4e-7,
                    "{isa:?} erf({x}) = {} vs {want}",
                    erf[i]
                );
                let g =
                    0.5 * x as f64 * (1.0 + candle_core::cpu::erf::erf_f64(x as f64 / 2f64.sqrt()));
                assert!(
                    (gelu[i] as f64 - g).abs() < 1e-6 * (1.0 + g.abs()),
                    "{isa:?} gelu({x}) = {} vs {g}",
                    gelu[i]
                );
            }
        }
    }

    #[test]
    fn exp_is_accurate_on_every_isa() {
        let xs = grid(-80.0, 80.0, 40_007);
        for isa in Isa::all_supported() {
            let got = map_with(isa, &xs, ExpOp);
            for (i, &x) in xs.iter().enumerate() {
                let want = (x as f64).exp();
                assert!(
                    ((got[i] as f64 - want) / want).abs() < 3e-7,
                    "{isa:?} exp({x}) = {} vs {want}",
                    got[i]
                );
            }
            // clamped, finite, non-negative at the extremes
            let ext = map_with(isa, &[-1e4, -100.0, 100.0, 1e4], ExpOp);
            assert!(ext.iter().all(|v| v.is_finite() && *v >= 0.0), "{ext:?}");
            assert!(ext[0] < 1e-37 && ext[3] > 1e38);
        }
    }

    #[test]
    fn partial_vectors_touch_only_their_lanes() {
        for isa in Isa::all_supported() {
            for n in 0..40 {
                let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
                let want: Vec<f32> = v.iter().map(|x| 1.0 / (1.0 + (-x).exp()) * x).collect();
                dispatch_with(
                    isa,
                    MapInPlace {
                        data: &mut v,
                        f: SiluOp,
                    },
                );
                for (a, b) in v.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-6, "{isa:?} n={n}: {a} vs {b}");
                }
            }
        }
    }
}
