//! The Qwen2 byte-level BPE tokenizer, from `tokenizer.json` when the checkpoint has one (HF
//! layout) or built from the "slow" files Apple's repositories ship (`vocab.json`, `merges.txt`,
//! `added_tokens.json`, `tokenizer_config.json`): NFC normaliser, Qwen2 split regex (isolated) then
//! byte-level without prefix space, byte-level decoder, special tokens kept whole (fastvlm.md §6).
//! Also the incremental detokeniser that lets speech start before generation ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::ModelError;

/// Qwen2's pre-tokenizer split pattern (from the Qwen2 tokenizer's own configuration).
pub const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A loaded tokenizer.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Where it came from (for messages).
    pub source: PathBuf,
}

fn tok_err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

impl TextTokenizer {
    /// Whether `dir` holds tokenizer files of either kind.
    pub fn present(dir: &Path) -> bool {
        dir.join("tokenizer.json").exists() || dir.join("vocab.json").exists()
    }

    /// Loads the tokenizer of a checkpoint directory.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let fast = dir.join("tokenizer.json");
        if fast.exists() {
            let inner = Tokenizer::from_file(&fast).map_err(|e| tok_err(&fast, e))?;
            return Ok(Self {
                inner,
                source: fast,
            });
        }
        Self::from_slow_files(dir)
    }

    /// Builds the tokenizer from Apple's slow Qwen2 files.
    pub fn from_slow_files(dir: &Path) -> Result<Self, ModelError> {
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        for (p, what) in [
            (&vocab, "the tokenizer vocabulary"),
            (&merges, "the tokenizer merges"),
        ] {
            if !p.exists() {
                return Err(ModelError::MissingFile {
                    path: p.clone(),
                    what: format!("{what} (or a tokenizer.json)"),
                    cause: None,
                });
            }
        }
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .build()
            .map_err(|e| tok_err(&vocab, e))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_normalizer(Some(NFC));
        let split = Split::new(
            SplitPattern::Regex(QWEN2_SPLIT.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(&vocab, e))?;
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])));
        inner.with_decoder(Some(ByteLevel::new(false, false, false)));

        // Special tokens: added_tokens.json (content → id) and tokenizer_config.json's
        // added_tokens_decoder (id → {content, special}).
        let mut specials: BTreeMap<u32, String> = BTreeMap::new();
        let added = dir.join("added_tokens.json");
        if added.exists() {
            let v = read_json(&added)?;
            for (content, id) in v.as_object().into_iter().flatten() {
                let id = id.as_u64().ok_or_else(|| {
                    tok_err(&added, format!("id of `{content}` is not an integer"))
                })?;
                specials.insert(id as u32, content.clone());
            }
        }
        let cfg = dir.join("tokenizer_config.json");
        if cfg.exists() {
            let v = read_json(&cfg)?;
            if let Some(dec) = v.get("added_tokens_decoder").and_then(|d| d.as_object()) {
                for (id, t) in dec {
                    let id: u32 = id.parse().map_err(|_| {
                        tok_err(
                            &cfg,
                            format!("added_tokens_decoder key `{id}` is not an id"),
                        )
                    })?;
                    if let Some(c) = t.get("content").and_then(|c| c.as_str()) {
                        specials.insert(id, c.to_string());
                    }
                }
            }
        }
        for (id, content) in &specials {
            if inner.token_to_id(content).is_none() {
                inner.add_special_tokens(&[AddedToken::from(content.clone(), true)]);
            }
            match inner.token_to_id(content) {
                Some(got) if got == *id => {}
                got => {
                    return Err(tok_err(
                        &added,
                        format!("special token `{content}` should have id {id} but the vocabulary gives {got:?}"),
                    ))
                }
            }
        }
        Ok(Self {
            inner,
            source: vocab,
        })
    }

    /// Encodes text in which special tokens are live: `<|im_start|>` written in the text becomes
    /// its id. Only for text the program writes itself (the chat template); see
    /// [`Self::encode_plain`] for anything a user typed.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err(&self.source, e))?
            .get_ids()
            .to_vec())
    }

    /// Encodes text as plain text: added and special tokens are not looked for, so
    /// `<|im_end|>` typed by a user is the characters `<`, `|`, `im`, … like any other text.
    /// Normaliser, pre-tokeniser and BPE are those of [`Self::encode`]; on text without special
    /// tokens the two give the same ids.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        use tokenizers::{Model, Normalizer, OffsetType, PreTokenizedString, PreTokenizer};
        let err = |e: tokenizers::Error| tok_err(&self.source, e);
        let mut pre = PreTokenizedString::from(text);
        if let Some(n) = self.inner.get_normalizer() {
            pre.normalize(|s| n.normalize(s)).map_err(err)?;
        }
        if let Some(p) = self.inner.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre).map_err(err)?;
        }
        let model = self.inner.get_model();
        pre.tokenize(|s| model.tokenize(s.get())).map_err(err)?;
        Ok(pre
            .into_encoding(None, 0, OffsetType::Byte)
            .map_err(err)?
            .get_ids()
            .to_vec())
    }

    /// Decodes ids to text (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| tok_err(&self.source, e))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

fn read_json(p: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(p).map_err(|e| tok_err(p, e))?;
    serde_json::from_str(&text).map_err(|e| tok_err(p, format!("not valid JSON: {e}")))
}

/// Incremental detokeniser: feed ids one at a time, get back only text that is complete (no
/// dangling half of a multi-byte character), so it can be spoken as it arrives.
pub struct TokenStream<'a> {
    tok: &'a TextTokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> TokenStream<'a> {
    pub fn new(tok: &'a TextTokenizer) -> Self {
        Self {
            tok,
            ids: vec![],
            emitted: 0,
        }
    }

    /// Adds one id; returns newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, ModelError> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.len() > self.emitted
            && !text.ends_with('\u{fffd}')
            && text.is_char_boundary(self.emitted)
        {
            let new = text[self.emitted..].to_string();
            self.emitted = text.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// Whatever is left at the end (including a trailing replacement character).
    pub fn finish(&mut self) -> Result<Option<String>, ModelError> {
        let text = self.tok.decode(&self.ids)?;
        if text.len() > self.emitted && text.is_char_boundary(self.emitted) {
            let new = text[self.emitted..].to_string();
            self.emitted = text.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// All text so far.
    pub fn text(&self) -> Result<String, ModelError> {
        self.tok.decode(&self.ids)
    }
}
