//! FastVLM configuration, read from a checkpoint's `config.json` in either layout:
//! Apple's `llava_qwen2` (flat Qwen2 keys + `mm_*` keys) or the transformers `fast_vlm` conversion
//! (nested `vision_config` / `text_config`). Every size comes from the file; the only numbers that
//! live here are the ones an architecture *name* fixes (FastViTHD = timm `fastvit_mci3`).

use std::path::Path;

use serde_json::Value;

use super::quantize::{QUANTIZED_KEY, QUANTIZED_MODEL_TYPE};
use super::ModelError;

/// Which checkpoint layout a directory uses (decides every weight name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `apple/FastVLM-*` (`model_type: llava_qwen2`).
    Apple,
    /// transformers `fast_vlm` conversion (`model_type: fast_vlm`).
    Hf,
}

/// Token mixer of a FastViT stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixer {
    RepMixer,
    Attention,
}

/// FastViTHD encoder configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Blocks per stage.
    pub layers: Vec<usize>,
    /// Channels per stage.
    pub embed_dims: Vec<usize>,
    /// ConvMlp expansion per stage.
    pub mlp_ratios: Vec<f64>,
    pub mixers: Vec<Mixer>,
    /// Whether a stage starts with a RepCPE conditional positional encoding.
    pub pos_embs: Vec<bool>,
    /// Attention head width (timm `Attention(head_dim=32)`).
    pub head_dim: usize,
    /// Kernel of the RepMixer depthwise conv.
    pub repmixer_kernel: usize,
    /// Kernel of the ConvMlp depthwise conv, the downsample conv and the RepCPE conv.
    pub large_kernel: usize,
    /// Channels of the final conv (and of every image token): `2 × embed_dims.last()`.
    pub out_channels: usize,
    /// Squeeze-excite reduction width of the final conv (timm: `out_channels / 16`).
    pub se_channels: usize,
    /// Epsilon of the attention blocks' channel LayerNorm and of the ConvMlp BatchNorm.
    pub norm_eps: f64,
}

impl VisionConfig {
    /// timm `fastvit_mci3` (FastViTHD, the MobileCLIP-L image tower used by every FastVLM): stages
    /// 0–2 RepMixer, 3–4 attention with a 7×7 RepCPE (timm `fastvit.py`, `fastvit_mci3`).
    pub fn fastvit_mci3(layers: Vec<usize>, embed_dims: Vec<usize>, mlp_ratios: Vec<f64>) -> Self {
        let n = layers.len();
        let last = *embed_dims.last().unwrap_or(&0);
        Self {
            mixers: (0..n)
                .map(|i| {
                    if i + 2 >= n {
                        Mixer::Attention
                    } else {
                        Mixer::RepMixer
                    }
                })
                .collect(),
            pos_embs: (0..n).map(|i| i + 2 >= n).collect(),
            layers,
            embed_dims,
            mlp_ratios,
            head_dim: 32,
            repmixer_kernel: 3,
            large_kernel: 7,
            out_channels: 2 * last,
            se_channels: 2 * last / 16,
            norm_eps: 1e-5,
        }
    }

    /// The released FastViTHD: widths 96…1536, depths 2-12-24-4-2, MLP ratio 4.
    pub fn fastvithd() -> Self {
        Self::fastvit_mci3(
            vec![2, 12, 24, 4, 2],
            vec![96, 192, 384, 768, 1536],
            vec![4.0; 5],
        )
    }

    /// Total stride: the stem (4) times one ×2 downsample per stage after the first.
    pub fn stride(&self) -> usize {
        4 << (self.layers.len().saturating_sub(1))
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.layers.len();
        if n == 0 || self.embed_dims.len() != n || self.mlp_ratios.len() != n {
            return Err(format!(
                "layers ({}), embed_dims ({}) and mlp_ratios ({}) must be non-empty and of equal length",
                n,
                self.embed_dims.len(),
                self.mlp_ratios.len()
            ));
        }
        for w in self.embed_dims.windows(2) {
            if w[1] != 2 * w[0] {
                return Err(format!(
                    "embed_dims must double from stage to stage, got {:?}",
                    self.embed_dims
                ));
            }
        }
        for (i, &d) in self.embed_dims.iter().enumerate() {
            if self.mixers[i] == Mixer::Attention && d % self.head_dim != 0 {
                return Err(format!(
                    "stage {i} width {d} is not a multiple of head_dim {}",
                    self.head_dim
                ));
            }
        }
        Ok(())
    }
}

/// Qwen2 decoder configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Token ids the checkpoint names as ending generation: `eos_token_id` of config.json (text
    /// config and top level) and, when read with [`FastVlmConfig::from_dir`], of
    /// generation_config.json. The model also stops at its tokenizer's end-of-turn tokens.
    pub eos_token_ids: Vec<u32>,
}

/// The whole model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FastVlmConfig {
    pub layout: Layout,
    pub vision: VisionConfig,
    pub text: TextConfig,
    /// Input width of the projector (= vision `out_channels`).
    pub mm_hidden_size: usize,
    /// The image side the checkpoint was trained at (1024 for the released models).
    pub native_resolution: u32,
    /// The id that marks image positions in `input_ids` (HF layout); Apple checkpoints have none and
    /// splice at the text `<image>`.
    pub image_token_id: Option<u32>,
    /// Written by `scenesay quantize`: the LLM matrices are in `model.gguf` (see
    /// [`super::quantize::QUANTIZED_MODEL_TYPE`]).
    pub quantized: bool,
}

fn bad(path: &Path, msg: impl Into<String>) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn get<'a>(v: &'a Value, key: &str, path: &Path, section: &str) -> Result<&'a Value, ModelError> {
    v.get(key)
        .ok_or_else(|| bad(path, format!("missing key `{section}{key}`")))
}

fn get_usize(v: &Value, key: &str, path: &Path, section: &str) -> Result<usize, ModelError> {
    get(v, key, path, section)?
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| {
            bad(
                path,
                format!("`{section}{key}` must be a non-negative integer"),
            )
        })
}

fn usize_list(v: &Value, key: &str, path: &Path, section: &str) -> Result<Vec<usize>, ModelError> {
    let arr = get(v, key, path, section)?
        .as_array()
        .ok_or_else(|| bad(path, format!("`{section}{key}` must be a list of integers")))?;
    arr.iter()
        .map(|x| x.as_u64().map(|x| x as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad(path, format!("`{section}{key}` must be a list of integers")))
}

fn f64_list(v: &Value, key: &str, path: &Path, section: &str) -> Result<Vec<f64>, ModelError> {
    let arr = get(v, key, path, section)?
        .as_array()
        .ok_or_else(|| bad(path, format!("`{section}{key}` must be a list of numbers")))?;
    arr.iter()
        .map(|x| x.as_f64())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad(path, format!("`{section}{key}` must be a list of numbers")))
}

/// `eos_token_id` of a config object: absent / null, one id, or a list of ids.
fn eos_ids(v: &Value, path: &Path, section: &str) -> Result<Vec<u32>, ModelError> {
    let bad_eos = || {
        bad(
            path,
            format!(
                "`{section}eos_token_id` is `{}`; it must be a token id or a list of token ids",
                v["eos_token_id"]
            ),
        )
    };
    let id = |x: &Value| {
        x.as_u64()
            .filter(|&i| i <= u32::MAX as u64)
            .map(|i| i as u32)
            .ok_or_else(bad_eos)
    };
    match v.get("eos_token_id") {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a.iter().map(id).collect(),
        Some(x) => Ok(vec![id(x)?]),
    }
}

/// Adds the ids of `more` not yet in `ids`, keeping the order.
fn add_ids(ids: &mut Vec<u32>, more: impl IntoIterator<Item = u32>) {
    for i in more {
        if !ids.contains(&i) {
            ids.push(i);
        }
    }
}

/// Refuses Qwen2 sliding-window attention, which FastVLM's checkpoints do not use and this
/// decoder does not implement (every layer attends to the whole sequence).
fn no_sliding_window(t: &Value, path: &Path, section: &str) -> Result<(), ModelError> {
    match t.get("use_sliding_window") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(v) => {
            return Err(bad(
                path,
                format!(
                    "`{section}use_sliding_window` is `{v}`; sliding-window attention is not supported \
                     (FastVLM's checkpoints set it to false)"
                ),
            ))
        }
    }
    if let Some(types) = t.get("layer_types").filter(|x| !x.is_null()) {
        let all_full = types
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str() == Some("full_attention")));
        if !all_full {
            return Err(bad(
                path,
                format!(
                    "`{section}layer_types` is `{types}`; only `full_attention` layers are supported \
                     (sliding-window attention is not)"
                ),
            ));
        }
    }
    Ok(())
}

/// Apple-layout keys that change the prompt or the preprocessing from what scenesay implements
/// (LLaVA's `llava_arch.py` / `mm_utils.py` as FastVLM uses them). The LLaVA selection keys
/// `mm_vision_select_layer` / `mm_vision_select_feature` are not checked: Apple's MobileCLIP tower
/// ignores them and always returns its final feature map.
fn apple_prompt_and_preprocessing(v: &Value, path: &Path) -> Result<(), ModelError> {
    match v.get("mm_use_im_start_end") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(x) => {
            return Err(bad(
                path,
                format!(
                "`mm_use_im_start_end` is `{x}`; wrapping the image in <im_start>/<im_end> tokens \
                     is not supported (FastVLM's checkpoints set it to false)"
            ),
            ))
        }
    }
    // Apple pads to a square only for `pad`; anything else (missing included) crops or tiles
    match v.get("image_aspect_ratio") {
        Some(Value::String(x)) if x == "pad" => {}
        other => {
            return Err(bad(
                path,
                format!(
                    "`image_aspect_ratio` is `{}`; only `pad` (FastVLM's setting: the picture is \
                     padded to a square) is supported",
                    other.unwrap_or(&Value::Null)
                ),
            ))
        }
    }
    match v.get("mm_patch_merge_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(x)) if x == "flat" => {}
        Some(x) => {
            return Err(bad(
                path,
                format!("`mm_patch_merge_type` is `{x}`; only `flat` is supported"),
            ))
        }
    }
    Ok(())
}

/// The timm `fastvit_mci3` arguments of the HF layout: the sizes read here, `inference_mode`
/// (which must be true: the weights are the reparameterised ones) and regularisation rates that
/// do nothing at inference. Any other argument would build another network.
fn known_model_args(ma: &Value, path: &Path) -> Result<(), ModelError> {
    let Some(map) = ma.as_object() else {
        return if ma.is_null() {
            Ok(())
        } else {
            Err(bad(
                path,
                format!("`vision_config.model_args` is `{ma}`; it must be an object"),
            ))
        };
    };
    for (k, x) in map {
        match k.as_str() {
            "layers" | "embed_dims" | "mlp_ratios" => {}
            "drop_rate" | "proj_drop_rate" | "drop_path_rate" => {}
            "inference_mode" if x.as_bool() == Some(true) => {}
            "inference_mode" => {
                return Err(bad(
                    path,
                    format!(
                        "`vision_config.model_args.inference_mode` is `{x}`; only reparameterised \
                         (inference_mode true) FastViTHD weights are supported"
                    ),
                ))
            }
            _ => {
                return Err(bad(
                    path,
                    format!(
                        "`vision_config.model_args.{k}` is `{x}`; this FastViTHD argument is not \
                         supported (known: layers, embed_dims, mlp_ratios, inference_mode)"
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn text_config(t: &Value, path: &Path, section: &str) -> Result<TextConfig, ModelError> {
    if let Some(act) = t.get("hidden_act").and_then(|a| a.as_str()) {
        if act != "silu" {
            return Err(bad(
                path,
                format!("`{section}hidden_act` is `{act}`; Qwen2 in FastVLM uses `silu`"),
            ));
        }
    }
    no_sliding_window(t, path, section)?;
    let hidden_size = get_usize(t, "hidden_size", path, section)?;
    let num_attention_heads = get_usize(t, "num_attention_heads", path, section)?;
    let num_key_value_heads = match t.get("num_key_value_heads") {
        Some(Value::Null) | None => num_attention_heads,
        Some(_) => get_usize(t, "num_key_value_heads", path, section)?,
    };
    if num_attention_heads == 0
        || num_key_value_heads == 0
        || num_attention_heads % num_key_value_heads != 0
    {
        return Err(bad(
            path,
            format!(
                "`{section}num_attention_heads` ({num_attention_heads}) must be a positive multiple of \
                 `num_key_value_heads` ({num_key_value_heads})"
            ),
        ));
    }
    let head_dim = match t.get("head_dim") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as usize,
        _ => hidden_size / num_attention_heads,
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(bad(
            path,
            format!("attention head_dim {head_dim} must be a positive even number"),
        ));
    }
    // transformers ≥ 5 nests RoPE parameters; older files keep `rope_theta` flat.
    let rope_theta = match t.get("rope_parameters").and_then(|r| r.get("rope_theta")) {
        Some(x) => x.as_f64().ok_or_else(|| {
            bad(
                path,
                format!("`{section}rope_parameters.rope_theta` must be a number"),
            )
        })?,
        None => t
            .get("rope_theta")
            .and_then(|x| x.as_f64())
            .unwrap_or(10_000.0),
    };
    for key in ["rope_scaling"] {
        if let Some(v) = t.get(key) {
            if !v.is_null() {
                return Err(bad(
                    path,
                    format!("`{section}{key}` is set; scaled RoPE is not supported"),
                ));
            }
        }
    }
    if let Some(rp) = t
        .get("rope_parameters")
        .and_then(|r| r.get("rope_type"))
        .and_then(|x| x.as_str())
    {
        if rp != "default" {
            return Err(bad(
                path,
                format!(
                    "`{section}rope_parameters.rope_type` is `{rp}`; only `default` is supported"
                ),
            ));
        }
    }
    Ok(TextConfig {
        hidden_size,
        intermediate_size: get_usize(t, "intermediate_size", path, section)?,
        num_hidden_layers: get_usize(t, "num_hidden_layers", path, section)?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size: get_usize(t, "vocab_size", path, section)?,
        rms_norm_eps: t
            .get("rms_norm_eps")
            .and_then(|x| x.as_f64())
            .unwrap_or(1e-6),
        rope_theta,
        max_position_embeddings: t
            .get("max_position_embeddings")
            .and_then(|x| x.as_u64())
            .unwrap_or(32_768) as usize,
        tie_word_embeddings: t
            .get("tie_word_embeddings")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        eos_token_ids: eos_ids(t, path, section)?,
    })
}

impl FastVlmConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::MissingFile {
            path: path.clone(),
            what: "the model configuration".into(),
            cause: Some(e),
        })?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| bad(&path, format!("not valid JSON: {e}")))?;
        let mut config = Self::from_json(&v, &path)?;
        // transformers' `generate` reads its stop ids from here when the file exists
        let gen = dir.join("generation_config.json");
        if gen.exists() {
            let text = std::fs::read_to_string(&gen).map_err(|e| ModelError::MissingFile {
                path: gen.clone(),
                what: "the generation settings (unreadable)".into(),
                cause: Some(e),
            })?;
            let g: Value = serde_json::from_str(&text)
                .map_err(|e| bad(&gen, format!("not valid JSON: {e}")))?;
            add_ids(&mut config.text.eos_token_ids, eos_ids(&g, &gen, "")?);
        }
        Ok(config)
    }

    /// Parses a `config.json` value; `path` is only used in error messages.
    pub fn from_json(v: &Value, path: &Path) -> Result<Self, ModelError> {
        match v.get("model_type").and_then(|m| m.as_str()) {
            Some("llava_qwen2") => Self::apple(v, path),
            Some("fast_vlm") => Self::hf(v, path),
            Some(QUANTIZED_MODEL_TYPE) => {
                let base = v
                    .get(QUANTIZED_KEY)
                    .and_then(|q| q.get("base_model_type"))
                    .and_then(|m| m.as_str());
                let mut c = match base {
                    Some("llava_qwen2") => Self::apple(v, path)?,
                    Some("fast_vlm") => Self::hf(v, path)?,
                    other => {
                        return Err(bad(
                            path,
                            format!(
                                "`{QUANTIZED_KEY}.base_model_type` is `{}`; a checkpoint written by \
                                 `scenesay quantize` names `llava_qwen2` or `fast_vlm` there",
                                other.unwrap_or("missing")
                            ),
                        ))
                    }
                };
                c.quantized = true;
                Ok(c)
            }
            Some(other) => Err(bad(
                path,
                format!("`model_type` is `{other}`; expected `llava_qwen2` (Apple FastVLM) or `fast_vlm` (transformers)"),
            )),
            None => Err(bad(path, "missing key `model_type`; is this a FastVLM checkpoint?")),
        }
    }

    fn apple(v: &Value, path: &Path) -> Result<Self, ModelError> {
        let tower = get(v, "mm_vision_tower", path, "")?
            .as_str()
            .ok_or_else(|| bad(path, "`mm_vision_tower` must be a string"))?;
        let proj = v
            .get("mm_projector_type")
            .and_then(|p| p.as_str())
            .unwrap_or("linear");
        if proj != "mlp2x_gelu" {
            return Err(bad(path, format!("`mm_projector_type` is `{proj}`; only `mlp2x_gelu` (FastVLM's projector) is supported")));
        }
        if !tower.starts_with("mobileclip_l") {
            return Err(bad(
                path,
                format!("`mm_vision_tower` is `{tower}`; only the FastViTHD tower `mobileclip_l_*` is supported"),
            ));
        }
        apple_prompt_and_preprocessing(v, path)?;
        // `mobileclip_l_1024` → trained at 1024 px.
        let native_resolution = tower
            .rsplit('_')
            .next()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(1024);
        let vision = match v.get("x_harness_vision_tower") {
            // Test checkpoints with non-FastViTHD widths describe their tower explicitly.
            Some(x) => {
                let s = "x_harness_vision_tower.";
                let mut vc = VisionConfig::fastvit_mci3(
                    usize_list(x, "layers", path, s)?,
                    usize_list(x, "embed_dims", path, s)?,
                    f64_list(x, "mlp_ratios", path, s)?,
                );
                if let Some(hd) = x.get("attention_head_dim") {
                    vc.head_dim = hd.as_u64().ok_or_else(|| {
                        bad(
                            path,
                            "`x_harness_vision_tower.attention_head_dim` must be an integer",
                        )
                    })? as usize;
                }
                vc
            }
            None => VisionConfig::fastvithd(),
        };
        vision.validate().map_err(|m| bad(path, m))?;
        let mm_hidden_size = get_usize(v, "mm_hidden_size", path, "")?;
        let text = text_config(v, path, "")?;
        let image_token_id = v
            .get("image_token_index")
            .and_then(|x| x.as_u64())
            .map(|x| x as u32);
        Self::finish(
            Layout::Apple,
            vision,
            text,
            mm_hidden_size,
            native_resolution,
            image_token_id,
            path,
        )
    }

    fn hf(v: &Value, path: &Path) -> Result<Self, ModelError> {
        let vc = get(v, "vision_config", path, "")?;
        let arch = vc
            .get("architecture")
            .and_then(|a| a.as_str())
            .unwrap_or("");
        if arch != "fastvit_mci3" {
            return Err(bad(
                path,
                format!("`vision_config.architecture` is `{arch}`; only `fastvit_mci3` (FastViTHD) is supported"),
            ));
        }
        let d = VisionConfig::fastvithd();
        let empty = Value::Null;
        let ma = vc.get("model_args").unwrap_or(&empty);
        let s = "vision_config.model_args.";
        known_model_args(ma, path)?;
        let layers = if ma.get("layers").is_some() {
            usize_list(ma, "layers", path, s)?
        } else {
            d.layers
        };
        let dims = if ma.get("embed_dims").is_some() {
            usize_list(ma, "embed_dims", path, s)?
        } else {
            d.embed_dims
        };
        let ratios = if ma.get("mlp_ratios").is_some() {
            f64_list(ma, "mlp_ratios", path, s)?
        } else {
            d.mlp_ratios
        };
        let vision = VisionConfig::fastvit_mci3(layers, dims, ratios);
        vision.validate().map_err(|m| bad(path, m))?;
        match v.get("projector_hidden_act").and_then(|a| a.as_str()) {
            None | Some("gelu") => {}
            Some(a) => {
                return Err(bad(
                    path,
                    format!("`projector_hidden_act` is `{a}`; only `gelu` is supported"),
                ))
            }
        }
        if v.get("multimodal_projector_bias").and_then(|b| b.as_bool()) == Some(false) {
            return Err(bad(
                path,
                "`multimodal_projector_bias` is false; FastVLM's projector has biases",
            ));
        }
        if let Some(s) = v
            .get("vision_feature_select_strategy")
            .and_then(|s| s.as_str())
        {
            if s != "full" {
                return Err(bad(
                    path,
                    format!("`vision_feature_select_strategy` is `{s}`; FastVLM uses `full`"),
                ));
            }
        }
        match v.get("vision_feature_layer") {
            None | Some(Value::Null) => {}
            Some(l) if l.as_i64() == Some(-1) => {}
            Some(Value::Array(a)) if a.len() == 1 && a[0].as_i64() == Some(-1) => {}
            Some(l) => {
                return Err(bad(
                    path,
                    format!(
                        "`vision_feature_layer` is `{l}`; FastVLM uses the encoder's last output (-1), \
                         the only value supported"
                    ),
                ))
            }
        }
        let mm_hidden_size = vc
            .get("hidden_size")
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .unwrap_or(vision.out_channels);
        let t = get(v, "text_config", path, "")?;
        let mut text = text_config(t, path, "text_config.")?;
        if let Some(tie) = v.get("tie_word_embeddings").and_then(|x| x.as_bool()) {
            text.tie_word_embeddings = tie;
        }
        add_ids(&mut text.eos_token_ids, eos_ids(v, path, "")?);
        let image_token_id = v
            .get("image_token_index")
            .or_else(|| v.get("image_token_id"))
            .and_then(|x| x.as_u64())
            .map(|x| x as u32)
            .ok_or_else(|| bad(path, "missing key `image_token_index`"))?;
        let seq = v
            .get("image_seq_length")
            .and_then(|x| x.as_u64())
            .unwrap_or(256);
        let side = (seq as f64).sqrt().round() as u32;
        let native_resolution = side * vision.stride() as u32;
        Self::finish(
            Layout::Hf,
            vision,
            text,
            mm_hidden_size,
            native_resolution,
            Some(image_token_id),
            path,
        )
    }

    fn finish(
        layout: Layout,
        vision: VisionConfig,
        text: TextConfig,
        mm_hidden_size: usize,
        native_resolution: u32,
        image_token_id: Option<u32>,
        path: &Path,
    ) -> Result<Self, ModelError> {
        if mm_hidden_size != vision.out_channels {
            return Err(bad(
                path,
                format!(
                    "mm_hidden_size is {mm_hidden_size} but the vision tower produces {} channels (2 × {})",
                    vision.out_channels,
                    vision.embed_dims.last().unwrap_or(&0)
                ),
            ));
        }
        Ok(Self {
            layout,
            vision,
            text,
            mm_hidden_size,
            native_resolution,
            image_token_id,
            quantized: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p() -> &'static Path {
        Path::new("config.json")
    }

    fn apple_real() -> Value {
        json!({
            "model_type": "llava_qwen2", "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "max_position_embeddings": 32768, "tie_word_embeddings": true, "eos_token_id": 151645,
            "mm_hidden_size": 3072, "mm_projector_type": "mlp2x_gelu",
            "mm_vision_tower": "mobileclip_l_1024", "hidden_act": "silu",
            "image_aspect_ratio": "pad", "mm_patch_merge_type": "flat",
            "mm_use_im_start_end": false, "mm_vision_select_layer": -2,
            "use_sliding_window": false
        })
    }

    #[test]
    fn real_apple_config_means_full_fastvithd() {
        let c = FastVlmConfig::from_json(&apple_real(), p()).unwrap();
        assert_eq!(c.layout, Layout::Apple);
        assert_eq!(c.vision.embed_dims, vec![96, 192, 384, 768, 1536]);
        assert_eq!(c.vision.layers, vec![2, 12, 24, 4, 2]);
        assert_eq!(c.vision.out_channels, 3072);
        assert_eq!(c.vision.se_channels, 192);
        assert_eq!(c.vision.stride(), 64);
        assert_eq!(c.native_resolution, 1024);
        assert_eq!(c.text.head_dim, 64);
        assert_eq!(c.text.rope_theta, 1e6);
        assert_eq!(c.text.eos_token_ids, vec![151645]);
        assert_eq!(c.image_token_id, None);
    }

    #[test]
    fn unknown_tower_and_projector_are_errors() {
        let mut v = apple_real();
        v["mm_vision_tower"] = json!("clip_vit_large");
        let e = FastVlmConfig::from_json(&v, p()).unwrap_err().to_string();
        assert!(
            e.contains("mm_vision_tower") && e.contains("clip_vit_large"),
            "{e}"
        );
        let mut v = apple_real();
        v["mm_projector_type"] = json!("linear");
        let e = FastVlmConfig::from_json(&v, p()).unwrap_err().to_string();
        assert!(
            e.contains("mm_projector_type") && e.contains("linear"),
            "{e}"
        );
        let mut v = apple_real();
        v["model_type"] = json!("llama");
        let e = FastVlmConfig::from_json(&v, p()).unwrap_err().to_string();
        assert!(e.contains("llama"), "{e}");
    }

    #[test]
    fn mismatched_mm_hidden_size_is_an_error() {
        let mut v = apple_real();
        v["mm_hidden_size"] = json!(1024);
        let e = FastVlmConfig::from_json(&v, p()).unwrap_err().to_string();
        assert!(e.contains("mm_hidden_size") && e.contains("3072"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let mut v = apple_real();
        v.as_object_mut().unwrap().remove("num_hidden_layers");
        let e = FastVlmConfig::from_json(&v, p()).unwrap_err().to_string();
        assert!(e.contains("num_hidden_layers"), "{e}");
    }
}
