//! Decoding settings and token selection: greedy, or sampling with temperature, top-p and a seed;
//! repetition penalty over a window of recent tokens (candle-transformers' logits processor).

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};

use super::ModelError;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// Always the most likely token (deterministic).
    Greedy,
    /// Sample from the top-p nucleus of the tempered distribution; `seed` makes it repeatable.
    Sample {
        temperature: f64,
        top_p: f64,
        seed: u64,
    },
}

/// Everything that shapes one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// 1.0 = off. Divides positive logits (multiplies negative ones) of recently generated tokens.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Keep going through the end-of-turn token (for tests and benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: Sampling::Greedy,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            ignore_eos: false,
        }
    }
}

impl GenerationParams {
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Sampling::Sample {
            temperature, top_p, ..
        } = self.sampling
        {
            if !(temperature > 0.0 && temperature.is_finite()) {
                return Err(ModelError::Other(format!(
                    "temperature must be > 0, got {temperature}"
                )));
            }
            if !(top_p > 0.0 && top_p <= 1.0) {
                return Err(ModelError::Other(format!(
                    "top-p must be in (0, 1], got {top_p}"
                )));
            }
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(ModelError::Other(format!(
                "repetition penalty must be > 0, got {}",
                self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// Picks tokens according to [`GenerationParams`].
pub struct Sampler {
    processor: LogitsProcessor,
    penalty: f32,
    window: usize,
}

impl Sampler {
    pub fn new(params: &GenerationParams) -> Self {
        let (seed, sampling) = match params.sampling {
            Sampling::Greedy => (0, CandleSampling::ArgMax),
            Sampling::Sample {
                temperature,
                top_p,
                seed,
            } if top_p >= 1.0 => (seed, CandleSampling::All { temperature }),
            Sampling::Sample {
                temperature,
                top_p,
                seed,
            } => (
                seed,
                CandleSampling::TopP {
                    p: top_p,
                    temperature,
                },
            ),
        };
        Self {
            processor: LogitsProcessor::from_sampling(seed, sampling),
            penalty: params.repetition_penalty,
            window: params.repeat_last_n,
        }
    }

    /// Next token from `logits` `[vocab]` (f32), given the tokens generated so far.
    pub fn next(&mut self, logits: &Tensor, generated: &[u32]) -> Result<u32, ModelError> {
        let logits = if self.penalty != 1.0 && !generated.is_empty() {
            let start = generated.len().saturating_sub(self.window);
            candle_transformers::utils::apply_repeat_penalty(
                logits,
                self.penalty,
                &generated[start..],
            )?
        } else {
            logits.clone()
        };
        Ok(self.processor.sample(&logits)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn greedy_takes_argmax_and_penalty_can_change_it() {
        let logits = Tensor::new(&[0.1f32, 2.0, 1.9, -1.0], &Device::Cpu).unwrap();
        let mut s = Sampler::new(&GenerationParams::default());
        assert_eq!(s.next(&logits, &[]).unwrap(), 1);
        let p = GenerationParams {
            repetition_penalty: 1.5,
            ..Default::default()
        };
        let mut s = Sampler::new(&p);
        assert_eq!(s.next(&logits, &[1]).unwrap(), 2);
    }

    #[test]
    fn sampling_is_repeatable_with_a_seed_and_respects_top_p() {
        let logits = Tensor::new(&[3.0f32, 2.9, 0.0, -5.0, 1.0], &Device::Cpu).unwrap();
        let p = GenerationParams {
            sampling: Sampling::Sample {
                temperature: 1.0,
                top_p: 0.9,
                seed: 42,
            },
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(&p);
            (0..50).map(|_| s.next(&logits, &[]).unwrap()).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(&p);
            (0..50).map(|_| s.next(&logits, &[]).unwrap()).collect()
        };
        assert_eq!(a, b);
        // probabilities ≈ [0.479, 0.433, 0.024, 0.000, 0.065]: the nucleus at p = 0.9 is {0, 1}
        assert!(a.iter().all(|t| [0, 1].contains(t)), "{a:?}");
        assert!(a.contains(&0) && a.contains(&1));
    }

    #[test]
    fn bad_settings_are_rejected() {
        let p = GenerationParams {
            sampling: Sampling::Sample {
                temperature: 0.0,
                top_p: 0.9,
                seed: 1,
            },
            ..Default::default()
        };
        assert!(p.validate().is_err());
        let p = GenerationParams {
            sampling: Sampling::Sample {
                temperature: 0.7,
                top_p: 1.5,
                seed: 1,
            },
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }
}
