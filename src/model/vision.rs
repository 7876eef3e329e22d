//! FastViTHD, the FastVLM image encoder (Vasu et al., "FastVLM", CVPR 2025; timm `fastvit.py`,
//! `fastvit_mci3`, and apple/ml-fastvlm `mobileclip/mci.py`), in its reparameterised inference form.
//!
//! One struct per checkpoint module, named as in timm. The public interface takes and returns NCHW
//! [`FeatureMap`]s; inside, activations are NHWC ([`Nhwc`]) so depthwise convolutions vectorise over
//! channels and every 1×1 convolution is one GEMM on pre-packed weights with its bias, GELU or
//! layer-scaled residual fused into the store (see [`super::kernels`]). BatchNorm is folded into the
//! preceding convolution at load. The encoder always computes in `f32` whatever the LLM's dtype.

use std::sync::Mutex;

use super::config::{Layout, Mixer, VisionConfig};
use super::kernels::conv::{self, DwWeights};
use super::kernels::gemm::{self, gemm, Act, Epilogue, PackedB, Residual};
use super::kernels::{attention, conv_out};
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

/// One image's activations inside the encoder: `[h, w, c]` (NHWC), row-major, `f32`. Channels are
/// contiguous, so depthwise convolutions vectorise over them and 1×1 convolutions are plain GEMMs
/// over the pixel rows; the row-major flatten FastVLM feeds its projector is this layout as is.
#[derive(Debug, Clone, PartialEq)]
pub struct Nhwc {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Nhwc {
    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    /// The same activations as an NCHW [`FeatureMap`].
    pub fn to_feature_map(&self) -> FeatureMap {
        FeatureMap::new(
            self.c,
            self.h,
            self.w,
            conv::nhwc_to_nchw(&self.data, self.hw(), self.c),
        )
    }
}

/// Buffers reused from one layer (and one call) to the next, so large activations are not
/// allocated and page-faulted afresh every time.
///
/// The pool owns only the buffers given back to it, each an ordinary `Vec` whose length is what
/// has been initialised: it keeps no record of buffers handed out (one that never comes back, like
/// the encoder's output, is simply gone), so nothing in it can go stale, and it has no `unsafe`.
#[derive(Debug, Default)]
struct Pool {
    free: Vec<Vec<f32>>,
}

impl Pool {
    /// A buffer of `len` floats (contents unspecified: every kernel overwrites its output). Picks
    /// the shortest buffer already initialised to `len` or more (nothing to write), else the
    /// smallest that has the capacity (its tail is zero-filled), else the largest (it grows).
    fn take(&mut self, len: usize) -> Vec<f32> {
        let free = &self.free;
        let pick = (0..free.len())
            .filter(|&i| free[i].len() >= len)
            .min_by_key(|&i| free[i].len())
            .or_else(|| {
                (0..free.len())
                    .filter(|&i| free[i].capacity() >= len)
                    .min_by_key(|&i| free[i].capacity())
            })
            .or_else(|| (0..free.len()).max_by_key(|&i| free[i].capacity()));
        let mut v = pick.map(|i| self.free.swap_remove(i)).unwrap_or_default();
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        v
    }

    fn put(&mut self, v: Vec<f32>) {
        self.free.push(v);
    }
}

/// Loads a convolution weight `[c_out, c_in / groups, k, k]` (+ bias) as f32.
#[allow(clippy::too_many_arguments)]
fn load_conv(
    ck: &Checkpoint,
    name: &str,
    c_in: usize,
    c_out: usize,
    k: usize,
    groups: usize,
    bias: bool,
) -> Result<(Vec<f32>, Option<Vec<f32>>), ModelError> {
    let weight = ck.get_f32(&format!("{name}.weight"), &[c_out, c_in / groups, k, k])?;
    let bias = if bias {
        Some(ck.get_f32(&format!("{name}.bias"), &[c_out])?)
    } else {
        None
    };
    Ok((weight, bias))
}

/// A 1×1 convolution / linear layer: weights packed for the GEMM.
#[derive(Debug)]
struct Pointwise {
    packed: PackedB<f32>,
    bias: Option<Vec<f32>>,
}

impl Pointwise {
    fn load(ck: &Checkpoint, name: &str, c_in: usize, c_out: usize) -> Result<Self, ModelError> {
        let (w, bias) = load_conv(ck, name, c_in, c_out, 1, 1, true)?;
        Ok(Self::new(&w, bias, c_in, c_out))
    }

    fn new(w: &[f32], bias: Option<Vec<f32>>, c_in: usize, c_out: usize) -> Self {
        Self {
            packed: PackedB::from_out_in(w, c_out, c_in, |v| v),
            bias,
        }
    }

    fn c_out(&self) -> usize {
        self.packed.n()
    }

    /// `act(x · Wᵀ + b)` into a new buffer.
    fn forward(&self, x: &Nhwc, act: Act, pool: &mut Pool) -> Nhwc {
        let n = self.c_out();
        let mut out = pool.take(x.hw() * n);
        gemm(
            &x.data,
            x.c,
            x.hw(),
            &self.packed,
            &mut out,
            n,
            Epilogue::bias(self.bias.as_deref()).with_act(act),
            true,
        );
        Nhwc {
            h: x.h,
            w: x.w,
            c: n,
            data: out,
        }
    }

    /// `y += scale ⊙ (x · Wᵀ + b)` in place (the layer-scale residual).
    fn forward_residual(&self, x: &Nhwc, scale: &[f32], y: &mut Nhwc) {
        assert_eq!((y.hw(), y.c), (x.hw(), self.c_out()), "residual shape");
        gemm(
            &x.data,
            x.c,
            x.hw(),
            &self.packed,
            &mut y.data,
            y.c,
            Epilogue::bias(self.bias.as_deref()).with_residual(Residual::Scaled(scale)),
            true,
        );
    }
}

/// A depthwise (or FastViTHD's grouped ×2) convolution.
#[derive(Debug)]
struct Depthwise(DwWeights);

impl Depthwise {
    #[allow(clippy::too_many_arguments)]
    fn load(
        ck: &Checkpoint,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        if !c_out.is_multiple_of(c_in) || !(1..=2).contains(&(c_out / c_in)) {
            return Err(ModelError::Other(format!(
                "{name}: unsupported grouped convolution ({c_in} → {c_out} channels, groups {c_in})"
            )));
        }
        let (w, b) = load_conv(ck, name, c_in, c_out, k, c_in, bias)?;
        Ok(Self(DwWeights::from_torch(
            &w,
            b.as_deref(),
            c_in,
            c_out / c_in,
            k,
            stride,
        )))
    }

    fn forward(&self, x: &Nhwc, act: Act, pool: &mut Pool) -> Nhwc {
        assert_eq!(x.c, self.0.c_in, "depthwise conv: input channels");
        let (k, st) = (self.0.k, self.0.stride);
        let mut out = pool.take(conv_out(x.h, k, st) * conv_out(x.w, k, st) * self.0.c_out());
        let (h, w) = conv::dw_conv(&x.data, x.h, x.w, &self.0, act, &mut out);
        Nhwc {
            h,
            w,
            c: self.0.c_out(),
            data: out,
        }
    }
}

/// The stem's dense 3×3 stride-2 convolution on the NCHW pixels, straight into NHWC, with GELU.
#[derive(Debug)]
struct DenseConv(conv::DenseWeights);

impl DenseConv {
    fn forward(&self, pixels: &FeatureMap, pool: &mut Pool) -> Nhwc {
        let (k, s) = (self.0.k, self.0.stride);
        let (ho, wo) = (conv_out(pixels.h, k, s), conv_out(pixels.w, k, s));
        let mut out = pool.take(ho * wo * self.0.c_out);
        conv::dense_conv_nchw(
            &pixels.data,
            pixels.h,
            pixels.w,
            &self.0,
            Act::Gelu,
            &mut out,
        );
        Nhwc {
            h: ho,
            w: wo,
            c: self.0.c_out,
            data: out,
        }
    }
}

/// timm `ConvMlp`: depthwise k×k conv (BatchNorm folded in at load) → 1×1 → GELU → 1×1, added to
/// the block input with its layer scale.
#[derive(Debug)]
struct ConvMlp {
    conv: Depthwise,
    fc1: Pointwise,
    fc2: Pointwise,
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
        let conv_name = format!("{name}.conv.conv");
        let (mut w, _) = load_conv(ck, &conv_name, c, c, k, c, false)?;
        let bn = format!("{name}.conv.bn");
        let g = ck.get_f32(&format!("{bn}.weight"), &[c])?;
        let b = ck.get_f32(&format!("{bn}.bias"), &[c])?;
        let mean = ck.get_f32(&format!("{bn}.running_mean"), &[c])?;
        let var = ck.get_f32(&format!("{bn}.running_var"), &[c])?;
        // fold the eval-mode BatchNorm into the conv: w' = w·s, b' = β − μ·s, s = γ / √(σ² + ε)
        let scale: Vec<f32> = (0..c)
            .map(|i| (g[i] as f64 / (var[i] as f64 + eps).sqrt()) as f32)
            .collect();
        let shift: Vec<f32> = (0..c).map(|i| b[i] - mean[i] * scale[i]).collect();
        for (o, row) in w.chunks_mut(k * k).enumerate() {
            row.iter_mut().for_each(|v| *v *= scale[o]);
        }
        Ok(Self {
            conv: Depthwise(DwWeights::from_torch(&w, Some(&shift), c, 1, k, 1)),
            fc1: Pointwise::load(ck, &format!("{name}.fc1"), c, hidden)?,
            fc2: Pointwise::load(ck, &format!("{name}.fc2"), hidden, c)?,
        })
    }

    /// `x += scale ⊙ ConvMlp(x)`.
    fn forward_residual(&self, x: &mut Nhwc, scale: &[f32], pool: &mut Pool) {
        let u = self.conv.forward(x, Act::None, pool);
        let hidden = self.fc1.c_out();
        if gemm::mlp_fusable(u.hw(), hidden) {
            // large maps: fc1 → GELU → fc2 in row blocks, the hidden activations kept in cache
            gemm::mlp_fused(
                &u.data,
                u.hw(),
                &self.fc1.packed,
                Epilogue::bias(self.fc1.bias.as_deref()).with_act(Act::Gelu),
                &self.fc2.packed,
                Epilogue::bias(self.fc2.bias.as_deref()).with_residual(Residual::Scaled(scale)),
                &mut x.data,
            );
            pool.put(u.data);
            return;
        }
        let hid = self.fc1.forward(&u, Act::Gelu, pool);
        pool.put(u.data);
        self.fc2.forward_residual(&hid, scale, x);
        pool.put(hid.data);
    }
}

/// timm `Attention`: multi-head self-attention over the pixels, `head_dim` wide heads, qkv without
/// bias, no mask, no position bias.
#[derive(Debug)]
struct Attention {
    qkv: Pointwise,
    proj: Pointwise,
    head_dim: usize,
}

/// Channel LayerNorm (timm `LayerNorm2d`): per pixel over C, biased variance.
#[derive(Debug)]
struct LayerNorm2d {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// A FastViT block.
#[derive(Debug)]
enum Block {
    /// timm `RepMixerBlock`: x = dwconv(x) (identity and layer scale folded in);
    /// x += γ · ConvMlp(x).
    RepMixer {
        token_mixer: Depthwise,
        mlp: ConvMlp,
        layer_scale: Vec<f32>,
    },
    /// timm `AttentionBlock`: x += γ1 · Attn(LN(x)); x += γ2 · ConvMlp(x).
    Attention {
        norm: LayerNorm2d,
        token_mixer: Attention,
        mlp: ConvMlp,
        layer_scale_1: Vec<f32>,
        layer_scale_2: Vec<f32>,
    },
}

impl Block {
    fn forward(&self, x: Nhwc, pool: &mut Pool) -> Nhwc {
        match self {
            Block::RepMixer {
                token_mixer,
                mlp,
                layer_scale,
            } => {
                let mut t = token_mixer.forward(&x, Act::None, pool);
                pool.put(x.data);
                mlp.forward_residual(&mut t, layer_scale, pool);
                t
            }
            Block::Attention {
                norm,
                token_mixer,
                mlp,
                layer_scale_1,
                layer_scale_2,
            } => {
                let mut x = x;
                let mut n = pool.take(x.data.len());
                conv::layer_norm_rows(&x.data, x.c, &norm.weight, &norm.bias, norm.eps, &mut n);
                let n = Nhwc {
                    h: x.h,
                    w: x.w,
                    c: x.c,
                    data: n,
                };
                let qkv = token_mixer.qkv.forward(&n, Act::None, pool);
                pool.put(n.data);
                let mut a = pool.take(x.hw() * x.c);
                attention::self_attention(&qkv.data, x.hw(), x.c, token_mixer.head_dim, &mut a);
                pool.put(qkv.data);
                let a = Nhwc {
                    h: x.h,
                    w: x.w,
                    c: x.c,
                    data: a,
                };
                token_mixer.proj.forward_residual(&a, layer_scale_1, &mut x);
                pool.put(a.data);
                mlp.forward_residual(&mut x, layer_scale_2, pool);
                x
            }
        }
    }
}

/// timm `FastVitStage`: [downsample: GELU(grouped k×k, stride 2) → GELU(1×1)] → [pos_emb: RepCPE,
/// one depthwise conv with the identity folded in] → blocks.
#[derive(Debug)]
struct FastVitStage {
    downsample: Option<(Depthwise, Pointwise)>,
    pos_emb: Option<Depthwise>,
    blocks: Vec<Block>,
}

/// timm `SqueezeExcite` of the final conv: mean → 1×1 reduce → ReLU → 1×1 expand → sigmoid → scale.
#[derive(Debug)]
struct SqueezeExcite {
    reduce: Pointwise,
    expand: Pointwise,
}

/// The whole encoder.
#[derive(Debug)]
pub struct FastViTHD {
    pub cfg: VisionConfig,
    stem: (DenseConv, Depthwise, Pointwise),
    stages: Vec<FastVitStage>,
    final_conv: (Depthwise, SqueezeExcite),
    pool: Mutex<Pool>,
}

impl FastViTHD {
    /// Loads every tower weight; Apple's unused MobileCLIP `head.proj` is marked as ignored.
    pub fn load(ck: &Checkpoint, layout: Layout, cfg: &VisionConfig) -> Result<Self, ModelError> {
        let names = VisionNames::new(layout, cfg);
        let d0 = cfg.embed_dims[0];
        let (w0, b0) = load_conv(ck, &names.stem(0), 3, d0, 3, 1, true)?;
        let stem = (
            DenseConv(conv::DenseWeights::from_torch(
                &w0,
                b0.as_deref(),
                3,
                d0,
                3,
                2,
            )),
            Depthwise::load(ck, &names.stem(1), d0, d0, 3, 2, true)?,
            Pointwise::load(ck, &names.stem(2), d0, d0)?,
        );
        let lk = cfg.large_kernel;
        let mut stages = vec![];
        for s in 0..cfg.layers.len() {
            let c = cfg.embed_dims[s];
            let downsample = if s > 0 {
                let cp = cfg.embed_dims[s - 1];
                Some((
                    Depthwise::load(ck, &names.downsample(s, 0), cp, c, lk, 2, true)?,
                    Pointwise::load(ck, &names.downsample(s, 1), c, c)?,
                ))
            } else {
                None
            };
            let pos_emb = if cfg.pos_embs[s] {
                Some(Depthwise::load(ck, &names.pos_emb(s), c, c, lk, 1, true)?)
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
                    Mixer::RepMixer => Block::RepMixer {
                        token_mixer: Depthwise::load(
                            ck,
                            &format!("{bn}.token_mixer.reparam_conv"),
                            c,
                            c,
                            cfg.repmixer_kernel,
                            1,
                            true,
                        )?,
                        mlp,
                        layer_scale: ls("layer_scale")?,
                    },
                    Mixer::Attention => {
                        let tm = format!("{bn}.token_mixer");
                        let qkv = ck.get_f32(&format!("{tm}.qkv.weight"), &[3 * c, c])?;
                        let proj = ck.get_f32(&format!("{tm}.proj.weight"), &[c, c])?;
                        let proj_b = ck.get_f32(&format!("{tm}.proj.bias"), &[c])?;
                        Block::Attention {
                            norm: LayerNorm2d {
                                weight: ck.get_f32(&format!("{bn}.norm.weight"), &[c])?,
                                bias: ck.get_f32(&format!("{bn}.norm.bias"), &[c])?,
                                eps: cfg.norm_eps as f32,
                            },
                            token_mixer: Attention {
                                qkv: Pointwise::new(&qkv, None, c, 3 * c),
                                proj: Pointwise::new(&proj, Some(proj_b), c, c),
                                head_dim: cfg.head_dim,
                            },
                            mlp,
                            layer_scale_1: ls("layer_scale_1")?,
                            layer_scale_2: ls("layer_scale_2")?,
                        }
                    }
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
        let final_conv = (
            Depthwise::load(ck, &format!("{fc}.reparam_conv"), last, oc, 3, 1, true)?,
            SqueezeExcite {
                reduce: Pointwise::load(ck, &names.se("reduce"), oc, r)?,
                expand: Pointwise::load(ck, &names.se("expand"), r, oc)?,
            },
        );
        if let Some(h) = names.clip_head() {
            ck.ignore(&h);
        }
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            stages,
            final_conv,
            pool: Mutex::new(Pool::default()),
        })
    }

    /// How many entries the activation-buffer pool holds between passes (for tests: it must not
    /// grow from pass to pass).
    pub fn pool_buffers(&self) -> usize {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .len()
    }

    /// Runs the encoder on `pixels` (`[3, R, R]` in [0, 1]); returns `[out_channels, R/64, R/64]`.
    pub fn forward(&self, pixels: &FeatureMap) -> Result<FeatureMap, ModelError> {
        Ok(self.forward_nhwc(pixels, &mut |_, _| {})?.to_feature_map())
    }

    /// Like [`Self::forward`], handing every intermediate activation to `tap` under its timm module
    /// name (`stem.0`, `stages.1.downsample`, `stages.3.pos_emb`, `stages.2.blocks.0`, `stages.4`,
    /// `final_conv`, …) so tests can compare each one with the reference.
    pub fn forward_with(
        &self,
        pixels: &FeatureMap,
        mut tap: impl FnMut(&str, &FeatureMap),
    ) -> Result<FeatureMap, ModelError> {
        Ok(self
            .forward_nhwc(pixels, &mut |name, x| tap(name, &x.to_feature_map()))?
            .to_feature_map())
    }

    /// The encoder with its output in NHWC (`[R/64, R/64, out_channels]`: the image tokens,
    /// row-major), `tap` seeing every intermediate activation.
    pub fn forward_nhwc(
        &self,
        pixels: &FeatureMap,
        tap: &mut dyn FnMut(&str, &Nhwc),
    ) -> Result<Nhwc, ModelError> {
        Ok(self
            .forward_nhwc_until(pixels, tap, &|| false)?
            .expect("an encoder pass that is never stopped runs to the end"))
    }

    /// Like [`Self::forward_nhwc`], polling `stop` before the stem and after every block; `None`
    /// when it returned true (the pass was abandoned and its buffers recycled).
    pub fn forward_nhwc_until(
        &self,
        pixels: &FeatureMap,
        tap: &mut dyn FnMut(&str, &Nhwc),
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Nhwc>, ModelError> {
        let stride = self.cfg.stride();
        if pixels.c != 3
            || !pixels.h.is_multiple_of(stride)
            || !pixels.w.is_multiple_of(stride)
            || pixels.h == 0
            || pixels.w == 0
        {
            return Err(ModelError::Other(format!(
                "the vision encoder takes [3, H, W] with H and W positive multiples of {stride}; got [{}, {}, {}]",
                pixels.c, pixels.h, pixels.w
            )));
        }
        let mut pool = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()));
        let out = self.run(pixels, tap, stop, &mut pool);
        *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = pool;
        Ok(out)
    }

    /// Runs the encoder, stopping early (`None`) when `stop` returns true: it is polled before the
    /// stem and after every block, so a request to cancel waits for one block at most.
    fn run(
        &self,
        pixels: &FeatureMap,
        tap: &mut dyn FnMut(&str, &Nhwc),
        stop: &dyn Fn() -> bool,
        pool: &mut Pool,
    ) -> Option<Nhwc> {
        if stop() {
            return None;
        }
        let mut x = self.stem.0.forward(pixels, pool);
        tap("stem.0", &x);
        let y = self.stem.1.forward(&x, Act::Gelu, pool);
        pool.put(std::mem::replace(&mut x, y).data);
        tap("stem.1", &x);
        let y = self.stem.2.forward(&x, Act::Gelu, pool);
        pool.put(std::mem::replace(&mut x, y).data);
        tap("stem.2", &x);
        for (s, st) in self.stages.iter().enumerate() {
            if let Some((lk, pw)) = &st.downsample {
                let y = lk.forward(&x, Act::Gelu, pool);
                pool.put(std::mem::replace(&mut x, y).data);
                let y = pw.forward(&x, Act::Gelu, pool);
                pool.put(std::mem::replace(&mut x, y).data);
                tap(&format!("stages.{s}.downsample"), &x);
            }
            if let Some(p) = &st.pos_emb {
                let y = p.forward(&x, Act::None, pool);
                pool.put(std::mem::replace(&mut x, y).data);
                tap(&format!("stages.{s}.pos_emb"), &x);
            }
            for (b, blk) in st.blocks.iter().enumerate() {
                x = blk.forward(x, pool);
                tap(&format!("stages.{s}.blocks.{b}"), &x);
                if stop() {
                    pool.put(x.data);
                    return None;
                }
            }
            tap(&format!("stages.{s}"), &x);
        }
        let (conv_exp, se) = &self.final_conv;
        let mut y = conv_exp.forward(&x, Act::None, pool);
        pool.put(x.data);
        // squeeze-excite, then GELU
        let mean = conv::column_means(&y.data, y.c);
        let mean = Nhwc {
            h: 1,
            w: 1,
            c: y.c,
            data: mean,
        };
        let mid = se.reduce.forward(&mean, Act::Relu, pool);
        let gate = se.expand.forward(&mid, Act::None, pool);
        conv::scale_columns_gelu(&mut y.data, &gate.data, true);
        pool.put(mid.data);
        pool.put(gate.data);
        tap("final_conv", &y);
        Some(y)
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
    let (mut ph, mut pw) = (conv_out(h, 3, 2), conv_out(w, 3, 2));
    // stem: dense 3×3 s2 (3 → d0), depthwise 3×3 s2, 1×1
    let mut macs = (ph * pw) as f64 * d0 * 27.0;
    ph = conv_out(ph, 3, 2);
    pw = conv_out(pw, 3, 2);
    let mut px = (ph * pw) as f64;
    macs += px * d0 * 9.0 + px * d0 * d0;
    for s in 0..cfg.layers.len() {
        let c = cfg.embed_dims[s] as f64;
        if s > 0 {
            ph = conv_out(ph, cfg.large_kernel, 2);
            pw = conv_out(pw, cfg.large_kernel, 2);
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
