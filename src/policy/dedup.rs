//! Text-level de-duplication: a new scene description that says essentially the same as the last
//! spoken one ("A man sits at a desk with a laptop" / "There is a man sitting at a desk using a
//! laptop") is logged as suppressed instead of spoken. Pure: two strings in, a score out.
//!
//! Words are compared in the narration language (`[speech] language`): its filler words are left
//! out (English, German, Spanish, French), English words are stemmed crudely, and Chinese,
//! Japanese or Korean script — written without spaces — is compared by character pairs
//! (bigrams) instead of words.

use std::collections::BTreeSet;

/// Words that carry no scene content (articles, auxiliaries, narration filler).
const STOP: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "there", "here", "this",
    "that", "these", "those", "it", "its", "of", "in", "on", "at", "to", "with", "and", "or",
    "but", "some", "for", "from", "by", "as", "his", "her", "their", "which", "who", "while",
    "can", "seen", "appears", "appear", "seems", "image", "picture", "photo", "shows", "show",
    "showing", "view", "scene", "front", "you", "i", "see", "visible", "has", "have", "having",
    "also", "very", "likely",
];

/// German, Spanish and French filler words.
const STOP_DE: &[&str] = &[
    "der", "die", "das", "ein", "eine", "einen", "einem", "einer", "ist", "sind", "es", "gibt",
    "und", "oder", "mit", "auf", "in", "im", "am", "an", "zu", "von", "vor", "dem", "den", "des",
    "man", "sieht", "bild", "zeigt", "hier", "da", "sich", "steht", "liegt",
];
const STOP_ES: &[&str] = &[
    "el", "la", "los", "las", "un", "una", "unos", "unas", "es", "son", "hay", "y", "o", "con",
    "en", "de", "del", "al", "a", "que", "se", "su", "sus", "imagen", "muestra", "está", "están",
];
const STOP_FR: &[&str] = &[
    "le", "la", "les", "un", "une", "des", "du", "de", "est", "sont", "il", "y", "a", "et", "ou",
    "avec", "sur", "dans", "au", "aux", "en", "qui", "que", "se", "sa", "son", "ses", "image",
    "montre", "on", "voit", "l", "d",
];
/// Chinese and Japanese characters that carry no scene content (particles, "there is").
const STOP_CJK: &[char] = &[
    '的', '了', '是', '在', '有', '个', '一', '着', '和', '与', '这', '那', '里', '上', '中', 'の',
    'は', 'が', 'を', 'に', 'で', 'と', 'も', 'す', 'ま', 'い', 'る', 'あ', 'り',
];

fn stop_words(language: &str) -> &'static [&'static str] {
    match primary(language) {
        "de" => STOP_DE,
        "es" => STOP_ES,
        "fr" => STOP_FR,
        _ => STOP,
    }
}

/// "zh-CN" → "zh"; empty = English.
fn primary(language: &str) -> &str {
    let p = language.split(['-', '_']).next().unwrap_or("");
    if p.is_empty() {
        "en"
    } else {
        p
    }
}

/// Chinese, Japanese and Korean script.
fn cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30ff}' | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}'
        | '\u{ac00}'..='\u{d7af}' | '\u{f900}'..='\u{faff}' | '\u{20000}'..='\u{2fa1f}')
}

/// Crude stemming so "sitting"/"sits"/"sit" and "laptops"/"laptop" meet.
fn stem(w: &str) -> String {
    let w = w.strip_suffix("ing").filter(|s| s.len() >= 3).unwrap_or(w);
    let w = w
        .strip_suffix("es")
        .filter(|s| s.len() >= 3 && s.ends_with(['s', 'x', 'z', 'h']))
        .unwrap_or(w);
    let w = w
        .strip_suffix('s')
        .filter(|s| s.len() >= 3 && !s.ends_with('s'))
        .unwrap_or(w);
    // "sitt" (from sitting) → "sit"
    let b = w.as_bytes();
    if b.len() >= 4 && b[b.len() - 1] == b[b.len() - 2] && !b"aeiou".contains(&b[b.len() - 1]) {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

/// The content words of an English description.
pub fn content_words(text: &str) -> BTreeSet<String> {
    content_words_in("en", text)
}

/// The content words of a description in `language`: words of alphabetic script (without the
/// language's filler words; stemmed for English), and character pairs of Chinese/Japanese/Korean
/// script (a lone character on its own).
pub fn content_words_in(language: &str, text: &str) -> BTreeSet<String> {
    let stop = stop_words(language);
    let english = primary(language) == "en";
    let mut out = BTreeSet::new();
    let mut run: Vec<char> = vec![];
    let flush = |run: &mut Vec<char>, out: &mut BTreeSet<String>| {
        match run.len() {
            0 => {}
            1 => {
                out.insert(run[0].to_string());
            }
            _ => {
                for w in run.windows(2) {
                    out.insert(w.iter().collect());
                }
            }
        }
        run.clear();
    };
    let mut word = String::new();
    let push_word = |w: &mut String, out: &mut BTreeSet<String>| {
        if !w.is_empty() {
            let l = w.to_lowercase();
            if !stop.contains(&l.as_str()) {
                out.insert(if english { stem(&l) } else { l });
            }
            w.clear();
        }
    };
    for c in text.chars() {
        if cjk(c) {
            push_word(&mut word, &mut out);
            if !STOP_CJK.contains(&c) {
                run.push(c);
            }
        } else if c.is_alphanumeric() {
            flush(&mut run, &mut out);
            word.push(c);
        } else {
            flush(&mut run, &mut out);
            push_word(&mut word, &mut out);
        }
    }
    flush(&mut run, &mut out);
    push_word(&mut word, &mut out);
    out
}

/// Dice similarity of the content words, 0 (nothing shared) to 1 (same words). Two texts without
/// content words are identical (1). English; see [`similarity_in`].
pub fn similarity(a: &str, b: &str) -> f32 {
    similarity_in("en", a, b)
}

/// [`similarity`] in `language` (a code such as "de" or "zh"; empty = English).
pub fn similarity_in(language: &str, a: &str, b: &str) -> f32 {
    let (a, b) = (content_words_in(language, a), content_words_in(language, b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let common = a.intersection(&b).count();
    2.0 * common as f32 / (a.len() + b.len()) as f32
}

/// Whether `new` repeats `previous` (similarity ≥ `threshold`).
pub fn is_repeat(previous: &str, new: &str, threshold: f32) -> bool {
    similarity(previous, new) >= threshold
}

/// [`is_repeat`] in `language`.
pub fn is_repeat_in(language: &str, previous: &str, new: &str, threshold: f32) -> bool {
    similarity_in(language, previous, new) >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewordings_of_the_same_scene_are_repeats() {
        let t = 0.6;
        assert!(is_repeat(
            "A man is sitting at a desk with a laptop.",
            "There is a man sitting at a desk, using his laptop.",
            t
        ));
        assert!(is_repeat(
            "A red car parked on the street.",
            "The image shows a red car parked on a street.",
            t
        ));
        assert!(is_repeat("", "  ", t));
    }

    #[test]
    fn different_scenes_are_not_repeats() {
        let t = 0.6;
        assert!(!is_repeat(
            "A man is sitting at a desk with a laptop.",
            "A kitchen with a red kettle on the stove.",
            t
        ));
        assert!(!is_repeat(
            "A door ahead, slightly open.",
            "Stairs going down to your left.",
            t
        ));
        assert!(!is_repeat("A cat on a sofa.", "", t));
    }

    #[test]
    fn stemming_meets_common_forms() {
        assert_eq!(
            content_words("sitting sits sit"),
            ["sit".to_string()].into()
        );
        assert_eq!(
            content_words("laptops laptop"),
            ["laptop".to_string()].into()
        );
        assert_eq!(content_words("boxes box"), ["box".to_string()].into());
    }

    #[test]
    fn chinese_rewordings_are_repeats_and_other_scenes_are_not() {
        let t = 0.6;
        let a = "桌子上有一台笔记本电脑和一个杯子。";
        assert!(is_repeat_in("zh", a, "桌子上有笔记本电脑和杯子。", t));
        assert!(is_repeat_in(
            "zh",
            a,
            "在桌子上，有一个杯子和一台笔记本电脑。",
            t
        ));
        assert!(!is_repeat_in("zh", a, "厨房里有一个红色的水壶。", t));
        assert!(!is_repeat_in("zh", "左边有一扇门。", "右边有楼梯。", t));
        // split on spaces, a Chinese sentence would be a single "word": any change, no match
        assert_eq!(content_words_in("zh", "一扇门").len(), 1);
        assert!(content_words_in("zh", "左边有一扇门").len() >= 3);
        // Japanese too
        assert!(is_repeat_in(
            "ja",
            "机の上にノートパソコンがあります。",
            "机の上にノートパソコン。",
            t
        ));
    }

    #[test]
    fn german_spanish_and_french_fillers_do_not_count() {
        let t = 0.6;
        assert!(is_repeat_in(
            "de",
            "Ein Mann sitzt an einem Schreibtisch mit einem Laptop.",
            "Auf dem Bild sitzt ein Mann am Schreibtisch mit Laptop.",
            t
        ));
        assert!(!is_repeat_in(
            "de",
            "Ein Mann sitzt an einem Schreibtisch.",
            "Eine Küche mit einem roten Wasserkocher.",
            t
        ));
        assert!(is_repeat_in(
            "es",
            "Un hombre sentado en un escritorio con un portátil.",
            "Hay un hombre sentado en el escritorio con su portátil.",
            t
        ));
        assert!(is_repeat_in(
            "fr",
            "Un homme assis à un bureau avec un ordinateur.",
            "Il y a un homme assis au bureau avec son ordinateur.",
            t
        ));
    }

    #[test]
    fn similarity_is_symmetric_and_bounded() {
        let pairs = [
            ("a dog in a park", "a park with trees"),
            ("bus stop sign", "a sign for the bus stop"),
            ("x", "y z"),
        ];
        for (a, b) in pairs {
            let s = similarity(a, b);
            assert_eq!(s, similarity(b, a));
            assert!((0.0..=1.0).contains(&s));
        }
    }
}
