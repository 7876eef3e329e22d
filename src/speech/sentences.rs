//! Cutting streamed model text into sentences, so the first sentence is spoken while the rest is
//! still being generated, and cleaning text so a speech engine can say it.

/// Collects text pieces and hands out complete sentences.
#[derive(Debug, Clone)]
pub struct SentenceSplitter {
    buf: String,
    max_chars: usize,
}

impl Default for SentenceSplitter {
    fn default() -> Self {
        Self::new(200)
    }
}

fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | ';' | ':') || ends_at_once(c)
}

/// Full-width marks (Chinese, Japanese): the sentence ends right after them, no space follows.
fn ends_at_once(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '．' | '；' | '｡' | '‼' | '⁇')
}

/// Closing quotes and brackets that belong to the sentence they follow.
fn closes(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '”' | '’' | '」' | '』' | '）' | '】' | '》' | '〉' | '］' | '｣'
    )
}

/// Chinese, Japanese and Korean script (written without spaces between sentences).
fn cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30ff}' | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}'
        | '\u{ac00}'..='\u{d7af}' | '\u{f900}'..='\u{faff}' | '\u{20000}'..='\u{2fa1f}')
}

/// Where a long run without sentence marks may be cut: after white space or a comma-like mark.
fn soft_break(c: char) -> bool {
    c.is_whitespace() || matches!(c, '，' | '、' | '､' | '：' | ',')
}

impl SentenceSplitter {
    /// `max_chars`: a "sentence" that grows longer than this without an end mark is cut at a space.
    pub fn new(max_chars: usize) -> Self {
        Self {
            buf: String::new(),
            max_chars: max_chars.max(16),
        }
    }

    /// Adds a piece of text; returns the sentences it completed. A sentence ends at `.`, `!`, `?`,
    /// `…` (and `;`, `:`) followed by white space or Chinese/Japanese/Korean script, right after
    /// the full-width `。`, `！`, `？`, `．`, `；` (closing quotes and brackets stay with it), or at a
    /// line break.
    pub fn push(&mut self, piece: &str) -> Vec<String> {
        self.buf.push_str(piece);
        let mut out = vec![];
        loop {
            let cut = self.find_cut();
            match cut {
                Some(i) => {
                    let rest = self.buf.split_off(i);
                    let s = std::mem::replace(&mut self.buf, rest);
                    let s = s.trim();
                    if !s.is_empty() {
                        out.push(s.to_string());
                    }
                }
                None => break,
            }
        }
        out
    }

    /// Whatever is left when generation ends.
    pub fn finish(&mut self) -> Option<String> {
        let s = std::mem::take(&mut self.buf);
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    }

    fn find_cut(&self) -> Option<usize> {
        // after an end mark: Some(full-width?) while end marks and closing quotes follow
        let mut after: Option<bool> = None;
        for (i, c) in self.buf.char_indices() {
            if c == '\n' && i > 0 {
                return Some(i + 1);
            }
            if ends_sentence(c) {
                let wide = ends_at_once(c);
                after = Some(after.unwrap_or(false) || wide);
                continue;
            }
            if after.is_some() && closes(c) {
                continue;
            }
            match after {
                Some(true) => return Some(i),
                Some(false) if c.is_whitespace() || cjk(c) => return Some(i),
                _ => {}
            }
            after = None;
        }
        if self.buf.chars().count() > self.max_chars {
            // cut after the last space or comma before the limit, else hard at the limit
            let limit = self
                .buf
                .char_indices()
                .nth(self.max_chars)
                .map(|(i, _)| i)
                .unwrap_or(self.buf.len());
            let at = self.buf[..limit]
                .char_indices()
                .filter(|(_, c)| soft_break(*c))
                .map(|(i, c)| {
                    if c.is_whitespace() {
                        i
                    } else {
                        i + c.len_utf8()
                    }
                })
                .rfind(|&i| i > 0)
                .unwrap_or(limit);
            return Some(at.max(1));
        }
        None
    }
}

/// Text a speech engine can say: control characters and replacement characters removed, white
/// space collapsed. `None` when nothing pronounceable (no letter or digit) is left.
pub fn speakable(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if c == '\u{FFFD}' || ('\u{E000}'..='\u{F8FF}').contains(&c) {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out.chars().any(char::is_alphanumeric).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&str]) -> Vec<String> {
        let mut s = SentenceSplitter::new(40);
        let mut out = vec![];
        for p in pieces {
            out.extend(s.push(p));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_come_out_as_soon_as_they_end() {
        let mut s = SentenceSplitter::default();
        assert!(s.push("A kitchen").is_empty());
        assert!(
            s.push(" with a table.").is_empty(),
            "needs the following space"
        );
        assert_eq!(s.push(" A cat"), vec!["A kitchen with a table."]);
        assert_eq!(s.push(" sleeps! Next"), vec!["A cat sleeps!"]);
        assert_eq!(s.finish(), Some("Next".to_string()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn numbers_and_line_breaks() {
        assert_eq!(
            split(&["It costs 3.50 euros. ", "Line one\nLine two"]),
            vec!["It costs 3.50 euros.", "Line one", "Line two"]
        );
    }

    #[test]
    fn long_text_without_marks_is_cut_at_spaces() {
        let words = "word ".repeat(30);
        let out = split(&[&words]);
        assert!(out.len() >= 3, "{out:?}");
        assert!(out.iter().all(|s| s.chars().count() <= 40), "{out:?}");
        assert_eq!(out.join(" "), words.trim());
    }

    #[test]
    fn long_text_without_spaces_is_cut_hard() {
        let blob = "x".repeat(100);
        let out = split(&[&blob]);
        assert_eq!(out.concat(), blob);
        assert!(out.len() >= 2);
    }

    #[test]
    fn a_streamed_chinese_answer_is_cut_at_full_width_marks() {
        // token by token, as the model streams it
        let answer =
            "桌子上有一个红色的杯子。左边有一扇门，门是开着的！你要出去吗？「小心台阶。」好的";
        let mut s = SentenceSplitter::default();
        let mut out = vec![];
        for c in answer.chars() {
            out.extend(s.push(&c.to_string()));
        }
        out.extend(s.finish());
        assert_eq!(
            out,
            [
                "桌子上有一个红色的杯子。",
                "左边有一扇门，门是开着的！",
                "你要出去吗？",
                "「小心台阶。」",
                "好的"
            ]
        );
    }

    #[test]
    fn a_full_width_mark_waits_for_what_follows() {
        let mut s = SentenceSplitter::default();
        assert!(s.push("真的吗？").is_empty(), "a closing mark may follow");
        assert!(s.push("！」").is_empty());
        assert_eq!(s.push("是的"), vec!["真的吗？！」"]);
        // Japanese, and a Western mark followed by Chinese
        assert_eq!(
            split(&["駅はどこですか。右です。", "OK!那走吧"]),
            vec!["駅はどこですか。", "右です。", "OK!", "那走吧"]
        );
    }

    #[test]
    fn long_chinese_text_is_cut_after_a_comma() {
        let text = format!("{}，{}", "很".repeat(30), "长".repeat(30));
        let out = split(&[&text]);
        assert_eq!(out[0], format!("{}，", "很".repeat(30)));
        assert_eq!(out.concat(), text);
    }

    #[test]
    fn speakable_cleans_model_noise() {
        assert_eq!(
            speakable(" short\u{fffd}fferent\u{1c}ve\tok \n"),
            Some("shortfferent ve ok".to_string())
        );
        assert_eq!(speakable("\u{fffd} \u{10} ..."), None);
        assert_eq!(speakable(""), None);
        assert_eq!(speakable("Exit 3 ahead."), Some("Exit 3 ahead.".into()));
    }
}
