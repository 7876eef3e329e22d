//! Reading a yes/no answer from the model's next-token logits instead of from generated text: the
//! probability mass of the first tokens of "yes"-like words against that of "no"-like words, after
//! one prefill. Pure functions over a logits vector.

/// Spellings whose first token counts as "yes" (tokenizers split words differently: with or
/// without a leading space, capitalised or not).
pub const YES_WORDS: [&str; 5] = ["Yes", "yes", " Yes", " yes", "YES"];
/// The same for "no".
pub const NO_WORDS: [&str; 5] = ["No", "no", " No", " no", "NO"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum YesNoError {
    #[error("the tokenizer has no token that begins \"{0}\" without also beginning the opposite answer; it cannot answer yes/no questions")]
    NoTokens(&'static str),
    #[error("the tokenizer cannot encode \"{word}\": {msg}")]
    Encode { word: String, msg: String },
}

/// The token ids that start a "yes" and a "no" answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerTokens {
    pub yes: Vec<u32>,
    pub no: Vec<u32>,
}

impl AnswerTokens {
    /// The first token id of each spelling, without duplicates; an id that begins both a yes and a
    /// no spelling (e.g. a lone space, or "N" in a tiny vocabulary that also spells "No" from it)
    /// tells nothing and is dropped. Fails when either side ends up empty.
    pub fn from_encoder<E: std::fmt::Display>(
        encode: impl Fn(&str) -> Result<Vec<u32>, E>,
    ) -> Result<Self, YesNoError> {
        let firsts = |words: &[&str]| -> Result<Vec<u32>, YesNoError> {
            let mut ids = vec![];
            for w in words {
                let enc = encode(w).map_err(|e| YesNoError::Encode {
                    word: w.to_string(),
                    msg: e.to_string(),
                })?;
                if let Some(&id) = enc.first() {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            Ok(ids)
        };
        let yes = firsts(&YES_WORDS)?;
        let no = firsts(&NO_WORDS)?;
        let both: Vec<u32> = yes.iter().filter(|i| no.contains(i)).copied().collect();
        let yes: Vec<u32> = yes.into_iter().filter(|i| !both.contains(i)).collect();
        let no: Vec<u32> = no.into_iter().filter(|i| !both.contains(i)).collect();
        if yes.is_empty() {
            return Err(YesNoError::NoTokens("yes"));
        }
        if no.is_empty() {
            return Err(YesNoError::NoTokens("no"));
        }
        Ok(Self { yes, no })
    }
}

/// How much the model leans to "yes".
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct YesNo {
    /// P(yes) / (P(yes) + P(no)), in [0, 1].
    pub score: f64,
    /// Probability of a yes token among the whole vocabulary.
    pub p_yes: f64,
    /// Probability of a no token among the whole vocabulary.
    pub p_no: f64,
}

fn logsumexp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Scores next-token `logits` (one per vocabulary entry). Ids beyond the logits (a tokenizer larger
/// than the model's vocabulary) are ignored; the answer sets of [`AnswerTokens`] are never empty,
/// and an empty side here gives 0 (or 1) rather than NaN.
pub fn score(logits: &[f32], t: &AnswerTokens) -> YesNo {
    let all = logsumexp(logits.iter().map(|&x| x as f64));
    let pick = |ids: &[u32]| {
        logsumexp(
            ids.iter()
                .filter_map(|&i| logits.get(i as usize).map(|&x| x as f64))
                .collect::<Vec<_>>()
                .into_iter(),
        )
    };
    let (ly, ln) = (pick(&t.yes), pick(&t.no));
    let score = match (ly.is_finite(), ln.is_finite()) {
        (true, true) => 1.0 / (1.0 + (ln - ly).exp()),
        (true, false) => 1.0,
        (false, true) => 0.0,
        (false, false) => 0.5,
    };
    YesNo {
        score,
        p_yes: (ly - all).exp(),
        p_no: (ln - all).exp(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(word: &str) -> Result<Vec<u32>, String> {
        // a tiny vocabulary: whole words for some spellings, letters for others, one shared space
        Ok(match word {
            "Yes" => vec![10],
            "yes" => vec![11],
            " Yes" | " yes" | " No" | " no" => vec![1, 12],
            "YES" => vec![20, 21],
            "No" => vec![30],
            "no" => vec![31],
            "NO" => vec![30, 32],
            _ => return Err(format!("unknown {word}")),
        })
    }

    #[test]
    fn first_tokens_deduplicated_and_shared_ones_dropped() {
        let t = AnswerTokens::from_encoder(toy).unwrap();
        assert_eq!(t.yes, [10, 11, 20]);
        assert_eq!(t.no, [30, 31]);
    }

    #[test]
    fn missing_answers_are_an_error() {
        let same = |_: &str| Ok::<_, String>(vec![7]);
        assert_eq!(
            AnswerTokens::from_encoder(same),
            Err(YesNoError::NoTokens("yes"))
        );
        let empty = |w: &str| {
            Ok::<_, String>(if w.to_lowercase().contains("no") {
                vec![]
            } else {
                vec![1]
            })
        };
        assert_eq!(
            AnswerTokens::from_encoder(empty),
            Err(YesNoError::NoTokens("no"))
        );
        let failing = |_: &str| Err::<Vec<u32>, _>("boom");
        assert!(matches!(
            AnswerTokens::from_encoder(failing),
            Err(YesNoError::Encode { .. })
        ));
    }

    #[test]
    fn score_is_the_yes_share_of_the_yes_no_mass() {
        let t = AnswerTokens {
            yes: vec![0, 1],
            no: vec![2, 9],
        };
        // equal logits: yes and no tie; 9 is outside the vocabulary
        let s = score(&[0.0, 0.0, 0.0, 0.0], &t);
        assert!((s.score - 2.0 / 3.0).abs() < 1e-12, "{s:?}");
        assert!((s.p_yes - 0.5).abs() < 1e-12 && (s.p_no - 0.25).abs() < 1e-12);
        // a confident yes, robust to huge logits
        let s = score(&[1000.0, -5.0, 990.0, 0.0], &t);
        assert!(
            (s.score - 1.0 / (1.0 + (-10f64).exp())).abs() < 1e-9,
            "{s:?}"
        );
        assert!(s.p_yes > 0.99 && s.p_no < 1e-4);
        let s = score(&[-30.0, -30.0, 30.0, 0.0], &t);
        assert!(s.score < 1e-20 && s.score >= 0.0);
        let only_yes = AnswerTokens {
            yes: vec![0],
            no: vec![99],
        };
        assert_eq!(score(&[0.0, 1.0], &only_yes).score, 1.0);
    }
}
