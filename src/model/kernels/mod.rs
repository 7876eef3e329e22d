//! CPU kernels of the model: a packed GEMM with fused epilogues, direct NHWC convolutions and
//! vector maths, each compiled for AVX-512, AVX2 and scalar code and picked at run time.

pub mod attention;
pub mod conv;
pub mod gemm;
pub mod quant;
pub mod simd;

pub use conv::conv_out;
