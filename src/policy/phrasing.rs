//! Wording fixes applied to what the model says before it is spoken: a blind user is not looking
//! at "an image", so openings such as "The image shows", "In this picture," or "A photo of" are
//! cut ("The image shows a man at a desk." → "A man at a desk."). Pure: text in, text out.

/// What the model calls the camera's view.
const SUBJECTS: &[&str] = &[
    "image",
    "picture",
    "photo",
    "photograph",
    "scene",
    "frame",
    "view",
    "snapshot",
];

/// Verbs of "the image shows …" (one or two words).
const VERBS: &[&[&str]] = &[
    &["shows"],
    &["depicts"],
    &["features"],
    &["captures"],
    &["displays"],
    &["contains"],
    &["presents"],
    &["portrays"],
    &["illustrates"],
    &["is", "showing"],
    &["is", "of"],
    &["appears", "to", "show"],
    &["seems", "to", "show"],
];

/// The words of `text` with the byte offset just past each.
fn words(text: &str) -> Vec<(String, usize)> {
    let mut out = vec![];
    let mut start = None;
    for (i, c) in text.char_indices() {
        let part = c.is_alphanumeric() || c == '\'';
        match (part, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((text[s..i].to_lowercase(), i));
                start = None;
            }
            _ => {}
        }
        if out.len() >= 8 {
            break;
        }
    }
    if let Some(s) = start {
        out.push((text[s..].to_lowercase(), text.len()));
    }
    out
}

fn is(w: Option<&(String, usize)>, any: &[&str]) -> bool {
    w.is_some_and(|(w, _)| any.contains(&w.as_str()))
}

/// How many leading words form an "image" opening, if any.
fn opening_len(w: &[(String, usize)]) -> Option<usize> {
    let at = |i: usize| w.get(i);
    // "In this image, …" / "In the picture …"
    if is(at(0), &["in", "on"]) && is(at(1), &["the", "this"]) && is(at(2), SUBJECTS) {
        return Some(3);
    }
    // "This is an image of …" / "It is a picture of …"
    if is(at(0), &["this", "it"])
        && is(at(1), &["is"])
        && is(at(2), &["a", "an"])
        && is(at(3), SUBJECTS)
        && is(at(4), &["of"])
    {
        return Some(5);
    }
    // "An image of …" / "A photo of …"
    if is(at(0), &["a", "an"]) && is(at(1), SUBJECTS) && is(at(2), &["of"]) {
        return Some(3);
    }
    // "The image shows (that) …" / "This picture is of …"
    if is(at(0), &["the", "this"]) && is(at(1), SUBJECTS) {
        for verb in VERBS {
            let n = verb.len();
            if (0..n).all(|k| is(at(2 + k), &[verb[k]])) {
                let mut len = 2 + n;
                if is(at(len), &["that"]) {
                    len += 1;
                }
                return Some(len);
            }
        }
        // "The image is a close-up of a mug." → "A close-up of a mug."
        if is(at(2), &["is"]) && is(at(3), &["a", "an"]) {
            return Some(3);
        }
    }
    None
}

/// `text` without an opening that speaks of an image, first letter capitalised. Text that is only
/// such an opening is returned unchanged.
pub fn strip_preamble(text: &str) -> String {
    let t = text.trim_start();
    let w = words(t);
    let Some(n) = opening_len(&w) else {
        return text.to_string();
    };
    let rest =
        t[w[n - 1].1..].trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == ':');
    if !rest.chars().any(char::is_alphanumeric) {
        return text.to_string();
    }
    let mut chars = rest.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_openings_are_cut() {
        for (said, spoken) in [
            ("The image shows a man at a desk.", "A man at a desk."),
            (
                "The image shows that the door is open.",
                "The door is open.",
            ),
            (
                "In this image, there is a cat on a sofa.",
                "There is a cat on a sofa.",
            ),
            ("In the picture a bus is arriving.", "A bus is arriving."),
            ("This is an image of a kitchen.", "A kitchen."),
            ("A photo of a street at night.", "A street at night."),
            ("The image is a close-up of a mug.", "A close-up of a mug."),
            (
                "This picture depicts two people talking.",
                "Two people talking.",
            ),
            ("The scene appears to show a park.", "A park."),
            ("  the photo features: a red car", "A red car"),
        ] {
            assert_eq!(strip_preamble(said), spoken, "{said}");
        }
    }

    #[test]
    fn other_text_is_left_alone() {
        for said in [
            "A man at a desk.",
            "Imagine a door ahead.",
            "The picture frame on the wall is crooked.",
            "The view from the window shows a garden.",
            "The image shows",
            "There is a photo of a dog on the fridge.",
            "",
            "Exit sign ahead, to the left.",
        ] {
            assert_eq!(strip_preamble(said), said, "{said}");
        }
    }
}
