//! Text-level de-duplication: a new scene description that says essentially the same as the last
//! spoken one ("A man sits at a desk with a laptop" / "There is a man sitting at a desk using a
//! laptop") is logged as suppressed instead of spoken. Pure: two strings in, a score out.

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

/// The content words of a description.
pub fn content_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .filter(|w| !STOP.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

/// Dice similarity of the content words, 0 (nothing shared) to 1 (same words). Two texts without
/// content words are identical (1).
pub fn similarity(a: &str, b: &str) -> f32 {
    let (a, b) = (content_words(a), content_words(b));
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
