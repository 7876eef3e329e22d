//! Quantized checkpoints (`scenesay quantize`): the language model's linear matrices (q/k/v/o,
//! gate/up/down, lm_head) go to `model.gguf` as GGUF Q8_0 (8-bit) or Q4_1 (4-bit), quantized with
//! candle; everything else (the vision encoder, projector, norms, biases, token embeddings)
//! stays in `model.safetensors` in its original dtype. The engine loads such a directory directly.
//!
//! Other loaders must not: transformers or Apple's code would read `model.safetensors`, find no
//! LLM matrices and fill them with random numbers, warning only. So the directory is marked: its
//! config.json names the architecture [`QUANTIZED_ARCHITECTURE`] and model type
//! [`QUANTIZED_MODEL_TYPE`], which no other library knows (the original ones are kept under
//! [`QUANTIZED_KEY`]), and `model.safetensors` declares the format [`QUANTIZED_FORMAT`] in its
//! metadata, which transformers refuses to load (it reads only `pt`, `tf`, `flax` and `mlx` files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Tensor;

use super::config::{FastVlmConfig, Layout};
use super::weights::{Checkpoint, GGUF_FILE};
use super::ModelError;

/// `model_type` of a quantized checkpoint's config.json.
pub const QUANTIZED_MODEL_TYPE: &str = "scenesay_quantized_fastvlm";
/// `architectures` of a quantized checkpoint's config.json.
pub const QUANTIZED_ARCHITECTURE: &str = "ScenesayQuantizedFastVlm";
/// The config.json object describing the quantization and the original `model_type` and
/// `architectures`.
pub const QUANTIZED_KEY: &str = "scenesay_quantization";
/// The `format` metadata of a quantized checkpoint's `model.safetensors`.
pub const QUANTIZED_FORMAT: &str = "scenesay-quantized";

/// Bits per weight of a quantized checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    Eight,
    Four,
}

impl Bits {
    pub fn from_number(n: u32) -> Option<Bits> {
        match n {
            8 => Some(Bits::Eight),
            4 => Some(Bits::Four),
            _ => None,
        }
    }

    /// The GGUF block format of the matrix `name`: Q8_0 (8.5 bits per weight: an f16 scale per
    /// 32) everywhere for 8 bits. For 4 bits, Q4_1 (5 bits: an f16 scale and minimum per 32) for the
    /// MLP matrices — 88 % of the layers' weights — and Q8_0 for the attention projections and
    /// `lm_head`, whose errors the attention softmax and the logits amplify most (the same mix as
    /// llama.cpp's `_M` files). Blocks of 32 fit every Qwen2 width (Q4_K's super-blocks of 256
    /// do not fit Qwen2-0.5B's 896-wide rows).
    pub fn format_for(self, name: &str) -> GgmlDType {
        match self {
            Bits::Eight => GgmlDType::Q8_0,
            Bits::Four if name.contains(".mlp.") => GgmlDType::Q4_1,
            Bits::Four => GgmlDType::Q8_0,
        }
    }
}

/// What a quantization did.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeReport {
    pub quantized: usize,
    pub quantized_params: usize,
    pub formats: Vec<(String, usize)>,
    pub gguf_bytes: u64,
    pub safetensors_bytes: u64,
}

/// The LLM matrices that get quantized: `(name in the source checkpoint, name written, [rows, k])`.
/// With tied embeddings the embedding matrix is also written as `lm_head.weight` (the table stays
/// unquantized for lookups).
pub fn quantized_matrices(
    cfg: &FastVlmConfig,
    ck: &Checkpoint,
) -> Vec<(String, String, [usize; 2])> {
    let t = &cfg.text;
    let prefix = match cfg.layout {
        Layout::Apple => "model.",
        Layout::Hf => "model.language_model.",
    };
    let (h, hd, inter) = (t.hidden_size, t.head_dim, t.intermediate_size);
    let (q, kv) = (t.num_attention_heads * hd, t.num_key_value_heads * hd);
    let mut v = vec![];
    for l in 0..t.num_hidden_layers {
        let p = format!("{prefix}layers.{l}");
        for (name, shape) in [
            (format!("{p}.self_attn.q_proj.weight"), [q, h]),
            (format!("{p}.self_attn.k_proj.weight"), [kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), [kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), [h, q]),
            (format!("{p}.mlp.gate_proj.weight"), [inter, h]),
            (format!("{p}.mlp.up_proj.weight"), [inter, h]),
            (format!("{p}.mlp.down_proj.weight"), [h, inter]),
        ] {
            v.push((name.clone(), name, shape));
        }
    }
    let head_src = if ck.contains("lm_head.weight") {
        "lm_head.weight".to_string()
    } else {
        format!("{prefix}embed_tokens.weight")
    };
    v.push((head_src, "lm_head.weight".into(), [t.vocab_size, h]));
    v
}

fn is_weight_file(name: &str) -> bool {
    name == "model.safetensors.index.json"
        || name.ends_with(".safetensors")
        || name.ends_with(".gguf")
        || name.ends_with(".partial")
}

/// Writes a quantized copy of the checkpoint in `src` to `out` (which must not exist or be empty).
/// `progress(done, total)` is called after each matrix.
pub fn quantize_checkpoint(
    src: &Path,
    out: &Path,
    bits: Bits,
    mut progress: impl FnMut(usize, usize),
) -> Result<QuantizeReport, ModelError> {
    let cfg = FastVlmConfig::from_dir(src)?;
    let ck = Checkpoint::open(src)?;
    if ck.has_quantized() {
        return Err(ModelError::Other(format!(
            "{} is already quantized; quantize the original checkpoint",
            src.display()
        )));
    }
    if out.exists() && std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some()) {
        return Err(ModelError::Other(format!(
            "{} already exists and is not an empty directory; choose a new --out",
            out.display()
        )));
    }
    let io = |path: &Path, what: &str, e: std::io::Error| ModelError::Corrupt {
        path: path.to_path_buf(),
        msg: format!("cannot {what}: {e}"),
    };
    std::fs::create_dir_all(out).map_err(|e| io(out, "create the directory", e))?;

    let matrices = quantized_matrices(&cfg, &ck);
    let total = matrices.len();
    let mut quantized: Vec<(String, QTensor)> = Vec::with_capacity(total);
    let mut formats: HashMap<String, usize> = HashMap::new();
    let mut params = 0;
    let mut consumed: Vec<String> = vec![];
    for (i, (from, to, shape)) in matrices.iter().enumerate() {
        let t = ck.get(from, shape, candle_core::DType::F32)?;
        let fmt = bits.format_for(to);
        let q = QTensor::quantize(&t, fmt)?;
        *formats.entry(format!("{fmt:?}")).or_default() += 1;
        params += shape[0] * shape[1];
        quantized.push((to.clone(), q));
        if from == to {
            consumed.push(from.clone());
        }
        progress(i + 1, total);
    }
    // everything else, unchanged
    let mut plain: HashMap<String, Tensor> = HashMap::new();
    for (name, shape, dtype) in ck.plain_tensors() {
        if consumed.contains(&name) {
            continue;
        }
        plain.insert(name.clone(), ck.get(&name, &shape, dtype)?);
    }
    let st_path = out.join("model.safetensors");
    let st_tmp = out.join("model.safetensors.partial");
    let mut names: Vec<&String> = plain.keys().collect();
    names.sort();
    let meta = HashMap::from([("format".to_string(), QUANTIZED_FORMAT.to_string())]);
    safetensors::serialize_to_file(
        names.into_iter().map(|n| (n, &plain[n])),
        Some(meta),
        &st_tmp,
    )
    .map_err(|e| ModelError::Corrupt {
        path: st_tmp.clone(),
        msg: format!("cannot write: {e}"),
    })?;
    let gguf_path = out.join(GGUF_FILE);
    let gguf_tmp = out.join(format!("{GGUF_FILE}.partial"));
    {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&gguf_tmp).map_err(|e| io(&gguf_tmp, "create", e))?,
        );
        let bits_v = gguf_file::Value::U32(match bits {
            Bits::Eight => 8,
            Bits::Four => 4,
        });
        let what = gguf_file::Value::String(
            "FastVLM language-model linear layers, quantized by scenesay".into(),
        );
        let tensors: Vec<(&str, &QTensor)> =
            quantized.iter().map(|(n, q)| (n.as_str(), q)).collect();
        gguf_file::write(
            &mut f,
            &[("scenesay.bits", &bits_v), ("general.description", &what)],
            &tensors,
        )?;
        use std::io::Write;
        f.flush().map_err(|e| io(&gguf_tmp, "write", e))?;
    }
    // the other files (config, tokenizer, …) as they are
    let entries = std::fs::read_dir(src).map_err(|e| io(src, "list", e))?;
    for e in entries {
        let e = e.map_err(|e| io(src, "list", e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_file() || is_weight_file(&name) || name == "config.json" {
            continue;
        }
        let dst: PathBuf = out.join(&name);
        std::fs::copy(e.path(), &dst).map_err(|err| io(&dst, "copy into", err))?;
    }
    let config_path = out.join("config.json");
    let config = marked_config(&src.join("config.json"), bits)?;
    std::fs::write(&config_path, config).map_err(|e| io(&config_path, "write", e))?;
    std::fs::rename(&st_tmp, &st_path).map_err(|e| io(&st_path, "write", e))?;
    std::fs::rename(&gguf_tmp, &gguf_path).map_err(|e| io(&gguf_path, "write", e))?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut formats: Vec<(String, usize)> = formats.into_iter().collect();
    formats.sort();
    Ok(QuantizeReport {
        quantized: total,
        quantized_params: params,
        formats,
        gguf_bytes: size(&gguf_path),
        safetensors_bytes: size(&st_path),
    })
}

/// The source config.json with the quantized checkpoint's `model_type` and `architectures`; the
/// original ones are kept under [`QUANTIZED_KEY`].
fn marked_config(src: &Path, bits: Bits) -> Result<String, ModelError> {
    let bad = |msg: String| ModelError::Config {
        path: src.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(src).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let base_type = obj.get("model_type").cloned().unwrap_or_default();
    let base_arch = obj.get("architectures").cloned().unwrap_or_default();
    obj.insert("model_type".into(), QUANTIZED_MODEL_TYPE.into());
    obj.insert(
        "architectures".into(),
        serde_json::json!([QUANTIZED_ARCHITECTURE]),
    );
    obj.insert(
        QUANTIZED_KEY.into(),
        serde_json::json!({
            "note": "written by scenesay quantize: the language model's matrices are in model.gguf; \
                     only scenesay loads this directory",
            "bits": match bits { Bits::Eight => 8, Bits::Four => 4 },
            "matrices": GGUF_FILE,
            "base_model_type": base_type,
            "base_architectures": base_arch,
        }),
    );
    serde_json::to_string_pretty(&v).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_bits() {
        let mlp = "model.layers.3.mlp.down_proj.weight";
        let attn = "model.layers.3.self_attn.q_proj.weight";
        assert_eq!(Bits::Eight.format_for(mlp), GgmlDType::Q8_0);
        assert_eq!(Bits::Eight.format_for("lm_head.weight"), GgmlDType::Q8_0);
        assert_eq!(Bits::Four.format_for(mlp), GgmlDType::Q4_1);
        assert_eq!(Bits::Four.format_for(attn), GgmlDType::Q8_0);
        assert_eq!(Bits::Four.format_for("lm_head.weight"), GgmlDType::Q8_0);
        assert_eq!(Bits::from_number(8), Some(Bits::Eight));
        assert_eq!(Bits::from_number(4), Some(Bits::Four));
        assert_eq!(Bits::from_number(5), None);
    }

    #[test]
    fn weight_files_are_not_copied() {
        assert!(is_weight_file("model.safetensors"));
        assert!(is_weight_file("model-00001-of-00004.safetensors"));
        assert!(is_weight_file("model.safetensors.index.json"));
        assert!(is_weight_file("model.gguf"));
        assert!(!is_weight_file("config.json"));
        assert!(!is_weight_file("tokenizer.json"));
    }
}
