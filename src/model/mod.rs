//! FastVLM (Vasu et al., "FastVLM: Efficient Vision Encoding for Vision Language Models", CVPR 2025,
//! arXiv 2412.13303) in Rust: FastViTHD encoder → `mlp2x_gelu` projector → Qwen2 decoder, loaded
//! from Apple's (`llava_qwen2`) or transformers' (`fast_vlm`) checkpoint layout.
//!
//! [`FastVlm`] is the entry point: load a directory, then `describe` (streamed generation) or
//! `embed` (the pooled scene vector the daemon compares).

pub mod config;
pub mod generate;
// index loops over arrays of vector registers / the reference arithmetic read best as they are
#[allow(clippy::needless_range_loop)]
pub mod kernels;
pub mod linear;
pub mod preprocess;
pub mod prompt;
pub mod quantize;
pub mod qwen2;
pub mod tokenizer;
#[allow(clippy::needless_range_loop)]
pub mod vision;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use image::RgbImage;

pub use config::{FastVlmConfig, Layout};
pub use generate::{GenerationParams, Sampling};
pub use vision::{FastViTHD, FeatureMap, Nhwc};

use crate::describer::{DescribeRequest, Describer, Description, Timings};
use crate::jobs::yesno::{AnswerTokens, YesNo};
use generate::Sampler;
use prompt::PromptIds;
use qwen2::Qwen2;
use tokenizer::{TextTokenizer, TokenStream};
use weights::Checkpoint;

/// Everything that can go wrong loading or running the model. Messages name the file, the tensor
/// and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: missing {what}{}", path.display(), cause.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    MissingFile {
        path: PathBuf,
        what: String,
        cause: Option<std::io::Error>,
    },
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error("tensor `{name}` (expected shape {expected:?}) is missing from {files}; the checkpoint is incomplete or in another layout")]
    MissingTensor {
        name: String,
        files: String,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` in {} has shape {got:?}, expected {expected:?} from config.json", file.display())]
    ShapeMismatch {
        name: String,
        file: PathBuf,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{}: {count} tensor(s) are not used by FastVLM, e.g. {examples:?}; the checkpoint does not match its config.json", dir.display())]
    UnexpectedTensors {
        dir: PathBuf,
        count: usize,
        examples: Vec<String>,
    },
    #[error("tokenizer {}: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Weight precision of the language model (the vision encoder always computes in f32).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

/// The `mlp2x_gelu` projector: Linear → GELU (erf) → Linear, in f32.
#[derive(Debug, Clone)]
pub struct Projector {
    linear_1: Linear,
    linear_2: Linear,
}

impl Projector {
    fn load(
        ck: &Checkpoint,
        layout: Layout,
        mm_hidden: usize,
        hidden: usize,
    ) -> Result<Self, ModelError> {
        let (a, b) = match layout {
            Layout::Apple => ("model.mm_projector.0", "model.mm_projector.2"),
            Layout::Hf => (
                "model.multi_modal_projector.linear_1",
                "model.multi_modal_projector.linear_2",
            ),
        };
        let lin = |n: &str, i: usize, o: usize| -> Result<Linear, ModelError> {
            Ok(Linear::new(
                ck.get(&format!("{n}.weight"), &[o, i], DType::F32)?,
                Some(ck.get(&format!("{n}.bias"), &[o], DType::F32)?),
            ))
        };
        Ok(Self {
            linear_1: lin(a, mm_hidden, hidden)?,
            linear_2: lin(b, hidden, hidden)?,
        })
    }

    /// `[N, mm_hidden]` → `[N, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self
            .linear_2
            .forward(&self.linear_1.forward(x)?.gelu_erf()?)?)
    }
}

/// One image through the encoder and projector.
pub struct ImageEncoding {
    /// Encoder output `[C, h, w]`.
    pub features_nchw: FeatureMap,
    /// `[N, C]` f32 (row-major flatten of the encoder output).
    pub image_features: Tensor,
    /// `[N, hidden]` f32.
    pub projected: Tensor,
}

/// A scene embedding and the tensors it comes from (`scenesay embed`).
pub struct SceneEmbedding {
    pub image_features: Tensor,
    pub projector_output: Tensor,
    /// Mean of the image features over tokens, L2-normalised: `[C]`.
    pub embedding: Vec<f32>,
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub timings: Timings,
    pub cancelled: bool,
    /// True when generation ended on an end-of-turn token (not on the token limit).
    pub stopped_on_eos: bool,
    /// True when the image's encoding was the one remembered from the previous call on the same
    /// picture at the same resolution (no preprocessing or encoder pass was needed).
    pub reused_encoding: bool,
}

/// The last picture encoded by [`FastVlm::scene_embedding`] or [`FastVlm::generate`], with its
/// encoder and projector outputs: the daemon describes the very frame whose embedding showed a
/// change, and a scene description then starts without encoding that frame again. A hit needs the
/// same resolution and byte-for-byte the same pixels, so it can never describe the wrong picture.
struct RememberedEncoding {
    resolution: u32,
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    image_features: Tensor,
    projected: Tensor,
}

/// What the KV cache holds after a generation: one conversation about one picture — the system
/// prompt, the first question with the image, every answer and follow-up question so far. A
/// follow-up ([`FastVlm::follow_up`]) appends only its own turn to it.
#[derive(Debug, Clone)]
struct ConversationCache {
    /// Cache position where the last answer begins.
    answer_start: usize,
    /// The last answer's generated ids (the cache holds those that were fed back: all but an
    /// end-of-turn token, and all but the last one when the token limit ended the answer).
    answer: Vec<u32>,
    /// Questions answered so far (1 after the first).
    turns: usize,
}

/// A loaded FastVLM.
pub struct FastVlm {
    pub config: FastVlmConfig,
    pub dir: PathBuf,
    vision: FastViTHD,
    projector: Projector,
    llm: Qwen2,
    tokenizer: Option<TextTokenizer>,
    /// Token ids that end a generation (see [`stop_token_ids`]).
    stop_ids: Vec<u32>,
    precision: Precision,
    remembered: Mutex<Option<RememberedEncoding>>,
    /// The conversation the KV cache holds, if it holds one.
    conversation: Option<ConversationCache>,
    /// Decoding settings used by the [`Describer`] implementation (the daemon).
    pub describe_params: GenerationParams,
}

impl FastVlm {
    /// Loads a checkpoint directory in either layout: `config.json`, `model.safetensors` (or a
    /// sharded index) and, when present, the tokenizer files. Every tensor of the checkpoint must
    /// be used (Apple's MobileCLIP `head.proj` excepted) and every module must find its tensors.
    pub fn load(dir: &Path, precision: Precision) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                what: "model directory (not found, or not a directory)".into(),
                cause: None,
            });
        }
        let config = FastVlmConfig::from_dir(dir)?;
        let ck = Checkpoint::open(dir)?;
        let vision = FastViTHD::load(&ck, config.layout, &config.vision)?;
        let projector = Projector::load(
            &ck,
            config.layout,
            config.mm_hidden_size,
            config.text.hidden_size,
        )?;
        let prefix = match config.layout {
            Layout::Apple => "model.",
            Layout::Hf => "model.language_model.",
        };
        if config.quantized && !ck.has_quantized() {
            return Err(ModelError::MissingFile {
                path: dir.join(weights::GGUF_FILE),
                what:
                    "the quantized language-model matrices (config.json says `scenesay quantize` \
                       wrote this directory)"
                        .into(),
                cause: None,
            });
        }
        let llm = Qwen2::load(&ck, prefix, &config.text, precision.dtype())?;
        ck.ensure_all_used()?;
        let tokenizer = if TextTokenizer::present(dir) {
            Some(TextTokenizer::from_dir(dir)?)
        } else {
            None
        };
        let stop_ids = stop_token_ids(&config, tokenizer.as_ref());
        Ok(Self {
            config,
            dir: dir.to_path_buf(),
            vision,
            projector,
            llm,
            tokenizer,
            stop_ids,
            precision,
            conversation: None,
            remembered: Mutex::new(None),
            describe_params: GenerationParams {
                max_tokens: 64,
                ..Default::default()
            },
        })
    }

    /// The language model's weight precision as loaded.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// How the language model's weights are held: `f32`, `bf16`, `f16`, or the quantized formats
    /// (`q8_0`, `q4_0+q4k`, …).
    pub fn precision_name(&self) -> String {
        self.llm.weights_name()
    }

    /// The token ids that end a generation.
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    pub fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }

    fn require_tokenizer(&self) -> Result<&TextTokenizer, ModelError> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::MissingFile {
                path: self.dir.join("tokenizer.json"),
                what: "tokenizer (tokenizer.json, or vocab.json + merges.txt as Apple ships them)"
                    .into(),
                cause: None,
            })
    }

    /// Checks that `resolution` is usable by this encoder.
    pub fn check_resolution(&self, resolution: u32) -> Result<(), ModelError> {
        let s = self.config.vision.stride() as u32;
        if resolution == 0 || !resolution.is_multiple_of(s) {
            return Err(ModelError::Other(format!(
                "resolution {resolution} is not a positive multiple of {s} (try 256, 512 or 1024)"
            )));
        }
        Ok(())
    }

    /// Pads, resizes and scales an image to `[3, R, R]`.
    pub fn preprocess(&self, image: &RgbImage, resolution: u32) -> Result<FeatureMap, ModelError> {
        self.check_resolution(resolution)?;
        Ok(preprocess::preprocess(image, resolution))
    }

    /// The vision encoder alone, with a tap on every intermediate activation.
    pub fn vision_forward_with(
        &self,
        pixels: &FeatureMap,
        tap: impl FnMut(&str, &FeatureMap),
    ) -> Result<FeatureMap, ModelError> {
        self.vision.forward_with(pixels, tap)
    }

    /// The vision encoder (for profiling and tests that need its NHWC interface).
    pub fn vision(&self) -> &FastViTHD {
        &self.vision
    }

    /// The vision encoder alone: `[3, R, R]` pixels → `[C, R/64, R/64]` features.
    pub fn vision_forward(&self, pixels: &FeatureMap) -> Result<FeatureMap, ModelError> {
        self.vision.forward(pixels)
    }

    /// Preprocessed pixels → encoder output, image features and projector output.
    pub fn encode_pixels(&self, pixels: &FeatureMap) -> Result<ImageEncoding, ModelError> {
        Ok(self
            .encode_pixels_until(pixels, &|| false)?
            .expect("an encoding that is never stopped runs to the end"))
    }

    /// Like [`Self::encode_pixels`], polling `stop` between the encoder's blocks: `None` when it
    /// returned true, so a cancelled high-resolution description stops within one block.
    pub fn encode_pixels_until(
        &self,
        pixels: &FeatureMap,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<ImageEncoding>, ModelError> {
        let Some(tokens) = self
            .vision
            .forward_nhwc_until(pixels, &mut |_, _| {}, stop)?
        else {
            return Ok(None);
        };
        let features_nchw = tokens.to_feature_map();
        let image_features = self.tokens_tensor(tokens)?;
        let projected = self.projector.forward(&image_features)?;
        Ok(Some(ImageEncoding {
            features_nchw,
            image_features,
            projected,
        }))
    }

    /// The encoder's NHWC output as the `[h·w, C]` image-feature tensor (no copy).
    pub fn tokens_tensor(&self, tokens: Nhwc) -> Result<Tensor, ModelError> {
        let (n, c) = (tokens.hw(), tokens.c);
        Ok(Tensor::from_vec(tokens.data, (n, c), &Device::Cpu)?)
    }

    /// Encoder output `[C, h, w]` → `[h·w, C]` tensor.
    pub fn features_to_tokens(&self, f: &FeatureMap) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_vec(
            f.to_tokens(),
            (f.hw(), f.c),
            &Device::Cpu,
        )?)
    }

    /// The projector alone: `[N, mm_hidden]` → `[N, hidden]`.
    pub fn project(&self, image_features: &Tensor) -> Result<Tensor, ModelError> {
        self.projector.forward(image_features)
    }

    /// Scene embedding of an image at `resolution`.
    pub fn scene_embedding(
        &self,
        image: &RgbImage,
        resolution: u32,
    ) -> Result<SceneEmbedding, ModelError> {
        let (image_features, projector_output) = match self.recall(image, resolution) {
            Some(known) => known,
            None => {
                let enc = self.encode_pixels(&self.preprocess(image, resolution)?)?;
                self.remember(image, resolution, &enc);
                (enc.image_features, enc.projected)
            }
        };
        let embedding = pooled_embedding(&image_features)?;
        Ok(SceneEmbedding {
            image_features,
            projector_output,
            embedding,
        })
    }

    /// The remembered image features and projector output of `image` at `resolution`, if it is
    /// the picture encoded last.
    fn recall(&self, image: &RgbImage, resolution: u32) -> Option<(Tensor, Tensor)> {
        let guard = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        let r = guard.as_ref()?;
        (r.resolution == resolution
            && (r.width, r.height) == image.dimensions()
            && r.pixels.as_slice() == image.as_raw().as_slice())
        .then(|| (r.image_features.clone(), r.projected.clone()))
    }

    fn remember(&self, image: &RgbImage, resolution: u32, enc: &ImageEncoding) {
        let mut guard = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        // reuse the previous copy's buffer: frames of one camera have one size
        let mut pixels = guard.take().map(|r| r.pixels).unwrap_or_default();
        pixels.clear();
        pixels.extend_from_slice(image.as_raw());
        *guard = Some(RememberedEncoding {
            resolution,
            width: image.width(),
            height: image.height(),
            pixels,
            image_features: enc.image_features.clone(),
            projected: enc.projected.clone(),
        });
    }

    /// Forgets the remembered encoding, so the next call encodes its picture anew.
    pub fn forget_encoding(&self) {
        *self.remembered.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Token ids of the chat prompt for `question`, around the image slot.
    pub fn prompt_ids(&self, question: &str) -> Result<PromptIds, ModelError> {
        PromptIds::new(self.require_tokenizer()?, question)
    }

    /// Input embeddings `[1, T, H]`: prompt text with the projected image rows spliced in.
    pub fn input_embeds(
        &self,
        prompt: &PromptIds,
        projected: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let img = projected.to_dtype(self.llm.dtype())?.unsqueeze(0)?;
        let mut parts = vec![];
        if !prompt.before.is_empty() {
            parts.push(self.llm.embed(&prompt.before)?);
        }
        parts.push(img);
        if !prompt.after.is_empty() {
            parts.push(self.llm.embed(&prompt.after)?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// Embeddings of token ids `[1, T, H]`.
    pub fn token_embeds(&self, ids: &[u32]) -> Result<Tensor, ModelError> {
        self.llm.embed(ids)
    }

    /// Runs the LLM over `embeds` from an empty cache; returns the final hidden states `[1, T, H]`,
    /// handing each layer's hidden states to `tap`.
    pub fn prefill_with(
        &mut self,
        embeds: &Tensor,
        tap: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor, ModelError> {
        self.conversation = None;
        self.llm.clear_kv_cache();
        self.llm.forward_embeds_with(embeds, tap)
    }

    /// Runs the LLM over `embeds` from an empty cache; returns the final hidden states `[1, T, H]`.
    pub fn prefill(&mut self, embeds: &Tensor) -> Result<Tensor, ModelError> {
        self.conversation = None;
        self.llm.clear_kv_cache();
        self.llm.forward_embeds(embeds)
    }

    /// Appends embeddings to the cached sequence; returns their final hidden states.
    pub fn extend(&mut self, embeds: &Tensor) -> Result<Tensor, ModelError> {
        self.conversation = None;
        self.llm.forward_embeds(embeds)
    }

    /// Logits `[N, vocab]` of hidden states `[1, N, H]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        self.llm.logits(hidden)
    }

    /// The yes/no lean of the answer to `prompt` with the projected image rows `projected` spliced
    /// in: one prefill, then the next-token probability mass of `answers`' yes against no tokens.
    pub fn yes_no_projected(
        &mut self,
        prompt: &PromptIds,
        answers: &AnswerTokens,
        projected: &Tensor,
    ) -> Result<YesNo, ModelError> {
        let embeds = self.input_embeds(prompt, projected)?;
        let hidden = self.prefill(&embeds)?;
        let logits: Vec<f32> = self.last_logits(&hidden)?.to_dtype(DType::F32)?.to_vec1()?;
        Ok(crate::jobs::yesno::score(&logits, answers))
    }

    /// Logits `[vocab]` of the last position.
    pub fn last_logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        self.llm.last_logits(hidden)
    }

    /// Describes `image`: preprocess → encode → prefill → decode, streaming text to `on_text` and
    /// polling `cancel` between the encoder's blocks and before every token.
    pub fn generate(
        &mut self,
        image: &RgbImage,
        question: &str,
        resolution: u32,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> Result<Generation, ModelError> {
        params.validate()?;
        self.conversation = None;
        let t0 = Instant::now();
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let prompt = self.prompt_ids(question)?;
        let (projected, preprocess_ms, vision_ms, reused_encoding) =
            match self.recall(image, resolution) {
                Some((_, projected)) => (projected, 0.0, 0.0, true),
                None => {
                    let pixels = self.preprocess(image, resolution)?;
                    let preprocess_ms = ms(t0);
                    let t1 = Instant::now();
                    let Some(enc) = self.encode_pixels_until(&pixels, cancel)? else {
                        // cancelled while looking at the picture: nothing was said yet
                        return Ok(Generation {
                            text: String::new(),
                            token_ids: vec![],
                            prompt_tokens: 0,
                            timings: Timings {
                                preprocess_ms,
                                vision_ms: ms(t1),
                                total_ms: ms(t0),
                                ..Timings::default()
                            },
                            cancelled: true,
                            stopped_on_eos: false,
                            reused_encoding: false,
                        });
                    };
                    let vision_ms = ms(t1);
                    self.remember(image, resolution, &enc);
                    (enc.projected, preprocess_ms, vision_ms, false)
                }
            };
        let embeds = self.input_embeds(&prompt, &projected)?;
        let prompt_tokens = embeds.dim(1)?;
        let t2 = Instant::now();
        let hidden = self.prefill(&embeds)?;
        let logits = self.last_logits(&hidden)?;
        let prefill_ms = ms(t2);
        let d = self.decode_from(logits, params, on_text, cancel, t0)?;
        self.conversation = Some(ConversationCache {
            answer_start: prompt_tokens,
            answer: d.ids.clone(),
            turns: 1,
        });
        Ok(d.into_generation(
            prompt_tokens,
            Timings {
                preprocess_ms,
                vision_ms,
                prefill_ms,
                ..Timings::default()
            },
            reused_encoding,
        ))
    }

    /// Samples tokens from `logits` on (the cache holds everything before them), streaming text
    /// to `on_text`, until an end-of-turn token, the token limit, the context limit or `cancel`.
    fn decode_from(
        &mut self,
        mut logits: Tensor,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
        t0: Instant,
    ) -> Result<Decoded, ModelError> {
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let eos = self.stop_ids.clone();
        let mut sampler = Sampler::new(params);
        let mut ids: Vec<u32> = vec![];
        let (mut cancelled, mut stopped_on_eos) = (false, false);
        let mut ttft_ms = 0.0;
        let mut t_first: Option<Instant> = None;
        let tok = self
            .tokenizer
            .take()
            .ok_or_else(|| ModelError::Other("the model has no tokenizer to decode with".into()))?;
        let result = (|| -> Result<(), ModelError> {
            let mut stream = TokenStream::new(&tok);
            while ids.len() < params.max_tokens {
                if cancel() {
                    cancelled = true;
                    break;
                }
                let next = sampler.next(&logits, &ids)?;
                if t_first.is_none() {
                    ttft_ms = ms(t0);
                    t_first = Some(Instant::now());
                }
                if !params.ignore_eos && eos.contains(&next) {
                    stopped_on_eos = true;
                    break;
                }
                ids.push(next);
                if let Some(piece) = stream.push(next)? {
                    on_text(&piece);
                }
                if ids.len() == params.max_tokens {
                    break;
                }
                if self.llm.cached_len() + 1 > self.llm.max_context() {
                    break;
                }
                let h = self.llm.forward_embeds(&self.llm.embed(&[next])?)?;
                logits = self.llm.last_logits(&h)?;
            }
            if let Some(rest) = stream.finish()? {
                on_text(&rest);
            }
            Ok(())
        })();
        let text = tok.decode(&ids);
        self.tokenizer = Some(tok);
        result?;
        let decode_s = t_first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        let decode_tokens_per_s = if ids.len() > 1 && decode_s > 0.0 {
            (ids.len() - 1) as f64 / decode_s
        } else {
            0.0
        };
        Ok(Decoded {
            text: text?,
            ids,
            cancelled,
            stopped_on_eos,
            ttft_ms,
            decode_tokens_per_s,
            t0,
        })
    }

    /// Questions answered in the conversation the KV cache holds (0: none). Every call that runs
    /// the language model otherwise ([`Self::prefill`], [`Self::extend`] …) ends it.
    pub fn conversation_turns(&self) -> usize {
        self.conversation.as_ref().map_or(0, |c| c.turns)
    }

    /// Tokens the conversation holds in the KV cache, and the most the model accepts.
    pub fn conversation_room(&self) -> Option<(usize, usize)> {
        self.conversation
            .as_ref()
            .map(|_| (self.llm.cached_len(), self.llm.max_context()))
    }

    /// Forgets the conversation: the next question starts afresh (the cache itself is cleared by
    /// the next generation).
    pub fn end_conversation(&mut self) {
        self.conversation = None;
    }

    /// Token ids that continue the conversation after the last answer with `question`:
    /// `<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n`, exactly as
    /// the whole multi-turn ChatML prompt ([`prompt::chat_prompt_turns`]) tokenises there.
    pub fn follow_up_ids(&self, question: &str) -> Result<Vec<u32>, ModelError> {
        prompt::follow_up_ids(self.require_tokenizer()?, question)
    }

    /// Asks `question` as the next turn of the conversation the KV cache holds (the picture, the
    /// earlier questions and answers): only the new turn's tokens are run through the model, so
    /// the first word comes much sooner than from a fresh [`Self::generate`]. The last answer goes
    /// into the conversation as the multi-turn prompt would tokenise its text: where the ids the
    /// model generated differ from that, the cache is cut back to the first difference and the
    /// rest is run again, so the result is the one a fresh run over the whole multi-turn prompt
    /// gives. `Ok(None)`: there is no conversation to continue, or it would not fit in the
    /// context with `params.max_tokens` more tokens (it is then ended: ask afresh).
    pub fn follow_up(
        &mut self,
        question: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> Result<Option<Generation>, ModelError> {
        params.validate()?;
        let t0 = Instant::now();
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let Some(conv) = self.conversation.take() else {
            return Ok(None);
        };
        let cached = self.llm.cached_len();
        let fed = cached.saturating_sub(conv.answer_start);
        if cached < conv.answer_start || fed > conv.answer.len() {
            // not the cache this conversation left behind
            return Ok(None);
        }
        let tok = self.require_tokenizer()?;
        let said = tok.decode(&conv.answer)?;
        let canonical = tok.encode_plain(&said)?;
        let common = conv.answer[..fed]
            .iter()
            .zip(&canonical)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = conv.answer_start + common;
        let mut new: Vec<u32> = canonical[common..].to_vec();
        new.extend(prompt::follow_up_ids(tok, question)?);
        if keep + new.len() + params.max_tokens > self.llm.max_context() {
            return Ok(None);
        }
        self.llm.truncate_kv_cache(keep);
        let t2 = Instant::now();
        let hidden = self.llm.forward_embeds(&self.llm.embed(&new)?)?;
        let logits = self.llm.last_logits(&hidden)?;
        let prefill_ms = ms(t2);
        let d = self.decode_from(logits, params, on_text, cancel, t0)?;
        self.conversation = Some(ConversationCache {
            answer_start: keep + new.len(),
            answer: d.ids.clone(),
            turns: conv.turns + 1,
        });
        Ok(Some(d.into_generation(
            new.len(),
            Timings {
                prefill_ms,
                ..Timings::default()
            },
            true,
        )))
    }
}

/// What [`FastVlm::decode_from`] produced.
struct Decoded {
    text: String,
    ids: Vec<u32>,
    cancelled: bool,
    stopped_on_eos: bool,
    ttft_ms: f64,
    decode_tokens_per_s: f64,
    t0: Instant,
}

impl Decoded {
    fn into_generation(self, prompt_tokens: usize, t: Timings, reused: bool) -> Generation {
        Generation {
            text: self.text,
            token_ids: self.ids,
            prompt_tokens,
            timings: Timings {
                ttft_ms: self.ttft_ms,
                decode_tokens_per_s: self.decode_tokens_per_s,
                total_ms: self.t0.elapsed().as_secs_f64() * 1e3,
                ..t
            },
            cancelled: self.cancelled,
            stopped_on_eos: self.stopped_on_eos,
            reused_encoding: reused,
        }
    }
}

/// The ids that end a generation: every `eos_token_id` of config.json and generation_config.json
/// and the tokenizer's `<|im_end|>` (the end of the assistant's turn in the ChatML prompt) and
/// `<|endoftext|>`. Taking them all matters: the transformers conversion copies the base Qwen2's
/// eos (`<|endoftext|>`) into its text config, and a model that never stopped at `<|im_end|>` would
/// go on to invent the user's next turn and read it aloud.
pub fn stop_token_ids(config: &FastVlmConfig, tokenizer: Option<&TextTokenizer>) -> Vec<u32> {
    let mut ids = config.text.eos_token_ids.clone();
    for t in ["<|im_end|>", "<|endoftext|>"] {
        if let Some(id) = tokenizer.and_then(|tok| tok.token_to_id(t)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// Mean over tokens of `[N, C]` features, L2-normalised.
pub fn pooled_embedding(image_features: &Tensor) -> Result<Vec<f32>, ModelError> {
    let mean = image_features
        .to_dtype(DType::F32)?
        .mean(0)?
        .to_vec1::<f32>()?;
    let norm = mean
        .iter()
        .map(|v| (*v as f64) * (*v as f64))
        .sum::<f64>()
        .sqrt();
    Ok(if norm > 0.0 {
        mean.iter().map(|v| (*v as f64 / norm) as f32).collect()
    } else {
        mean
    })
}

impl Describer for FastVlm {
    fn embed(&mut self, image: &RgbImage, resolution: u32) -> anyhow::Result<Vec<f32>> {
        Ok(self.scene_embedding(image, resolution)?.embedding)
    }

    fn describe(
        &mut self,
        image: &RgbImage,
        request: &DescribeRequest,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Description> {
        let params = GenerationParams {
            max_tokens: request.max_tokens,
            ..self.describe_params.clone()
        };
        let g = self.generate(
            image,
            &request.prompt,
            request.resolution,
            &params,
            on_text,
            cancel,
        )?;
        Ok(Description {
            text: g.text,
            token_ids: g.token_ids,
            timings: g.timings,
            cancelled: g.cancelled,
        })
    }

    fn yes_no(
        &mut self,
        image: &RgbImage,
        question: &str,
        resolution: u32,
    ) -> anyhow::Result<YesNo> {
        let tok = self.require_tokenizer()?;
        let answers = AnswerTokens::from_encoder(|w| tok.encode(w))?;
        let prompt = self.prompt_ids(question)?;
        // the scene watch has usually just encoded this frame at this resolution: reused
        let enc = self.scene_embedding(image, resolution)?;
        Ok(self.yes_no_projected(&prompt, &answers, &enc.projector_output)?)
    }

    fn follow_up(
        &mut self,
        question: &str,
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Option<Description>> {
        let params = GenerationParams {
            max_tokens,
            ..self.describe_params.clone()
        };
        Ok(
            FastVlm::follow_up(self, question, &params, on_text, cancel)?.map(|g| Description {
                text: g.text,
                token_ids: g.token_ids,
                timings: g.timings,
                cancelled: g.cancelled,
            }),
        )
    }

    fn end_conversation(&mut self) {
        FastVlm::end_conversation(self);
    }

    fn conversation_room(&self) -> Option<(usize, usize)> {
        FastVlm::conversation_room(self)
    }
}
