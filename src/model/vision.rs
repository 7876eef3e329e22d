//! FastViTHD, the FastVLM image encoder (Vasu et al., "FastVLM", CVPR 2025; timm `fastvit.py`,
//! `fastvit_mci3`, and apple/ml-fastvlm `mobileclip/mci.py`), in its reparameterised inference form.
//!
//! One struct per checkpoint module, named as in timm. Activations are single images in NCHW `f32`
//! ([`FeatureMap`]); convolutions run on the direct kernels of [`super::kernels`], matrix products
//! on candle's GEMM. The encoder always computes in `f32` whatever the LLM's dtype: its weights are
//! small and the CPU has no fast half-precision arithmetic.

use super::config::{Layout, Mixer, VisionConfig};
use super::kernels;
use super::weights::Checkpoint;
use super::ModelError;

/// One image's activations: `[c, h, w]`, row-major, `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl FeatureMap {
    pub fn new(c: usize, h: usize, w: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), c * h * w, "FeatureMap: data length");
        Self { c, h, w, data }
    }

    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Tokens-major copy `[h·w, c]` (the row-major flatten FastVLM feeds to its projector).
    pub fn to_tokens(&self) -> Vec<f32> {
        let hw = self.hw();
        let mut out = vec![0f32; hw * self.c];
        for c in 0..self.c {
            for (p, &v) in self.data[c * hw..(c + 1) * hw].iter().enumerate() {
                out[p * self.c + c] = v;
            }
        }
        out
    }
}

/// Weight names of the vision tower in either layout (see fastvlm.md §6). Modules are addressed in
/// timm terms; this maps them to the names in the file.
pub struct VisionNames {
    layout: Layout,
    /// Apple keeps every stage piece in one flat `network.N` list: (stage, piece) → N.
    network: Vec<(usize, &'static str)>,
}

impl VisionNames {
    pub fn new(layout: Layout, cfg: &VisionConfig) -> Self {
        let mut network = vec![];
        for s in 0..cfg.layers.len() {
            if s > 0 {
                network.push((s, "downsample"));
            }
            if cfg.pos_embs[s] {
                network.push((s, "pos_emb"));
            }
            network.push((s, "blocks"));
        }
        Self { layout, network }
    }

    fn prefix(&self) -> &'static str {
        match self.layout {
            Layout::Apple => "model.vision_tower.vision_tower.model.",
            Layout::Hf => "model.vision_tower.timm_model.",
        }
    }

    fn net(&self, stage: usize, piece: &str) -> usize {
        self.network
            .iter()
            .position(|&(s, p)| s == stage && p == piece)
            .expect("stage piece exists")
    }

    pub fn stem(&self, i: usize) -> String {
        match self.layout {
            Layout::Apple => format!("{}patch_embed.{i}.reparam_conv", self.prefix()),
            Layout::Hf => format!("{}stem.{i}.reparam_conv", self.prefix()),
        }
    }

    /// `j = 0`: the large-kernel grouped conv; `j = 1`: the 1×1 conv.
    pub fn downsample(&self, stage: usize, j: usize) -> String {
        match self.layout {
            Layout::Apple => {
                let leaf = if j == 0 {
                    "lkb_reparam"
                } else {
                    "reparam_conv"
                };
                format!(
                    "{}network.{}.proj.{j}.{leaf}",
                    self.prefix(),
                    self.net(stage, "downsample")
                )
            }
            Layout::Hf => format!(
                "{}stages.{stage}.downsample.proj.{j}.reparam_conv",
                self.prefix()
            ),
        }
    }

    pub fn pos_emb(&self, stage: usize) -> String {
        match self.layout {
            Layout::Apple => format!(
                "{}network.{}.reparam_conv",
                self.prefix(),
                self.net(stage, "pos_emb")
            ),
            Layout::Hf => format!("{}stages.{stage}.pos_emb.reparam_conv", self.prefix()),
        }
    }

    pub fn block(&self, stage: usize, b: usize) -> String {
        match self.layout {
            Layout::Apple => format!("{}network.{}.{b}", self.prefix(), self.net(stage, "blocks")),
            Layout::Hf => format!("{}stages.{stage}.blocks.{b}", self.prefix()),
        }
    }

    /// `which` is `layer_scale`, `layer_scale_1` or `layer_scale_2`.
    pub fn layer_scale(&self, block: &str, which: &str) -> String {
        match self.layout {
            Layout::Apple => format!("{block}.{which}"),
            Layout::Hf => format!("{block}.{which}.gamma"),
        }
    }

    pub fn mlp(&self, block: &str) -> String {
        match self.layout {
            Layout::Apple => format!("{block}.convffn"),
            Layout::Hf => format!("{block}.mlp"),
        }
    }

    pub fn final_conv(&self) -> String {
        match self.layout {
            Layout::Apple => format!("{}conv_exp", self.prefix()),
            Layout::Hf => format!("{}final_conv", self.prefix()),
        }
    }

    /// `reduce` (timm `fc1`) or `expand` (timm `fc2`).
    pub fn se(&self, which: &str) -> String {
        let leaf = match (self.layout, which) {
            (Layout::Apple, w) => w.to_string(),
            (Layout::Hf, "reduce") => "fc1".into(),
            (Layout::Hf, _) => "fc2".into(),
        };
        format!("{}.se.{leaf}", self.final_conv())
    }

    /// Apple's MobileCLIP projection head, which the VLM does not use.
    pub fn clip_head(&self) -> Option<String> {
        match self.layout {
            Layout::Apple => Some(format!("{}head.proj", self.prefix())),
            Layout::Hf => None,
        }
    }
}

/// How a convolution's input channels connect to its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvKind {
    /// `groups = 1`, k > 1 (the stem's first conv).
    Dense,
    /// `groups = 1`, k = 1.
    Pointwise,
    /// `groups = c_in`; `mult` outputs per input channel.
    Depthwise { mult: usize },
}

/// A plain convolution with zero padding `k / 2`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    kind: ConvKind,
}

impl Conv2d {
    /// Loads `{name}.weight` `[c_out, c_in / groups, k, k]` (+ `{name}.bias` when `bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ck: &Checkpoint,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let weight = ck.get_f32(&format!("{name}.weight"), &[c_out, c_in / groups, k, k])?;
        let bias = if bias {
            Some(ck.get_f32(&format!("{name}.bias"), &[c_out])?)
        } else {
            None
        };
        let kind = if groups == 1 && k == 1 {
            ConvKind::Pointwise
        } else if groups == 1 {
            ConvKind::Dense
        } else if groups == c_in && c_out % c_in == 0 {
            ConvKind::Depthwise { mult: c_out / c_in }
        } else {
            return Err(ModelError::Other(format!(
                "{name}: unsupported convolution grouping ({c_in} → {c_out}, groups {groups})"
            )));
        };
        Ok(Self {
            weight,
            bias,
            c_in,
            c_out,
            k,
            stride,
            kind,
        })
    }

    /// Folds an eval-mode BatchNorm that follows this conv into its weights and bias.
    fn fold_batch_norm(&mut self, scale: &[f32], shift: &[f32]) {
        let per_out = self.weight.len() / self.c_out;
        for o in 0..self.c_out {
            self.weight[o * per_out..(o + 1) * per_out]
                .iter_mut()
                .for_each(|w| *w *= scale[o]);
        }
        let b = self.bias.get_or_insert_with(|| vec![0.0; self.c_out]);
        for o in 0..self.c_out {
            b[o] = b[o] * scale[o] + shift[o];
        }
    }

    pub fn forward(&self, x: &FeatureMap) -> FeatureMap {
        assert_eq!(x.c, self.c_in, "Conv2d: input channels");
        let bias = self.bias.as_deref();
        match self.kind {
            ConvKind::Pointwise => {
                let data =
                    kernels::conv_pointwise(&x.data, x.c, x.hw(), &self.weight, bias, self.c_out);
                FeatureMap::new(self.c_out, x.h, x.w, data)
            }
            ConvKind::Dense => {
                let (data, h, w) = kernels::conv_dense(
                    &x.data,
                    x.c,
                    x.h,
                    x.w,
                    &self.weight,
                    bias,
                    self.c_out,
                    self.k,
                    self.stride,
                );
                FeatureMap::new(self.c_out, h, w, data)
            }
            ConvKind::Depthwise { mult } => {
                let (data, h, w) = kernels::conv_depthwise(
                    &x.data,
                    x.c,
                    x.h,
                    x.w,
                    &self.weight,
                    bias,
                    self.k,
                    self.stride,
                    mult,
                );
                FeatureMap::new(self.c_out, h, w, data)
            }
        }
    }
}

/// timm `MobileOneBlock` after reparameterisation: one conv, optional squeeze-excite, GELU.
#[derive(Debug, Clone)]
pub struct MobileOneBlock {
    pub reparam_conv: Conv2d,
    pub se: Option<SqueezeExcite>,
}

impl MobileOneBlock {
    pub fn forward(&self, x: &FeatureMap) -> FeatureMap {
        let mut y = self.reparam_conv.forward(x);
        if let Some(se) = &self.se {
            se.forward_inplace(&mut y);
        }
        kernels::gelu_inplace(&mut y.data);
        y
    }
}

/// timm `SqueezeExcite` of the final conv: mean → 1×1 reduce → ReLU → 1×1 expand → sigmoid → scale.
#[derive(Debug, Clone)]
pub struct SqueezeExcite {
    reduce_w: Vec<f32>,
    reduce_b: Vec<f32>,
    expand_w: Vec<f32>,
    expand_b: Vec<f32>,
    c: usize,
    r: usize,
}

impl SqueezeExcite {
    pub fn forward_inplace(&self, x: &mut FeatureMap) {
        let hw = x.hw();
        let mean: Vec<f32> = x
            .data
            .chunks(hw)
            .map(|row| row.iter().sum::<f32>() / hw as f32)
            .collect();
        let mut mid = self.reduce_b.clone();
        kernels::matmul(&self.reduce_w, &mean, &mut mid, self.r, self.c, 1, true);
        mid.iter_mut().for_each(|v| *v = v.max(0.0));
        let mut gate = self.expand_b.clone();
        kernels::matmul(&self.expand_w, &mid, &mut gate, self.c, self.r, 1, true);
        for (row, g) in x.data.chunks_mut(hw).zip(gate) {
            let s = 1.0 / (1.0 + (-g).exp());
            row.iter_mut().for_each(|v| *v *= s);
        }
    }
}

/// timm `PatchEmbed` (stage downsample): GELU(grouped k×k conv, stride 2, C → 2C) then GELU(1×1).
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    pub large_kernel: MobileOneBlock,
    pub pointwise: MobileOneBlock,
}

/// timm `RepConditionalPosEnc` after reparameterisation: one depthwise conv (identity folded in).
#[derive(Debug, Clone)]
pub struct RepCpe {
    pub reparam_conv: Conv2d,
}

/// timm `ConvMlp`: depthwise k×k conv (BatchNorm folded in at load) → 1×1 → GELU → 1×1.
#[derive(Debug, Clone)]
pub struct ConvMlp {
    conv: Conv2d,
    fc1: Conv2d,
    fc2: Conv2d,
}

impl ConvMlp {
    fn load(
        ck: &Checkpoint,
        name: &str,
        c: usize,
        hidden: usize,
        k: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        let mut conv = Conv2d::load(ck, &format!("{name}.conv.conv"), c, c, k, 1, c, false)?;
        let bn = format!("{name}.conv.bn");
        let w = ck.get_f32(&format!("{bn}.weight"), &[c])?;
        let b = ck.get_f32(&format!("{bn}.bias"), &[c])?;
        let mean = ck.get_f32(&format!("{bn}.running_mean"), &[c])?;
        let var = ck.get_f32(&format!("{bn}.running_var"), &[c])?;
        let scale: Vec<f32> = (0..c)
            .map(|i| (w[i] as f64 / (var[i] as f64 + eps).sqrt()) as f32)
            .collect();
        let shift: Vec<f32> = (0..c).map(|i| b[i] - mean[i] * scale[i]).collect();
        conv.fold_batch_norm(&scale, &shift);
        Ok(Self {
            conv,
            fc1: Conv2d::load(ck, &format!("{name}.fc1"), c, hidden, 1, 1, 1, true)?,
            fc2: Conv2d::load(ck, &format!("{name}.fc2"), hidden, c, 1, 1, 1, true)?,
        })
    }

    pub fn forward(&self, x: &FeatureMap) -> FeatureMap {
        let y = self.conv.forward(x);
        let mut y = self.fc1.forward(&y);
        kernels::gelu_inplace(&mut y.data);
        self.fc2.forward(&y)
    }
}

/// timm `RepMixerBlock`: x = dwconv(x) (identity and layer scale folded in); x += γ · ConvMlp(x).
#[derive(Debug, Clone)]
pub struct RepMixerBlock {
    token_mixer: Conv2d,
    mlp: ConvMlp,
    layer_scale: Vec<f32>,
}

/// Channel LayerNorm (timm `LayerNorm2d`): per pixel over C, biased variance.
#[derive(Debug, Clone)]
pub struct LayerNorm2d {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm2d {
    pub fn forward(&self, x: &FeatureMap) -> FeatureMap {
        let (c, hw) = (x.c, x.hw());
        let mut mean = vec![0f32; hw];
        for row in x.data.chunks(hw) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= c as f32);
        let mut var = vec![0f32; hw];
        for row in x.data.chunks(hw) {
            var.iter_mut()
                .zip(row)
                .zip(&mean)
                .for_each(|((s, v), m)| *s += (v - m) * (v - m));
        }
        let inv: Vec<f32> = var
            .iter()
            .map(|s| 1.0 / (s / c as f32 + self.eps).sqrt())
            .collect();
        let mut out = vec![0f32; c * hw];
        for (ch, (o, row)) in out.chunks_mut(hw).zip(x.data.chunks(hw)).enumerate() {
            let (g, b) = (self.weight[ch], self.bias[ch]);
            for p in 0..hw {
                o[p] = (row[p] - mean[p]) * inv[p] * g + b;
            }
        }
        FeatureMap::new(c, x.h, x.w, out)
    }
}

/// timm `Attention`: multi-head self-attention over the pixels, `head_dim` wide heads, qkv without
/// bias, no mask, no position bias. Works channel-major throughout (no transposes).
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Vec<f32>,
    proj: Vec<f32>,
    proj_bias: Vec<f32>,
    c: usize,
    head_dim: usize,
}

impl Attention {
    pub fn forward(&self, x: &FeatureMap) -> FeatureMap {
        let (c, n, d) = (self.c, x.hw(), self.head_dim);
        // qkv[3C, N] = W[3C, C] · x[C, N]
        let qkv = kernels::conv_pointwise(&x.data, c, n, &self.qkv, None, 3 * c);
        let scale = 1.0 / (d as f32).sqrt();
        let mut attn = vec![0f32; c * n];
        let mut scores = vec![0f32; n * n];
        for h in 0..c / d {
            let q = &qkv[h * d * n..(h + 1) * d * n];
            let k = &qkv[(c + h * d) * n..(c + (h + 1) * d) * n];
            let v = &qkv[(2 * c + h * d) * n..(2 * c + (h + 1) * d) * n];
            // scores[N, N] = qᵀ[N, d] · k[d, N]
            kernels::matmul_strided(
                q,
                (1, n as isize),
                k,
                (n as isize, 1),
                &mut scores,
                n,
                d,
                n,
                false,
            );
            softmax_rows_inplace(&mut scores, n, scale);
            // out_h[d, N] = v[d, N] · scoresᵀ[N, N]
            let out = &mut attn[h * d * n..(h + 1) * d * n];
            kernels::matmul_strided(
                v,
                (n as isize, 1),
                &scores,
                (1, n as isize),
                out,
                d,
                n,
                n,
                false,
            );
        }
        let data = kernels::conv_pointwise(&attn, c, n, &self.proj, Some(&self.proj_bias), c);
        FeatureMap::new(c, x.h, x.w, data)
    }
}

/// Row softmax of `x * scale` over rows of length `n`.
fn softmax_rows_inplace(x: &mut [f32], n: usize, scale: f32) {
    use rayon::prelude::*;
    x.par_chunks_mut(n).for_each(|row| {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * scale;
        let mut sum = 0f32;
        row.iter_mut().for_each(|v| {
            *v = (*v * scale - max).exp();
            sum += *v;
        });
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    });
}

/// timm `AttentionBlock`: x += γ1 · Attn(LN(x)); x += γ2 · ConvMlp(x).
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    norm: LayerNorm2d,
    token_mixer: Attention,
    mlp: ConvMlp,
    layer_scale_1: Vec<f32>,
    layer_scale_2: Vec<f32>,
}

#[derive(Debug, Clone)]
pub enum Block {
    RepMixer(RepMixerBlock),
    Attention(AttentionBlock),
}

impl Block {
    pub fn forward(&self, x: FeatureMap) -> FeatureMap {
        match self {
            Block::RepMixer(b) => {
                let mut x = b.token_mixer.forward(&x);
                let y = b.mlp.forward(&x);
                kernels::residual_scaled_inplace(&mut x.data, &y.data, x.h * x.w, &b.layer_scale);
                x
            }
            Block::Attention(b) => {
                let mut x = x;
                let y = b.token_mixer.forward(&b.norm.forward(&x));
                kernels::residual_scaled_inplace(&mut x.data, &y.data, x.h * x.w, &b.layer_scale_1);
                let y = b.mlp.forward(&x);
                kernels::residual_scaled_inplace(&mut x.data, &y.data, x.h * x.w, &b.layer_scale_2);
                x
            }
        }
    }
}

/// timm `FastVitStage`: [downsample] → [pos_emb] → blocks.
#[derive(Debug, Clone)]
pub struct FastVitStage {
    pub downsample: Option<PatchEmbed>,
    pub pos_emb: Option<RepCpe>,
    pub blocks: Vec<Block>,
}

/// The whole encoder.
#[derive(Debug, Clone)]
pub struct FastViTHD {
    pub cfg: VisionConfig,
    pub stem: Vec<MobileOneBlock>,
    pub stages: Vec<FastVitStage>,
    pub final_conv: MobileOneBlock,
}

fn mob(conv: Conv2d) -> MobileOneBlock {
    MobileOneBlock {
        reparam_conv: conv,
        se: None,
    }
}

impl FastViTHD {
    /// Loads every tower weight; Apple's unused MobileCLIP `head.proj` is marked as ignored.
    pub fn load(ck: &Checkpoint, layout: Layout, cfg: &VisionConfig) -> Result<Self, ModelError> {
        let names = VisionNames::new(layout, cfg);
        let d0 = cfg.embed_dims[0];
        let stem = vec![
            mob(Conv2d::load(ck, &names.stem(0), 3, d0, 3, 2, 1, true)?),
            mob(Conv2d::load(ck, &names.stem(1), d0, d0, 3, 2, d0, true)?),
            mob(Conv2d::load(ck, &names.stem(2), d0, d0, 1, 1, 1, true)?),
        ];
        let lk = cfg.large_kernel;
        let mut stages = vec![];
        for s in 0..cfg.layers.len() {
            let c = cfg.embed_dims[s];
            let downsample = if s > 0 {
                let cp = cfg.embed_dims[s - 1];
                Some(PatchEmbed {
                    large_kernel: mob(Conv2d::load(
                        ck,
                        &names.downsample(s, 0),
                        cp,
                        c,
                        lk,
                        2,
                        cp,
                        true,
                    )?),
                    pointwise: mob(Conv2d::load(
                        ck,
                        &names.downsample(s, 1),
                        c,
                        c,
                        1,
                        1,
                        1,
                        true,
                    )?),
                })
            } else {
                None
            };
            let pos_emb = if cfg.pos_embs[s] {
                Some(RepCpe {
                    reparam_conv: Conv2d::load(ck, &names.pos_emb(s), c, c, lk, 1, c, true)?,
                })
            } else {
                None
            };
            let hidden = (c as f64 * cfg.mlp_ratios[s]) as usize;
            let mut blocks = vec![];
            for b in 0..cfg.layers[s] {
                let bn = names.block(s, b);
                let mlp = ConvMlp::load(ck, &names.mlp(&bn), c, hidden, lk, cfg.norm_eps)?;
                let ls = |which: &str| ck.get_f32(&names.layer_scale(&bn, which), &[c, 1, 1]);
                blocks.push(match cfg.mixers[s] {
                    Mixer::RepMixer => Block::RepMixer(RepMixerBlock {
                        token_mixer: Conv2d::load(
                            ck,
                            &format!("{bn}.token_mixer.reparam_conv"),
                            c,
                            c,
                            cfg.repmixer_kernel,
                            1,
                            c,
                            true,
                        )?,
                        mlp,
                        layer_scale: ls("layer_scale")?,
                    }),
                    Mixer::Attention => Block::Attention(AttentionBlock {
                        norm: LayerNorm2d {
                            weight: ck.get_f32(&format!("{bn}.norm.weight"), &[c])?,
                            bias: ck.get_f32(&format!("{bn}.norm.bias"), &[c])?,
                            eps: cfg.norm_eps as f32,
                        },
                        token_mixer: Attention {
                            qkv: ck
                                .get_f32(&format!("{bn}.token_mixer.qkv.weight"), &[3 * c, c])?,
                            proj: ck.get_f32(&format!("{bn}.token_mixer.proj.weight"), &[c, c])?,
                            proj_bias: ck.get_f32(&format!("{bn}.token_mixer.proj.bias"), &[c])?,
                            c,
                            head_dim: cfg.head_dim,
                        },
                        mlp,
                        layer_scale_1: ls("layer_scale_1")?,
                        layer_scale_2: ls("layer_scale_2")?,
                    }),
                });
            }
            stages.push(FastVitStage {
                downsample,
                pos_emb,
                blocks,
            });
        }
        let last = *cfg
            .embed_dims
            .last()
            .expect("validated: at least one stage");
        let (oc, r) = (cfg.out_channels, cfg.se_channels);
        let fc = names.final_conv();
        let final_conv = MobileOneBlock {
            reparam_conv: Conv2d::load(
                ck,
                &format!("{fc}.reparam_conv"),
                last,
                oc,
                3,
                1,
                last,
                true,
            )?,
            se: Some(SqueezeExcite {
                reduce_w: ck.get_f32(&format!("{}.weight", names.se("reduce")), &[r, oc, 1, 1])?,
                reduce_b: ck.get_f32(&format!("{}.bias", names.se("reduce")), &[r])?,
                expand_w: ck.get_f32(&format!("{}.weight", names.se("expand")), &[oc, r, 1, 1])?,
                expand_b: ck.get_f32(&format!("{}.bias", names.se("expand")), &[oc])?,
                c: oc,
                r,
            }),
        };
        if let Some(h) = names.clip_head() {
            ck.ignore(&h);
        }
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            stages,
            final_conv,
        })
    }

    /// Runs the encoder on `pixels` (`[3, R, R]` in [0, 1]); returns `[out_channels, R/64, R/64]`.
    pub fn forward(&self, pixels: &FeatureMap) -> Result<FeatureMap, ModelError> {
        self.forward_with(pixels, |_, _| {})
    }

    /// Like [`Self::forward`], handing every intermediate activation to `tap` under its timm module
    /// name (`stem.0`, `stages.1.downsample`, `stages.3.pos_emb`, `stages.2.blocks.0`, `stages.4`,
    /// `final_conv`, …) so tests can compare each one with the reference.
    pub fn forward_with(
        &self,
        pixels: &FeatureMap,
        mut tap: impl FnMut(&str, &FeatureMap),
    ) -> Result<FeatureMap, ModelError> {
        let stride = self.cfg.stride();
        if pixels.c != 3
            || pixels.h % stride != 0
            || pixels.w % stride != 0
            || pixels.h == 0
            || pixels.w == 0
        {
            return Err(ModelError::Other(format!(
                "the vision encoder takes [3, H, W] with H and W positive multiples of {stride}; got [{}, {}, {}]",
                pixels.c, pixels.h, pixels.w
            )));
        }
        let mut x = self.stem[0].forward(pixels);
        tap("stem.0", &x);
        for (i, m) in self.stem.iter().enumerate().skip(1) {
            x = m.forward(&x);
            tap(&format!("stem.{i}"), &x);
        }
        for (s, st) in self.stages.iter().enumerate() {
            if let Some(d) = &st.downsample {
                x = d.pointwise.forward(&d.large_kernel.forward(&x));
                tap(&format!("stages.{s}.downsample"), &x);
            }
            if let Some(p) = &st.pos_emb {
                x = p.reparam_conv.forward(&x);
                tap(&format!("stages.{s}.pos_emb"), &x);
            }
            for (b, blk) in st.blocks.iter().enumerate() {
                x = blk.forward(x);
                tap(&format!("stages.{s}.blocks.{b}"), &x);
            }
            tap(&format!("stages.{s}"), &x);
        }
        let x = self.final_conv.forward(&x);
        tap("final_conv", &x);
        Ok(x)
    }
}

/// Floating-point operations of one encoder pass at `h × w` pixels, counted from the architecture:
/// every multiply-add of a convolution, linear layer and attention product counts as 2; elementwise
/// work (GELU, norms, softmax, residuals, squeeze-excite gating) is left out. FastViTHD: ≈ 29.6
/// GFLOP at 256², 119 at 512², 487 at 1024².
pub fn encoder_flops(cfg: &VisionConfig, h: usize, w: usize) -> f64 {
    let lk = (cfg.large_kernel * cfg.large_kernel) as f64;
    let rk = (cfg.repmixer_kernel * cfg.repmixer_kernel) as f64;
    let d0 = cfg.embed_dims[0] as f64;
    let (mut ph, mut pw) = (kernels::conv_out(h, 3, 2), kernels::conv_out(w, 3, 2));
    // stem: dense 3×3 s2 (3 → d0), depthwise 3×3 s2, 1×1
    let mut macs = (ph * pw) as f64 * d0 * 27.0;
    ph = kernels::conv_out(ph, 3, 2);
    pw = kernels::conv_out(pw, 3, 2);
    let mut px = (ph * pw) as f64;
    macs += px * d0 * 9.0 + px * d0 * d0;
    for s in 0..cfg.layers.len() {
        let c = cfg.embed_dims[s] as f64;
        if s > 0 {
            ph = kernels::conv_out(ph, cfg.large_kernel, 2);
            pw = kernels::conv_out(pw, cfg.large_kernel, 2);
            px = (ph * pw) as f64;
            // grouped k×k (one input channel per output) then 1×1
            macs += px * c * lk + px * c * c;
        }
        if cfg.pos_embs[s] {
            macs += px * c * lk;
        }
        let hidden = (c * cfg.mlp_ratios[s]).floor();
        let mlp = px * (c * lk + 2.0 * c * hidden);
        let block = match cfg.mixers[s] {
            Mixer::RepMixer => px * c * rk + mlp,
            // qkv, q·kᵀ and p·v over all heads, proj
            Mixer::Attention => px * 3.0 * c * c + 2.0 * px * px * c + px * c * c + mlp,
        };
        macs += block * cfg.layers[s] as f64;
    }
    macs += px * cfg.out_channels as f64 * 9.0;
    2.0 * macs
}
