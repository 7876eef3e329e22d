//! The FastVLM chat prompt (ChatML, the same string in Apple's code and in transformers' template)
//! and its token ids around the image slot.

use super::tokenizer::TextTokenizer;
use super::ModelError;

/// The system prompt both ecosystems use.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.";
/// Where the image goes in the prompt text.
pub const IMAGE_MARKER: &str = "<image>";

/// The full prompt text for one question about one image.
pub fn chat_prompt(question: &str) -> String {
    format!(
        "<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{IMAGE_MARKER}\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// The full multi-turn prompt text: the first question with the image, each earlier answer, and
/// `question` as the next user turn (ChatML as FastVLM was trained on conversations: the system
/// prompt once, the image in the first user turn only, every turn closed by `<|im_end|>\n`).
pub fn chat_prompt_turns(turns: &[(&str, &str)], question: &str) -> String {
    let Some(((first, _), _)) = turns.split_first() else {
        return chat_prompt(question);
    };
    let mut s = chat_prompt(first);
    for (i, (_, answer)) in turns.iter().enumerate() {
        s.push_str(answer);
        let next = turns.get(i + 1).map_or(question, |t| t.0);
        s.push_str(&format!(
            "<|im_end|>\n<|im_start|>user\n{next}<|im_end|>\n<|im_start|>assistant\n"
        ));
    }
    s
}

/// The ids that follow an answer in [`chat_prompt_turns`] when `question` is asked next: the end
/// of the answer's turn, the user's turn, the start of the assistant's. The tokeniser splits the
/// prompt at every control token and encodes each piece between them alone, so these ids are the
/// same whatever the answer said; the question is plain text, as in [`PromptIds::new`].
pub fn follow_up_ids(tok: &TextTokenizer, question: &str) -> Result<Vec<u32>, ModelError> {
    let mut ids = tok.encode("<|im_end|>\n<|im_start|>")?;
    ids.extend(tok.encode_plain(&format!("user\n{question}"))?);
    ids.extend(tok.encode("<|im_end|>\n<|im_start|>assistant\n")?);
    Ok(ids)
}

/// Token ids before and after the image slot. The image's projected rows go in between; in the HF
/// layout the same positions hold `image_token_id` in `input_ids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptIds {
    pub before: Vec<u32>,
    pub after: Vec<u32>,
}

impl PromptIds {
    /// Tokenises `chat_prompt(question)` around the image marker (Apple's
    /// `tokenizer_image_token`; equivalent to transformers' added image token). The template's
    /// own control tokens are encoded as such; the question is encoded as plain text, so
    /// `<|im_end|>`, `<|im_start|>` or `<image>` typed by a user are characters that cannot end
    /// the turn, start a new one or ask for an image. Since the reference splits its prompt at
    /// every control token anyway, an ordinary question gets exactly the reference's ids.
    pub fn new(tok: &TextTokenizer, question: &str) -> Result<Self, ModelError> {
        let text = chat_prompt("");
        let (a, b) = text
            .split_once(IMAGE_MARKER)
            .expect("the template holds the marker");
        let (user_start, end) = b
            .split_once("<|im_end|>")
            .expect("the template ends the user turn");
        debug_assert_eq!(user_start, "\n");
        let mut after = tok.encode_plain(&format!("{user_start}{question}"))?;
        after.extend(tok.encode(&format!("<|im_end|>{end}"))?);
        Ok(Self {
            before: tok.encode(a)?,
            after,
        })
    }

    /// The full `input_ids` with `n` copies of `image_token` at the image slot.
    pub fn input_ids(&self, image_token: u32, n: usize) -> Vec<u32> {
        let mut ids = self.before.clone();
        ids.extend(std::iter::repeat_n(image_token, n));
        ids.extend(&self.after);
        ids
    }

    /// Prompt length in tokens with `n` image tokens.
    pub fn len(&self, n: usize) -> usize {
        self.before.len() + n + self.after.len()
    }

    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }
}
