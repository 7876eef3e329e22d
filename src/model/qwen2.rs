//! Qwen2 decoder (Qwen team, "Qwen2 Technical Report", 2024; transformers `modeling_qwen2.py`) in
//! candle, taking input *embeddings* so image features can be spliced in (LLaVA-style), with a
//! preallocated KV cache, grouped-query attention, RoPE (rotate-half) and tied or untied `lm_head`.
//! Modules mirror the checkpoint: `embed_tokens`, `layers.L.{self_attn,mlp,…}`, `norm`, `lm_head`.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::{Embedding, Linear, RmsNorm};

use super::config::TextConfig;
use super::weights::Checkpoint;
use super::ModelError;

fn linear(
    ck: &Checkpoint,
    name: &str,
    i: usize,
    o: usize,
    bias: bool,
    dtype: DType,
) -> Result<Linear, ModelError> {
    let w = ck.get(&format!("{name}.weight"), &[o, i], dtype)?;
    let b = if bias {
        Some(ck.get(&format!("{name}.bias"), &[o], dtype)?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

fn rms_norm(
    ck: &Checkpoint,
    name: &str,
    n: usize,
    eps: f64,
    dtype: DType,
) -> Result<RmsNorm, ModelError> {
    Ok(RmsNorm::new(
        ck.get(&format!("{name}.weight"), &[n], dtype)?,
        eps,
    ))
}

/// RoPE tables, computed in f64 and stored in the model dtype.
#[derive(Debug, Clone)]
struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryEmbedding {
    fn new(cfg: &TextConfig, max_len: usize, dtype: DType) -> candle_core::Result<Self> {
        let half = cfg.head_dim / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / cfg.head_dim as f64))
            .collect();
        let mut cos = Vec::with_capacity(max_len * half);
        let mut sin = Vec::with_capacity(max_len * half);
        for p in 0..max_len {
            for f in &inv {
                // transformers computes the angle in f32; match it before taking cos/sin
                let a = (p as f32 * *f as f32) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_len, half), &Device::Cpu)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (max_len, half), &Device::Cpu)?.to_dtype(dtype)?,
        })
    }

    fn max_len(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// q, k: `[1, heads, T, head_dim]`, positions `offset..offset + T`.
    fn apply(
        &self,
        q: &Tensor,
        k: &Tensor,
        offset: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let t = q.dim(2)?;
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        Ok((
            candle_nn::rotary_emb::rope(q, &cos, &sin)?,
            candle_nn::rotary_emb::rope(k, &cos, &sin)?,
        ))
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let g = candle_nn::ops::silu(&self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&(g * self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    cache: KvCache,
}

impl SelfAttention {
    fn forward(
        &mut self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        offset: usize,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let shape = |n| (b, t, n, self.head_dim);
        let q = self
            .q_proj
            .forward(x)?
            .reshape(shape(self.heads))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = self
            .k_proj
            .forward(x)?
            .reshape(shape(self.kv_heads))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = self
            .v_proj
            .forward(x)?
            .reshape(shape(self.kv_heads))?
            .transpose(1, 2)?
            .contiguous()?;
        let (q, k) = rope.apply(&q, &k, offset)?;
        let (k, v) = self.cache.append(&k, &v)?;
        let rep = self.heads / self.kv_heads;
        let k = candle_transformers::utils::repeat_kv(k, rep)?.contiguous()?;
        let v = candle_transformers::utils::repeat_kv(v, rep)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        // softmax in f32 whatever the weights' dtype
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: SelfAttention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

/// The decoder with its KV cache.
#[derive(Debug, Clone)]
pub struct Qwen2 {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: RotaryEmbedding,
    dtype: DType,
    hidden: usize,
    /// Tokens already in the cache.
    offset: usize,
}

/// Longest context the RoPE tables are built for (or the config's limit when smaller).
const MAX_CONTEXT: usize = 8192;

impl Qwen2 {
    /// `prefix`: `model.` (Apple) or `model.language_model.` (HF); `lm_head` sits at the top level in
    /// both layouts. With tied embeddings and no `lm_head.weight` the embedding matrix is reused.
    pub fn load(
        ck: &Checkpoint,
        prefix: &str,
        cfg: &TextConfig,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let embed = ck.get(
            &format!("{prefix}embed_tokens.weight"),
            &[cfg.vocab_size, h],
            dtype,
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("{prefix}layers.{l}");
            let a = format!("{p}.self_attn");
            layers.push(DecoderLayer {
                self_attn: SelfAttention {
                    q_proj: linear(
                        ck,
                        &format!("{a}.q_proj"),
                        h,
                        cfg.num_attention_heads * hd,
                        true,
                        dtype,
                    )?,
                    k_proj: linear(
                        ck,
                        &format!("{a}.k_proj"),
                        h,
                        cfg.num_key_value_heads * hd,
                        true,
                        dtype,
                    )?,
                    v_proj: linear(
                        ck,
                        &format!("{a}.v_proj"),
                        h,
                        cfg.num_key_value_heads * hd,
                        true,
                        dtype,
                    )?,
                    o_proj: linear(
                        ck,
                        &format!("{a}.o_proj"),
                        cfg.num_attention_heads * hd,
                        h,
                        false,
                        dtype,
                    )?,
                    heads: cfg.num_attention_heads,
                    kv_heads: cfg.num_key_value_heads,
                    head_dim: hd,
                    cache: KvCache::new(2, 512),
                },
                mlp: Mlp {
                    gate_proj: linear(
                        ck,
                        &format!("{p}.mlp.gate_proj"),
                        h,
                        cfg.intermediate_size,
                        false,
                        dtype,
                    )?,
                    up_proj: linear(
                        ck,
                        &format!("{p}.mlp.up_proj"),
                        h,
                        cfg.intermediate_size,
                        false,
                        dtype,
                    )?,
                    down_proj: linear(
                        ck,
                        &format!("{p}.mlp.down_proj"),
                        cfg.intermediate_size,
                        h,
                        false,
                        dtype,
                    )?,
                },
                input_layernorm: rms_norm(
                    ck,
                    &format!("{p}.input_layernorm"),
                    h,
                    cfg.rms_norm_eps,
                    dtype,
                )?,
                post_attention_layernorm: rms_norm(
                    ck,
                    &format!("{p}.post_attention_layernorm"),
                    h,
                    cfg.rms_norm_eps,
                    dtype,
                )?,
            });
        }
        let norm = rms_norm(ck, &format!("{prefix}norm"), h, cfg.rms_norm_eps, dtype)?;
        let lm_head = if ck.contains("lm_head.weight") || !cfg.tie_word_embeddings {
            linear(ck, "lm_head", h, cfg.vocab_size, false, dtype)?
        } else {
            Linear::new(embed.clone(), None)
        };
        let rope = RotaryEmbedding::new(cfg, cfg.max_position_embeddings.min(MAX_CONTEXT), dtype)?;
        Ok(Self {
            embed_tokens: Embedding::new(embed, h),
            layers,
            norm,
            lm_head,
            rope,
            dtype,
            hidden: h,
            offset: 0,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Tokens currently held in the KV cache.
    pub fn cached_len(&self) -> usize {
        self.offset
    }

    /// Longest sequence (prompt + generated) this model instance accepts.
    pub fn max_context(&self) -> usize {
        self.rope.max_len()
    }

    /// Token ids `[T]` → embeddings `[1, T, H]`.
    pub fn embed(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(ids, &Device::Cpu)?;
        self.embed_tokens.forward(&ids)?.unsqueeze(0)
    }

    /// Empties the KV cache.
    pub fn clear_kv_cache(&mut self) {
        for l in &mut self.layers {
            l.self_attn.cache.reset();
        }
        self.offset = 0;
    }

    /// Runs `embeds` `[1, T, H]` through the decoder after whatever the cache holds, appending to the
    /// cache. Returns the final-normed hidden states `[1, T, H]`. `tap` receives the input embeddings
    /// and each layer's output (transformers' `hidden_states`, the last one after the final norm).
    pub fn forward_embeds_with(
        &mut self,
        embeds: &Tensor,
        mut tap: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor, ModelError> {
        let (_, t, _) = embeds.dims3()?;
        let offset = self.offset;
        if offset + t > self.rope.max_len() {
            return Err(ModelError::Other(format!(
                "sequence of {} tokens exceeds the supported context of {} tokens",
                offset + t,
                self.rope.max_len()
            )));
        }
        let mask = if t > 1 {
            let m: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..offset + t).map(move |j| {
                        if j > offset + i {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            Some(Tensor::from_vec(m, (1, 1, t, offset + t), &Device::Cpu)?.to_dtype(self.dtype)?)
        } else {
            None
        };
        let mut x = embeds.to_dtype(self.dtype)?;
        tap(0, &x);
        let n = self.layers.len();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let r = x.clone();
            let y = l.self_attn.forward(
                &l.input_layernorm.forward(&x)?,
                &self.rope,
                offset,
                mask.as_ref(),
            )?;
            let x1 = (r + y)?;
            let y = l.mlp.forward(&l.post_attention_layernorm.forward(&x1)?)?;
            x = (x1 + y)?;
            if i + 1 < n {
                tap(i + 1, &x);
            }
        }
        let out = self.norm.forward(&x)?;
        tap(n, &out);
        self.offset += t;
        Ok(out)
    }

    /// [`Self::forward_embeds_with`] without a tap.
    pub fn forward_embeds(&mut self, embeds: &Tensor) -> Result<Tensor, ModelError> {
        self.forward_embeds_with(embeds, |_, _| {})
    }

    /// Logits `[N, vocab]` (f32) of hidden states `[1, N, H]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self
            .lm_head
            .forward(&hidden.squeeze(0)?)?
            .to_dtype(DType::F32)?)
    }

    /// Logits of the last position only: `[vocab]` (f32).
    pub fn last_logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        let t = hidden.dim(1)?;
        Ok(self.logits(&hidden.narrow(1, t - 1, 1)?)?.squeeze(0)?)
    }
}
