//! FastVLM (Apple, CVPR 2025, arXiv 2412.13303) in candle: FastViTHD encoder → MLP projector → Qwen2.

pub mod kernels;
