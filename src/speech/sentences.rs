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
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？' | ';' | ':')
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
    /// `…` (and `;`, `:`) followed by white space, or at a line break.
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
        let mut prev: Option<char> = None;
        for (i, c) in self.buf.char_indices() {
            if c == '\n' && i > 0 {
                return Some(i + 1);
            }
            if c.is_whitespace() && prev.is_some_and(ends_sentence) {
                return Some(i);
            }
            prev = Some(c);
        }
        if self.buf.chars().count() > self.max_chars {
            // cut at the last space before the limit, else hard at the limit
            let limit = self
                .buf
                .char_indices()
                .nth(self.max_chars)
                .map(|(i, _)| i)
                .unwrap_or(self.buf.len());
            let at = self.buf[..limit]
                .rfind(char::is_whitespace)
                .filter(|&i| i > 0)
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
