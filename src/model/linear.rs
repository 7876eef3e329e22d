//! Linear layers of the language model: `y = x · Wᵀ + b`, weights packed once at load for the GEMM
//! of [`super::kernels::gemm`] and stored as f32, bf16 or f16 (always widened to f32 in registers:
//! the arithmetic is f32 whatever the storage), or quantized (8 / 4 bits from GGUF Q8_0 / Q4_1,
//! weight-only: see [`super::kernels::quant`]).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::DType;
use half::{bf16, f16};

use super::kernels::gemm::{gemm, Epilogue, PackedB, Residual, RhsPanels};
use super::kernels::quant::PackedQ;
use super::ModelError;

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    F32,
    Bf16,
    F16,
}

impl Storage {
    /// The storage for weights read from a file of `file` dtype when the model is asked to run
    /// with `requested` weights: f32 keeps bf16 / f16 files as they are (every value is exact in
    /// f32 and the arithmetic is f32, so the results are those of an f32 copy at half the memory).
    pub fn choose(requested: DType, file: DType) -> Storage {
        match (requested, file) {
            (DType::BF16, _) => Storage::Bf16,
            (DType::F16, _) => Storage::F16,
            (_, DType::BF16) => Storage::Bf16,
            (_, DType::F16) => Storage::F16,
            _ => Storage::F32,
        }
    }
}

/// A weight matrix's elements in the file's dtype (borrowed from a loaded tensor).
pub enum Source<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl Source<'_> {
    pub fn len(&self) -> usize {
        match self {
            Source::F32(s) => s.len(),
            Source::Bf16(s) => s.len(),
            Source::F16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Source::F32(s) => s[i],
            Source::Bf16(s) => s[i].to_f32(),
            Source::F16(s) => s[i].to_f32(),
        }
    }
}

/// The `n` elements from `start` of a tensor's CPU storage, in its dtype (no copy).
pub fn source_of(
    storage: &candle_core::Storage,
    start: usize,
    n: usize,
) -> Result<Source<'_>, ModelError> {
    let end = start + n;
    match storage {
        candle_core::Storage::Cpu(cpu) => match cpu {
            candle_core::CpuStorage::F32(v) => Ok(Source::F32(&v[start..end])),
            candle_core::CpuStorage::BF16(v) => Ok(Source::Bf16(&v[start..end])),
            candle_core::CpuStorage::F16(v) => Ok(Source::F16(&v[start..end])),
            _ => Err(ModelError::Other(
                "weights must be stored as f32, bf16 or f16".into(),
            )),
        },
        _ => Err(ModelError::Other("weights must be on the CPU".into())),
    }
}

/// Packed weights in one of the storage formats.
#[derive(Debug)]
pub enum Packed {
    F32(PackedB<f32>),
    Bf16(PackedB<bf16>),
    F16(PackedB<f16>),
}

impl Packed {
    /// Packs the rows of several `[rows_i, k]` matrices stacked (out × in, PyTorch order) as one
    /// `[Σ rows_i, k]` weight (fused q/k/v, gate/up).
    pub fn stack(parts: &[Source], k: usize, storage: Storage) -> Packed {
        let rows: Vec<usize> = parts.iter().map(|p| p.len() / k.max(1)).collect();
        let n: usize = rows.iter().sum();
        let locate = |j: usize| {
            let mut j = j;
            for (i, r) in rows.iter().enumerate() {
                if j < *r {
                    return (&parts[i], j * k);
                }
                j -= r;
            }
            unreachable!("row index inside the stacked matrix")
        };
        match storage {
            Storage::F32 => Packed::F32(PackedB::from_rows(n, k, |j, out: &mut [f32]| {
                let (src, at) = locate(j);
                match src {
                    Source::F32(s) => out.copy_from_slice(&s[at..at + k]),
                    other => out
                        .iter_mut()
                        .enumerate()
                        .for_each(|(p, o)| *o = other.get(at + p)),
                }
            })),
            Storage::Bf16 => Packed::Bf16(PackedB::from_rows(n, k, |j, out: &mut [bf16]| {
                let (src, at) = locate(j);
                match src {
                    Source::Bf16(s) => out.copy_from_slice(&s[at..at + k]),
                    other => out
                        .iter_mut()
                        .enumerate()
                        .for_each(|(p, o)| *o = bf16::from_f32(other.get(at + p))),
                }
            })),
            Storage::F16 => Packed::F16(PackedB::from_rows(n, k, |j, out: &mut [f16]| {
                let (src, at) = locate(j);
                match src {
                    Source::F16(s) => out.copy_from_slice(&s[at..at + k]),
                    other => out
                        .iter_mut()
                        .enumerate()
                        .for_each(|(p, o)| *o = f16::from_f32(other.get(at + p))),
                }
            })),
        }
    }

    pub fn n(&self) -> usize {
        match self {
            Packed::F32(p) => p.n(),
            Packed::Bf16(p) => p.n(),
            Packed::F16(p) => p.n(),
        }
    }

    pub fn k(&self) -> usize {
        match self {
            Packed::F32(p) => p.k(),
            Packed::Bf16(p) => p.k(),
            Packed::F16(p) => p.k(),
        }
    }

    /// Element `(p, j)` of the `[k, n]` matrix, i.e. `W[j][p]`.
    pub fn get(&self, p: usize, j: usize) -> f32 {
        match self {
            Packed::F32(w) => w.get(p, j),
            Packed::Bf16(w) => w.get(p, j),
            Packed::F16(w) => w.get(p, j),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Packed::F32(p) => p.bytes(),
            Packed::Bf16(p) => p.bytes(),
            Packed::F16(p) => p.bytes(),
        }
    }
}

/// Weights of one linear layer.
#[derive(Debug)]
pub enum Weights {
    Packed(Packed),
    /// Quantized `[out, in]`, repacked from GGUF blocks.
    Quantized(PackedQ),
}

/// `y = x · Wᵀ + b` on row-major activations.
#[derive(Debug)]
pub struct Linear {
    pub weights: Weights,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn packed(p: Packed, bias: Option<Vec<f32>>) -> Self {
        Self {
            weights: Weights::Packed(p),
            bias,
        }
    }

    /// From a GGUF matrix `[out, in]` in Q8_0 or Q4_1 (what `scenesay quantize` writes).
    pub fn quantized(q: &QTensor, bias: Option<Vec<f32>>) -> Result<Self, ModelError> {
        let (n, k) = q.shape().dims2()?;
        let data = q.data()?;
        let packed = match q.dtype() {
            GgmlDType::Q8_0 => PackedQ::from_q8_0(&data, n, k),
            GgmlDType::Q4_1 => PackedQ::from_q4_1(&data, n, k),
            other => Err(format!(
                "quantized format {other:?} is not supported (scenesay writes Q8_0 and Q4_1)"
            )),
        }
        .map_err(ModelError::Other)?;
        Ok(Self {
            weights: Weights::Quantized(packed),
            bias,
        })
    }

    /// Output width.
    pub fn n(&self) -> usize {
        match &self.weights {
            Weights::Packed(p) => p.n(),
            Weights::Quantized(q) => q.n(),
        }
    }

    /// Input width.
    pub fn k(&self) -> usize {
        match &self.weights {
            Weights::Packed(p) => p.k(),
            Weights::Quantized(q) => q.k(),
        }
    }

    /// `out[i·ldc + j] = x[i·k + ..] · W[j] + b[j]`, combined with `out` by `residual`, for `m` rows.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        ldc: usize,
        residual: Residual,
    ) -> Result<(), ModelError> {
        let ep = Epilogue::bias(self.bias.as_deref()).with_residual(residual);
        let k = self.k();
        match &self.weights {
            Weights::Packed(Packed::F32(p)) => gemm(x, k, m, p, out, ldc, ep, true),
            Weights::Packed(Packed::Bf16(p)) => gemm(x, k, m, p, out, ldc, ep, true),
            Weights::Packed(Packed::F16(p)) => gemm(x, k, m, p, out, ldc, ep, true),
            Weights::Quantized(q) => gemm(x, k, m, q, out, ldc, ep, true),
        }
        Ok(())
    }

    /// `f32`, `bf16`, `f16`, or the quantized format (`q8_0`, `q4k`, …).
    pub fn format_name(&self) -> String {
        match &self.weights {
            Weights::Packed(Packed::F32(_)) => "f32".into(),
            Weights::Packed(Packed::Bf16(_)) => "bf16".into(),
            Weights::Packed(Packed::F16(_)) => "f16".into(),
            Weights::Quantized(q) => q.format().name().into(),
        }
    }

    /// Bytes of weight memory.
    pub fn bytes(&self) -> usize {
        match &self.weights {
            Weights::Packed(p) => p.bytes(),
            Weights::Quantized(q) => q.bytes(),
        }
    }
}
