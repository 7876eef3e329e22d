//! Qwen2 decoder (Qwen team, "Qwen2 Technical Report", 2024; transformers `modeling_qwen2.py`)
//! taking input *embeddings* so image features can be spliced in (LLaVA-style), with a KV cache that
//! keeps its memory between generations, grouped-query attention, RoPE (rotate-half) and tied or
//! untied `lm_head`. Modules mirror the checkpoint: `embed_tokens`, `layers.L.{self_attn,mlp,…}`,
//! `norm`, `lm_head`.
//!
//! Arithmetic is f32 throughout, on the kernels of [`super::kernels`]: q/k/v and gate/up are fused
//! into one GEMM each, residual additions are fused into the o_proj / down_proj GEMMs, and the weights
//! stay in their storage format (f32, bf16, f16 or quantized, see [`super::linear`]). Tensors appear
//! only at the public interface.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::config::TextConfig;
use super::kernels::attention::SoftmaxRow;
use super::kernels::gemm::{gemm, Epilogue, PackedB, Residual};
use super::kernels::simd::{dispatch, Simd, SimdFn};
use super::linear::{source_of, Linear, Packed, Source, Storage};
use super::weights::Checkpoint;
use super::ModelError;

/// Receives `(layer, hidden states of every row)` during a forward pass.
pub type RowTap<'a> = &'a mut dyn FnMut(usize, &[f32]);

/// Longest context the RoPE tables are built for (or the config's limit when smaller).
const MAX_CONTEXT: usize = 8192;
/// Tokens of KV cache reserved up front (it grows beyond when needed).
const CACHE_RESERVE: usize = 512;

#[derive(Debug)]
struct Layer {
    /// q, k, v stacked: `[(heads + 2·kv_heads)·head_dim, hidden]`, with the three biases (one
    /// packed matrix, or one part per matrix when quantized).
    qkv: Vec<Linear>,
    o_proj: Linear,
    /// gate and up stacked: `[2·intermediate, hidden]`.
    gate_up: Vec<Linear>,
    down_proj: Linear,
    input_layernorm: Vec<f32>,
    post_attention_layernorm: Vec<f32>,
    /// Cached keys and values, token-major: `[t][kv_heads·head_dim]`.
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// Where token embeddings are looked up.
#[derive(Debug)]
enum Embeddings {
    /// Tied weights: the rows of the packed `lm_head`.
    TiedHead,
    /// A separate table, packed like a linear weight (`[hidden, vocab]`).
    Table(Packed),
}

/// The decoder with its KV cache.
#[derive(Debug)]
pub struct Qwen2 {
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Linear,
    embed: Embeddings,
    /// RoPE tables `[position][head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    max_len: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    vocab: usize,
    eps: f32,
    storage: Storage,
    /// Tokens already in the cache.
    offset: usize,
    /// Activation buffers kept from call to call (no allocation or page faults per token).
    scratch: Scratch,
}

#[derive(Debug, Default)]
struct Scratch {
    xn: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
}

/// The first `n` floats of `v`, growing it (never shrinking) as needed.
fn buf(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Loads several `[rows_i, k]` weights (in their file dtype) and packs them stacked.
fn load_stacked(
    ck: &Checkpoint,
    names: &[(&str, usize)],
    k: usize,
    requested: DType,
) -> Result<Packed, ModelError> {
    let tensors: Vec<Tensor> = names
        .iter()
        .map(|(n, rows)| {
            let dtype = ck.dtype_of(n).unwrap_or(DType::F32);
            ck.get(n, &[*rows, k], dtype)?
                .contiguous()
                .map_err(ModelError::from)
        })
        .collect::<Result<_, _>>()?;
    let storage = Storage::choose(requested, tensors[0].dtype());
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let sources = guards
        .iter()
        .zip(&tensors)
        .map(|((st, layout), t)| source_of(st, layout.start_offset(), t.elem_count()))
        .collect::<Result<Vec<_>, _>>()?;
    if storage == Storage::F16 {
        for ((name, _), src) in names.iter().zip(&sources) {
            fits_f16(ck, name, k, src)?;
        }
    }
    Ok(Packed::stack(&sources, k, storage))
}

/// Errors when a weight of `name` (rows of `k`) lies beyond f16's range (±65504) and would become
/// infinity when narrowed to f16 — bf16 and f32 checkpoints can hold such values; a model with an
/// infinite weight answers nonsense without any other sign.
fn fits_f16(ck: &Checkpoint, name: &str, k: usize, src: &Source) -> Result<(), ModelError> {
    if matches!(src, Source::F16(_)) {
        return Ok(());
    }
    let over = (0..src.len()).find(|&i| {
        let v = src.get(i);
        v.is_finite() && half::f16::from_f32(v).is_infinite()
    });
    match over {
        None => Ok(()),
        Some(i) => Err(ModelError::Other(format!(
            "tensor `{name}` in {} holds {} at [{}, {}], beyond the range of f16 (±65504): as f16 it \
             would become infinity. Load this checkpoint with --dtype bf16 (the same memory, and \
             bf16's range) or f32",
            ck.dir().display(),
            src.get(i),
            i / k.max(1),
            i % k.max(1)
        ))),
    }
}

/// The linear weights `names` (`[rows_i, k]` each, with optional biases) as one layer: packed and
/// stacked into one matrix, or — when the checkpoint holds them quantized — one part per matrix.
fn load_linear(
    ck: &Checkpoint,
    names: &[(&str, usize)],
    biases: Option<&[(&str, usize)]>,
    k: usize,
    dtype: DType,
) -> Result<Vec<Linear>, ModelError> {
    let quantized = names.iter().filter(|(n, _)| ck.is_quantized(n)).count();
    if quantized == 0 {
        let bias = biases.map(|b| load_bias(ck, b)).transpose()?;
        return Ok(vec![Linear::packed(
            load_stacked(ck, names, k, dtype)?,
            bias,
        )]);
    }
    if quantized != names.len() {
        return Err(ModelError::Other(format!(
            "{:?}: some of these matrices are quantized and some are not",
            names.iter().map(|(n, _)| n).collect::<Vec<_>>()
        )));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, (n, rows))| {
            let bias = biases.map(|b| load_bias(ck, &b[i..i + 1])).transpose()?;
            Linear::quantized(&ck.get_quantized(n, &[*rows, k])?, bias)
        })
        .collect()
}

fn one(mut v: Vec<Linear>) -> Linear {
    v.swap_remove(0)
}

/// Runs the parts of a stacked layer, each into its own columns of `out`.
fn forward_parts(
    parts: &[Linear],
    x: &[f32],
    m: usize,
    out: &mut [f32],
    ldc: usize,
) -> Result<(), ModelError> {
    let mut col = 0;
    for p in parts {
        p.forward(x, m, &mut out[col..], ldc, Residual::None)?;
        col += p.n();
    }
    Ok(())
}

fn as_refs(v: &[(String, usize)]) -> Vec<(&str, usize)> {
    v.iter().map(|(n, r)| (n.as_str(), *r)).collect()
}

fn load_bias(ck: &Checkpoint, names: &[(&str, usize)]) -> Result<Vec<f32>, ModelError> {
    let mut b = vec![];
    for (n, len) in names {
        b.extend(ck.get_f32(n, &[*len])?);
    }
    Ok(b)
}

impl Qwen2 {
    /// `prefix`: `model.` (Apple) or `model.language_model.` (HF); `lm_head` sits at the top level in
    /// both layouts. With tied embeddings and no `lm_head.weight` the embedding matrix is reused.
    /// `dtype` is the requested weight precision (see [`Storage::choose`]).
    pub fn load(
        ck: &Checkpoint,
        prefix: &str,
        cfg: &TextConfig,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv, inter) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.intermediate_size,
        );
        if nh == 0 || nkv == 0 || nh % nkv != 0 || hd % 2 != 0 {
            return Err(ModelError::Other(format!(
                "unsupported attention shape: {nh} heads, {nkv} key/value heads, head_dim {hd}"
            )));
        }
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("{prefix}layers.{l}");
            let a = format!("{p}.self_attn");
            let (q, k, v) = (
                format!("{a}.q_proj"),
                format!("{a}.k_proj"),
                format!("{a}.v_proj"),
            );
            let qkv_w = [
                (format!("{q}.weight"), nh * hd),
                (format!("{k}.weight"), nkv * hd),
                (format!("{v}.weight"), nkv * hd),
            ];
            let qkv_b = [
                (format!("{q}.bias"), nh * hd),
                (format!("{k}.bias"), nkv * hd),
                (format!("{v}.bias"), nkv * hd),
            ];
            let gu = vec![
                (format!("{p}.mlp.gate_proj.weight"), inter),
                (format!("{p}.mlp.up_proj.weight"), inter),
            ];
            let o_name = format!("{a}.o_proj.weight");
            let d_name = format!("{p}.mlp.down_proj.weight");
            layers.push(Layer {
                qkv: load_linear(ck, &as_refs(&qkv_w), Some(&as_refs(&qkv_b)), h, dtype)?,
                o_proj: one(load_linear(ck, &[(&o_name, h)], None, nh * hd, dtype)?),
                gate_up: load_linear(ck, &as_refs(&gu), None, h, dtype)?,
                down_proj: one(load_linear(ck, &[(&d_name, h)], None, inter, dtype)?),
                input_layernorm: ck.get_f32(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_attention_layernorm: ck
                    .get_f32(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                k_cache: Vec::with_capacity(CACHE_RESERVE * nkv * hd),
                v_cache: Vec::with_capacity(CACHE_RESERVE * nkv * hd),
            });
        }
        let norm = ck.get_f32(&format!("{prefix}norm.weight"), &[h])?;
        let embed_name = format!("{prefix}embed_tokens.weight");
        let vocab = cfg.vocab_size;
        let embed_packed = load_stacked(ck, &[(&embed_name, vocab)], h, dtype)?;
        let storage = match &embed_packed {
            Packed::F32(_) => Storage::F32,
            Packed::Bf16(_) => Storage::Bf16,
            Packed::F16(_) => Storage::F16,
        };
        let (lm_head, embed) = if ck.contains("lm_head.weight") || !cfg.tie_word_embeddings {
            let head = one(load_linear(
                ck,
                &[("lm_head.weight", vocab)],
                None,
                h,
                dtype,
            )?);
            (head, Embeddings::Table(embed_packed))
        } else {
            (Linear::packed(embed_packed, None), Embeddings::TiedHead)
        };
        let max_len = cfg.max_position_embeddings.min(MAX_CONTEXT);
        let (cos, sin) = rope_tables(cfg, max_len);
        Ok(Self {
            layers,
            norm,
            lm_head,
            embed,
            cos,
            sin,
            max_len,
            hidden: h,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            intermediate: inter,
            vocab,
            eps: cfg.rms_norm_eps as f32,
            storage,
            offset: 0,
            scratch: Scratch::default(),
        })
    }

    /// Activations are always f32.
    pub fn dtype(&self) -> DType {
        DType::F32
    }

    /// How the weights are stored.
    pub fn storage(&self) -> Storage {
        self.storage
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
        self.max_len
    }

    /// How the matrices are held: `f32`, `bf16`, `f16`, or the quantized formats (`q8_0`, …).
    pub fn weights_name(&self) -> String {
        let mut names: Vec<String> = self
            .layers
            .iter()
            .flat_map(|l| {
                l.qkv
                    .iter()
                    .chain(&l.gate_up)
                    .chain([&l.o_proj, &l.down_proj])
            })
            .chain([&self.lm_head])
            .map(Linear::format_name)
            .collect();
        names.sort();
        names.dedup();
        names.join("+")
    }

    /// Bytes of weight memory (packed matrices; norms and biases left out).
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv
                    .iter()
                    .chain(&l.gate_up)
                    .map(Linear::bytes)
                    .sum::<usize>()
                    + l.o_proj.bytes()
                    + l.down_proj.bytes()
            })
            .sum();
        let embed = match &self.embed {
            Embeddings::TiedHead => 0,
            Embeddings::Table(p) => p.bytes(),
        };
        layers + self.lm_head.bytes() + embed
    }

    /// Embedding rows of `ids`, `[ids.len() · hidden]`.
    pub fn embed_rows(&self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        let h = self.hidden;
        let table = match &self.embed {
            Embeddings::Table(p) => p,
            Embeddings::TiedHead => match &self.lm_head.weights {
                super::linear::Weights::Packed(p) => p,
                super::linear::Weights::Quantized(_) => {
                    return Err(ModelError::Other(
                        "tied embeddings need an unquantized embedding table".into(),
                    ))
                }
            },
        };
        let mut out = vec![0f32; ids.len() * h];
        for (row, &id) in out.chunks_mut(h).zip(ids) {
            let id = id as usize;
            if id >= self.vocab {
                return Err(ModelError::Other(format!(
                    "token id {id} is outside the vocabulary of {} tokens",
                    self.vocab
                )));
            }
            for (p, v) in row.iter_mut().enumerate() {
                *v = table.get(p, id);
            }
        }
        Ok(out)
    }

    /// Token ids `[T]` → embeddings `[1, T, H]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor, ModelError> {
        let rows = self.embed_rows(ids)?;
        Ok(Tensor::from_vec(
            rows,
            (1, ids.len(), self.hidden),
            &Device::Cpu,
        )?)
    }

    /// Empties the KV cache (its memory is kept for the next sequence).
    pub fn clear_kv_cache(&mut self) {
        for l in &mut self.layers {
            l.k_cache.clear();
            l.v_cache.clear();
        }
        self.offset = 0;
    }

    /// Keeps only the first `len` tokens of the KV cache (a conversation that goes on from an
    /// earlier point of its sequence). Longer than the cache: nothing changes.
    pub fn truncate_kv_cache(&mut self, len: usize) {
        if len >= self.offset {
            return;
        }
        let row = self.kv_heads * self.head_dim;
        for l in &mut self.layers {
            l.k_cache.truncate(len * row);
            l.v_cache.truncate(len * row);
        }
        self.offset = len;
    }

    /// Runs `embeds` `[1, T, H]` through the decoder after whatever the cache holds, appending to the
    /// cache. Returns the final-normed hidden states `[1, T, H]`. `tap` receives the input embeddings
    /// and each layer's output (transformers' `hidden_states`, the last one after the final norm).
    pub fn forward_embeds_with(
        &mut self,
        embeds: &Tensor,
        mut tap: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor, ModelError> {
        let (_, t, h) = embeds.dims3()?;
        let x = embeds
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut tap_rows = |i: usize, rows: &[f32]| {
            if let Ok(tt) = Tensor::from_slice(rows, (1, t, h), &Device::Cpu) {
                tap(i, &tt);
            }
        };
        let out = self.forward_rows(x, t, Some(&mut tap_rows))?;
        Ok(Tensor::from_vec(out, (1, t, h), &Device::Cpu)?)
    }

    /// [`Self::forward_embeds_with`] without a tap.
    pub fn forward_embeds(&mut self, embeds: &Tensor) -> Result<Tensor, ModelError> {
        let (_, t, h) = embeds.dims3()?;
        let x = embeds
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let out = self.forward_rows(x, t, None)?;
        Ok(Tensor::from_vec(out, (1, t, h), &Device::Cpu)?)
    }

    /// The decoder on `t` rows of embeddings (`[t · hidden]`), appending to the cache; returns the
    /// final-normed hidden states.
    pub fn forward_rows(
        &mut self,
        mut x: Vec<f32>,
        t: usize,
        mut tap: Option<RowTap>,
    ) -> Result<Vec<f32>, ModelError> {
        let h = self.hidden;
        if x.len() != t * h {
            return Err(ModelError::Other(format!(
                "embeddings of {} values are not {t} rows of {h}",
                x.len()
            )));
        }
        let offset = self.offset;
        if offset + t > self.max_len {
            return Err(ModelError::Other(format!(
                "sequence of {} tokens exceeds the supported context of {} tokens",
                offset + t,
                self.max_len
            )));
        }
        if let Some(tap) = tap.as_mut() {
            tap(0, &x);
        }
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let qkv_w = (nh + 2 * nkv) * hd;
        let inter = self.intermediate;
        let mut sc = std::mem::take(&mut self.scratch);
        let xn = buf(&mut sc.xn, t * h);
        let qkv = buf(&mut sc.qkv, t * qkv_w);
        let attn = buf(&mut sc.attn, t * nh * hd);
        let gu = buf(&mut sc.gu, t * 2 * inter);
        let act = buf(&mut sc.act, t * inter);
        let n = self.layers.len();
        for li in 0..n {
            let layer = &mut self.layers[li];
            rms_norm_rows(&x, &layer.input_layernorm, self.eps, xn);
            forward_parts(&layer.qkv, xn, t, qkv, qkv_w)?;
            apply_rope(qkv, t, qkv_w, nh, nkv, hd, offset, &self.cos, &self.sin);
            for i in 0..t {
                let row = &qkv[i * qkv_w..(i + 1) * qkv_w];
                layer
                    .k_cache
                    .extend_from_slice(&row[nh * hd..(nh + nkv) * hd]);
                layer.v_cache.extend_from_slice(&row[(nh + nkv) * hd..]);
            }
            attention(
                qkv,
                qkv_w,
                t,
                offset,
                &layer.k_cache,
                &layer.v_cache,
                nh,
                nkv,
                hd,
                attn,
            );
            layer.o_proj.forward(attn, t, &mut x, h, Residual::Add)?;
            rms_norm_rows(&x, &layer.post_attention_layernorm, self.eps, xn);
            forward_parts(&layer.gate_up, xn, t, gu, 2 * inter)?;
            silu_mul_rows(gu, inter, act);
            layer.down_proj.forward(act, t, &mut x, h, Residual::Add)?;
            if li + 1 < n {
                if let Some(tap) = tap.as_mut() {
                    tap(li + 1, &x);
                }
            }
        }
        self.scratch = sc;
        let mut out = vec![0f32; t * h];
        rms_norm_rows(&x, &self.norm, self.eps, &mut out);
        if let Some(tap) = tap.as_mut() {
            tap(n, &out);
        }
        self.offset += t;
        Ok(out)
    }

    /// Logits `[N, vocab]` (f32) of hidden states `[1, N, H]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        let (_, n, h) = hidden.dims3()?;
        let x = hidden
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let out = self.logits_rows(&x, n)?;
        let _ = h;
        Ok(Tensor::from_vec(out, (n, self.vocab), &Device::Cpu)?)
    }

    /// Logits of `n` rows of hidden states.
    pub fn logits_rows(&self, x: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        let mut out = vec![0f32; n * self.vocab];
        self.lm_head
            .forward(x, n, &mut out, self.vocab, Residual::None)?;
        Ok(out)
    }

    /// Logits of the last position only: `[vocab]` (f32).
    pub fn last_logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        let t = hidden.dim(1)?;
        Ok(self.logits(&hidden.narrow(1, t - 1, 1)?)?.squeeze(0)?)
    }
}

/// RoPE tables: angle `p · θ^(-2i/d)` computed in f32 as transformers does, cos / sin in f64.
fn rope_tables(cfg: &TextConfig, max_len: usize) -> (Vec<f32>, Vec<f32>) {
    let half = cfg.head_dim / 2;
    let inv: Vec<f64> = (0..half)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / cfg.head_dim as f64))
        .collect();
    let mut cos = Vec::with_capacity(max_len * half);
    let mut sin = Vec::with_capacity(max_len * half);
    for p in 0..max_len {
        for f in &inv {
            let a = (p as f32 * *f as f32) as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// RMSNorm of each row: `x · rsqrt(mean(x²) + eps) · w`.
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (xr, or) in x.chunks(h).zip(out.chunks_mut(h)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = g * (v * inv);
        }
    }
}

/// Rotate-half RoPE on the q and k parts of each `qkv` row, positions `offset..offset + t`.
#[allow(clippy::too_many_arguments)]
fn apply_rope(
    qkv: &mut [f32],
    t: usize,
    width: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    offset: usize,
    cos: &[f32],
    sin: &[f32],
) {
    let half = hd / 2;
    for i in 0..t {
        let (c, s) = (
            &cos[(offset + i) * half..(offset + i + 1) * half],
            &sin[(offset + i) * half..(offset + i + 1) * half],
        );
        let row = &mut qkv[i * width..i * width + (nh + nkv) * hd];
        for head in row.chunks_mut(hd) {
            let (a, b) = head.split_at_mut(half);
            for j in 0..half {
                let (x1, x2) = (a[j], b[j]);
                a[j] = x1 * c[j] - x2 * s[j];
                b[j] = x2 * c[j] + x1 * s[j];
            }
        }
    }
}

/// `out[i, j] = silu(gu[i, j]) · gu[i, inter + j]` (gate and up side by side).
fn silu_mul_rows(gu: &[f32], inter: usize, out: &mut [f32]) {
    out.par_chunks_mut(inter)
        .zip(gu.par_chunks(2 * inter))
        .for_each(|(o, g)| dispatch(SiluMul { gu: g, out: o }));
}

struct SiluMul<'a> {
    gu: &'a [f32],
    out: &'a mut [f32],
}

impl SimdFn for SiluMul<'_> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        let n = self.out.len();
        let (g, u, o) = (
            self.gu.as_ptr(),
            // SAFETY: gu holds 2n floats
            unsafe { self.gu.as_ptr().add(n) },
            self.out.as_mut_ptr(),
        );
        let mut j = 0;
        // SAFETY: every access is below n (partial vectors at the end).
        unsafe {
            while j < n {
                let w = S::LANES.min(n - j);
                let v = S::mul(S::silu(S::load_n(g.add(j), w)), S::load_n(u.add(j), w));
                S::store_n(o.add(j), v, w);
                j += S::LANES;
            }
        }
    }
}

/// Causal grouped-query attention of `t` new queries (rows of `qkv`, positions `offset..`) over the
/// cached keys / values (`offset + t` rows of `kv_heads · head_dim`); writes `[t, heads · head_dim]`.
#[allow(clippy::too_many_arguments)]
fn attention(
    qkv: &[f32],
    width: usize,
    t: usize,
    offset: usize,
    kc: &[f32],
    vc: &[f32],
    nh: usize,
    nkv: usize,
    hd: usize,
    out: &mut [f32],
) {
    let len = offset + t;
    let kvw = nkv * hd;
    let group = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let per_head: Vec<Vec<f32>> = (0..nh)
        .into_par_iter()
        .map(|h| {
            let g = h / group;
            let mut o = vec![0f32; t * hd];
            let mut s = vec![0f32; t * len];
            if t >= 4 {
                // scores = q · kᵀ, then causal softmax, then · v, on the GEMM
                let kt = PackedB::<f32>::pack_with(hd, len, |p, j| kc[j * kvw + g * hd + p]);
                gemm(
                    &qkv[h * hd..],
                    width,
                    t,
                    &kt,
                    &mut s,
                    len,
                    Epilogue::default(),
                    false,
                );
                for (i, row) in s.chunks_mut(len).enumerate() {
                    let valid = offset + i + 1;
                    dispatch(SoftmaxRow {
                        row: &mut row[..valid],
                        scale,
                    });
                    row[valid..].iter_mut().for_each(|v| *v = 0.0);
                }
                let v = PackedB::<f32>::from_in_out(&vc[g * hd..], len, hd, kvw);
                gemm(&s, len, t, &v, &mut o, hd, Epilogue::default(), false);
            } else {
                for i in 0..t {
                    let valid = offset + i + 1;
                    let q = &qkv[i * width + h * hd..i * width + (h + 1) * hd];
                    dispatch(DecodeHead {
                        q,
                        kc: &kc[g * hd..],
                        vc: &vc[g * hd..],
                        stride: kvw,
                        len: valid,
                        scale,
                        scores: &mut s[i * len..i * len + valid],
                        out: &mut o[i * hd..(i + 1) * hd],
                    });
                }
            }
            o
        })
        .collect();
    for (h, o) in per_head.iter().enumerate() {
        for (i, row) in o.chunks(hd).enumerate() {
            out[i * nh * hd + h * hd..i * nh * hd + (h + 1) * hd].copy_from_slice(row);
        }
    }
}

/// One query against `len` cached keys / values (rows `stride` apart): the decoding step.
struct DecodeHead<'a> {
    q: &'a [f32],
    kc: &'a [f32],
    vc: &'a [f32],
    stride: usize,
    len: usize,
    scale: f32,
    scores: &'a mut [f32],
    out: &'a mut [f32],
}

impl SimdFn for DecodeHead<'_> {
    type Out = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        let hd = self.q.len();
        // SAFETY: key / value rows j < len hold hd floats at j·stride (checked by the caller's
        // slicing), scores has len entries, out hd.
        unsafe {
            for j in 0..self.len {
                let k = self.kc.as_ptr().add(j * self.stride);
                let mut acc = S::zero();
                let mut p = 0;
                while p < hd {
                    let w = S::LANES.min(hd - p);
                    acc = S::fma(
                        S::load_n(self.q.as_ptr().add(p), w),
                        S::load_n(k.add(p), w),
                        acc,
                    );
                    p += S::LANES;
                }
                self.scores[j] = S::reduce_add(acc);
            }
        }
        SoftmaxRow {
            row: &mut *self.scores,
            scale: self.scale,
        }
        .call::<S>();
        self.out.iter_mut().for_each(|v| *v = 0.0);
        // SAFETY: as above.
        unsafe {
            for j in 0..self.len {
                let pv = S::splat(self.scores[j]);
                let v = self.vc.as_ptr().add(j * self.stride);
                let mut p = 0;
                while p < hd {
                    let w = S::LANES.min(hd - p);
                    let o = self.out.as_mut_ptr().add(p);
                    S::store_n(o, S::fma(pv, S::load_n(v.add(p), w), S::load_n(o, w)), w);
                    p += S::LANES;
                }
            }
        }
    }
}
