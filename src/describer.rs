//! The seam between the narration daemon and the vision-language model: anything that can turn a
//! frame into a scene embedding and a spoken description. The real implementation is
//! [`crate::model::FastVlm`]; tests use scripted fakes.

use image::RgbImage;
use serde::Serialize;

/// What to ask the model about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribeRequest {
    /// The user's question / instruction (spliced into the chat prompt after the image).
    pub prompt: String,
    /// Square input side in pixels (a multiple of 64): 256 → 16 visual tokens, 1024 → 256.
    pub resolution: u32,
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
}

/// Wall-clock figures of one description, in milliseconds unless named otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    /// From the start of preprocessing to the first generated token.
    pub ttft_ms: f64,
    pub decode_tokens_per_s: f64,
    pub total_ms: f64,
}

/// The outcome of one description.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Description {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub timings: Timings,
    /// True when generation stopped because `cancel` returned true.
    pub cancelled: bool,
}

/// A model that can look at frames.
pub trait Describer: Send {
    /// The pooled, L2-normalised embedding of `image` at `resolution`, used to notice scene changes.
    fn embed(&mut self, image: &RgbImage, resolution: u32) -> anyhow::Result<Vec<f32>>;

    /// Describes `image`. `on_text` receives text as it is generated (complete UTF-8 pieces), so
    /// speech can start on the first sentence. `cancel` is polled while the image is encoded and
    /// before every token; when it returns true the work stops and the partial result (possibly
    /// empty) comes back with `cancelled = true`.
    fn describe(
        &mut self,
        image: &RgbImage,
        request: &DescribeRequest,
        on_text: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Description>;

    /// How much the model leans to "yes" when asked `question` about `image` at `resolution`,
    /// read from its next-token logits after one prefill (as `scenesay search` does), without
    /// generating text. A model that cannot answer yes/no questions says so.
    fn yes_no(
        &mut self,
        image: &RgbImage,
        question: &str,
        resolution: u32,
    ) -> anyhow::Result<crate::jobs::yesno::YesNo> {
        let _ = (image, question, resolution);
        anyhow::bail!("this model cannot answer yes/no questions")
    }

    /// Asks `question` as the next turn of the conversation the last description began (the same
    /// picture, the earlier questions and answers kept), in at most `max_tokens` tokens; streams
    /// and cancels like [`Describer::describe`]. `Ok(None)`: there is no conversation to go on
    /// with (the caller asks afresh). A model without conversations always answers `None`.
    fn follow_up(
        &mut self,
        _question: &str,
        _max_tokens: usize,
        _on_text: &mut dyn FnMut(&str),
        _cancel: &dyn Fn() -> bool,
    ) -> anyhow::Result<Option<Description>> {
        Ok(None)
    }

    /// Forgets the conversation: the next question starts afresh.
    fn end_conversation(&mut self) {}

    /// Tokens the conversation holds and the most the model accepts (`None`: no conversation, or
    /// no limit known).
    fn conversation_room(&self) -> Option<(usize, usize)> {
        None
    }
}
