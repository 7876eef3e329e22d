//! Wording fixes applied to what the model says before it is spoken: a blind user is not looking
//! at "an image", so openings such as "The image shows", "In this picture," or "A photo of" are
//! cut ("The image shows a man at a desk." → "A man at a desk."). Pure: text in, text out.
//!
//! Also the built-in prompt sets, one per narration language ([`prompts`]): what the model is
//! asked, in the language it should answer in, and the cue said when a request begins.

/// What the model is asked, and the acknowledgement cue, in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompts {
    pub scene: &'static str,
    pub brief: &'static str,
    pub detail: &'static str,
    /// Contains `{previous}`, where the last description said goes.
    pub changed: &'static str,
    pub read: &'static str,
    /// Said the moment a request begins.
    pub acknowledge: &'static str,
}

const EN: Prompts = Prompts {
    scene: "In one short sentence, tell a blind person what is in front of them: the main thing first, where it is (left, right or ahead), and any sign or text in view.",
    brief: "In a few words, name the main thing in front of a blind person and where it is: left, right or ahead.",
    detail: "Describe this view for a blind person, briefly and concretely: the main objects and where they are (left, right, ahead, near or far), any people and what they are doing, and read out any text.",
    changed: "A moment ago a blind person was told: \"{previous}\" Look at the view now and tell them in one or two short sentences only what is different: what appeared, what is gone, what moved (left, right, ahead). If nothing is different, say: Nothing has changed.",
    read: "Read out all the text in view, exactly as written, from top to bottom and left to right. If there is no text, say: No text in view.",
    acknowledge: "Looking.",
};

const ZH: Prompts = Prompts {
    scene: "请用一句简短的中文告诉一位盲人他面前有什么：先说最主要的东西，说明它在哪里（左边、右边或前方），并读出看到的标志或文字。",
    brief: "请用几个中文词语说出盲人面前最主要的东西以及它的位置：左边、右边或前方。",
    detail: "请用中文为一位盲人简洁而具体地描述这个画面：主要物体及其位置（左边、右边、前方、近处或远处），有没有人以及他们在做什么，并读出所有文字。",
    changed: "刚才有人告诉一位盲人：“{previous}” 现在请看画面，用一两句简短的中文只告诉他有什么不同：出现了什么，什么不见了，什么移动了（左边、右边、前方）。如果没有变化，就说：没有变化。",
    read: "请按原样读出画面中的所有文字，从上到下、从左到右。如果没有文字，就说：画面中没有文字。",
    acknowledge: "正在看。",
};

const DE: Prompts = Prompts {
    scene: "Sag einem blinden Menschen in einem kurzen deutschen Satz, was vor ihm ist: zuerst das Wichtigste, wo es ist (links, rechts oder vorne), und jedes Schild oder jeden Text im Bild.",
    brief: "Nenne einem blinden Menschen auf Deutsch in wenigen Worten das Wichtigste vor ihm und wo es ist: links, rechts oder vorne.",
    detail: "Beschreibe diese Ansicht für einen blinden Menschen auf Deutsch, kurz und konkret: die wichtigsten Dinge und wo sie sind (links, rechts, vorne, nah oder fern), Personen und was sie tun, und lies jeden Text vor.",
    changed: "Eben wurde einem blinden Menschen gesagt: \"{previous}\" Sieh dir die Ansicht jetzt an und sag ihm auf Deutsch in ein oder zwei kurzen Sätzen nur, was anders ist: was dazugekommen ist, was fehlt, was sich bewegt hat (links, rechts, vorne). Wenn nichts anders ist, sag: Nichts hat sich verändert.",
    read: "Lies den ganzen Text im Bild genau so vor, wie er geschrieben ist, von oben nach unten und von links nach rechts. Wenn es keinen Text gibt, sag: Kein Text im Bild.",
    acknowledge: "Ich schaue.",
};

const ES: Prompts = Prompts {
    scene: "En una frase corta en español, dile a una persona ciega qué tiene delante: primero lo principal, dónde está (a la izquierda, a la derecha o delante) y cualquier cartel o texto visible.",
    brief: "En pocas palabras en español, nombra lo principal que tiene delante una persona ciega y dónde está: a la izquierda, a la derecha o delante.",
    detail: "Describe esta vista en español para una persona ciega, de forma breve y concreta: los objetos principales y dónde están (izquierda, derecha, delante, cerca o lejos), las personas y qué hacen, y lee cualquier texto.",
    changed: "Hace un momento se le dijo a una persona ciega: \"{previous}\" Mira la vista ahora y dile en español, en una o dos frases cortas, solo qué ha cambiado: qué apareció, qué desapareció, qué se movió (izquierda, derecha, delante). Si nada ha cambiado, di: Nada ha cambiado.",
    read: "Lee todo el texto visible, exactamente como está escrito, de arriba abajo y de izquierda a derecha. Si no hay texto, di: No hay texto a la vista.",
    acknowledge: "Mirando.",
};

const FR: Prompts = Prompts {
    scene: "En une courte phrase en français, dis à une personne aveugle ce qui se trouve devant elle : d'abord l'essentiel, où il est (à gauche, à droite ou devant), et tout panneau ou texte visible.",
    brief: "En quelques mots en français, nomme l'essentiel devant une personne aveugle et où il se trouve : à gauche, à droite ou devant.",
    detail: "Décris cette vue en français pour une personne aveugle, brièvement et concrètement : les principaux objets et où ils sont (à gauche, à droite, devant, près ou loin), les personnes et ce qu'elles font, et lis tout texte.",
    changed: "Il y a un instant, on a dit à une personne aveugle : « {previous} » Regarde la vue maintenant et dis-lui en français, en une ou deux phrases courtes, seulement ce qui a changé : ce qui est apparu, ce qui a disparu, ce qui a bougé (à gauche, à droite, devant). Si rien n'a changé, dis : Rien n'a changé.",
    read: "Lis tout le texte visible, exactement tel qu'il est écrit, de haut en bas et de gauche à droite. S'il n'y a pas de texte, dis : Aucun texte visible.",
    acknowledge: "Je regarde.",
};

/// The prompts that say where things are, asking for clock-face directions ("a cup at 2
/// o'clock", 12 o'clock straight ahead) instead of left, right and ahead
/// (`[describe] positions = "clock"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockPrompts {
    pub scene: &'static str,
    pub brief: &'static str,
    pub detail: &'static str,
    /// Contains `{previous}`.
    pub changed: &'static str,
}

const EN_CLOCK: ClockPrompts = ClockPrompts {
    scene: "In one short sentence, tell a blind person what is in front of them: the main thing first, where it is as a clock-face direction (12 o'clock is straight ahead, 3 o'clock to the right, 9 o'clock to the left), and any sign or text in view.",
    brief: "In a few words, name the main thing in front of a blind person and its clock-face direction, such as \"a door at 2 o'clock\" (12 o'clock is straight ahead).",
    detail: "Describe this view for a blind person, briefly and concretely: the main objects and where they are as clock-face directions (12 o'clock straight ahead, 3 o'clock right, 9 o'clock left, e.g. \"a cup at 2 o'clock, near\"), near or far, any people and what they are doing, and read out any text.",
    changed: "A moment ago a blind person was told: \"{previous}\" Look at the view now and tell them in one or two short sentences only what is different: what appeared, what is gone, what moved, with clock-face directions (12 o'clock is straight ahead, 3 o'clock right, 9 o'clock left). If nothing is different, say: Nothing has changed.",
};

const ZH_CLOCK: ClockPrompts = ClockPrompts {
    scene: "请用一句简短的中文告诉一位盲人他面前有什么：先说最主要的东西，用钟点方向说明它在哪里（12点钟是正前方，3点钟是右边，9点钟是左边），并读出看到的标志或文字。",
    brief: "请用几个中文词语说出盲人面前最主要的东西以及它的钟点方向，例如“2点钟方向有一扇门”（12点钟是正前方）。",
    detail: "请用中文为一位盲人简洁而具体地描述这个画面：主要物体及其钟点方向（12点钟是正前方，3点钟是右边，9点钟是左边，例如“2点钟方向近处有一个杯子”）和远近，有没有人以及他们在做什么，并读出所有文字。",
    changed: "刚才有人告诉一位盲人：“{previous}” 现在请看画面，用一两句简短的中文只告诉他有什么不同：出现了什么，什么不见了，什么移动了，用钟点方向说明位置（12点钟是正前方，3点钟是右边，9点钟是左边）。如果没有变化，就说：没有变化。",
};

const DE_CLOCK: ClockPrompts = ClockPrompts {
    scene: "Sag einem blinden Menschen in einem kurzen deutschen Satz, was vor ihm ist: zuerst das Wichtigste, wo es ist als Uhrzeit-Richtung (12 Uhr ist geradeaus, 3 Uhr rechts, 9 Uhr links), und jedes Schild oder jeden Text im Bild.",
    brief: "Nenne einem blinden Menschen auf Deutsch in wenigen Worten das Wichtigste vor ihm und seine Uhrzeit-Richtung, etwa \"eine Tür auf 2 Uhr\" (12 Uhr ist geradeaus).",
    detail: "Beschreibe diese Ansicht für einen blinden Menschen auf Deutsch, kurz und konkret: die wichtigsten Dinge und wo sie sind als Uhrzeit-Richtung (12 Uhr geradeaus, 3 Uhr rechts, 9 Uhr links, etwa \"eine Tasse auf 2 Uhr, nah\"), nah oder fern, Personen und was sie tun, und lies jeden Text vor.",
    changed: "Eben wurde einem blinden Menschen gesagt: \"{previous}\" Sieh dir die Ansicht jetzt an und sag ihm auf Deutsch in ein oder zwei kurzen Sätzen nur, was anders ist: was dazugekommen ist, was fehlt, was sich bewegt hat, mit Uhrzeit-Richtungen (12 Uhr ist geradeaus, 3 Uhr rechts, 9 Uhr links). Wenn nichts anders ist, sag: Nichts hat sich verändert.",
};

const ES_CLOCK: ClockPrompts = ClockPrompts {
    scene: "En una frase corta en español, dile a una persona ciega qué tiene delante: primero lo principal, dónde está según las horas del reloj (las 12 es justo delante, las 3 a la derecha, las 9 a la izquierda) y cualquier cartel o texto visible.",
    brief: "En pocas palabras en español, nombra lo principal que tiene delante una persona ciega y su dirección según las horas del reloj, por ejemplo \"una puerta a las 2\" (las 12 es justo delante).",
    detail: "Describe esta vista en español para una persona ciega, de forma breve y concreta: los objetos principales y dónde están según las horas del reloj (las 12 justo delante, las 3 a la derecha, las 9 a la izquierda, por ejemplo \"una taza a las 2, cerca\"), cerca o lejos, las personas y qué hacen, y lee cualquier texto.",
    changed: "Hace un momento se le dijo a una persona ciega: \"{previous}\" Mira la vista ahora y dile en español, en una o dos frases cortas, solo qué ha cambiado: qué apareció, qué desapareció, qué se movió, con direcciones según las horas del reloj (las 12 es justo delante, las 3 a la derecha, las 9 a la izquierda). Si nada ha cambiado, di: Nada ha cambiado.",
};

const FR_CLOCK: ClockPrompts = ClockPrompts {
    scene: "En une courte phrase en français, dis à une personne aveugle ce qui se trouve devant elle : d'abord l'essentiel, sa direction en heures d'horloge (midi droit devant, 3 heures à droite, 9 heures à gauche), et tout panneau ou texte visible.",
    brief: "En quelques mots en français, nomme l'essentiel devant une personne aveugle et sa direction en heures d'horloge, par exemple « une porte à 2 heures » (midi est droit devant).",
    detail: "Décris cette vue en français pour une personne aveugle, brièvement et concrètement : les principaux objets et leur direction en heures d'horloge (midi droit devant, 3 heures à droite, 9 heures à gauche, par exemple « une tasse à 2 heures, tout près »), près ou loin, les personnes et ce qu'elles font, et lis tout texte.",
    changed: "Il y a un instant, on a dit à une personne aveugle : « {previous} » Regarde la vue maintenant et dis-lui en français, en une ou deux phrases courtes, seulement ce qui a changé : ce qui est apparu, ce qui a disparu, ce qui a bougé, avec des directions en heures d'horloge (midi droit devant, 3 heures à droite, 9 heures à gauche). Si rien n'a changé, dis : Rien n'a changé.",
};

/// The clock-face variants of `language`'s prompts (as [`prompts`] picks the language).
pub fn clock_prompts(language: &str) -> Option<&'static ClockPrompts> {
    let primary = language
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match primary.as_str() {
        "" | "en" => Some(&EN_CLOCK),
        "zh" => Some(&ZH_CLOCK),
        "de" => Some(&DE_CLOCK),
        "es" => Some(&ES_CLOCK),
        "fr" => Some(&FR_CLOCK),
        _ => None,
    }
}

/// The built-in prompt set for `language` ("zh", "zh-CN", "de_DE" …; empty = English); `None` for
/// a language without one.
pub fn prompts(language: &str) -> Option<&'static Prompts> {
    let primary = language
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match primary.as_str() {
        "" | "en" => Some(&EN),
        "zh" => Some(&ZH),
        "de" => Some(&DE),
        "es" => Some(&ES),
        "fr" => Some(&FR),
        _ => None,
    }
}

/// The languages with a built-in prompt set.
pub const LANGUAGES: &[&str] = &["en", "zh", "de", "es", "fr"];

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
    fn every_language_has_a_complete_prompt_set() {
        for lang in LANGUAGES {
            let p = prompts(lang).unwrap();
            for text in [p.scene, p.brief, p.detail, p.changed, p.read, p.acknowledge] {
                assert!(!text.trim().is_empty(), "{lang}");
            }
            assert!(p.changed.contains("{previous}"), "{lang}");
            if *lang != "en" {
                assert_ne!(p.scene, EN.scene, "{lang}");
            }
        }
        assert_eq!(prompts("zh-CN"), prompts("zh"));
        assert_eq!(prompts("de_AT"), prompts("de"));
        assert_eq!(prompts(""), Some(&EN));
        assert_eq!(prompts("tlh"), None);
        assert!(prompts("zh").unwrap().scene.contains("中文"));
    }

    #[test]
    fn every_language_has_clock_face_variants_of_its_position_prompts() {
        // the word each language uses for the hour on the clock face
        let hour = [
            ("en", "o'clock"),
            ("zh", "点钟"),
            ("de", "Uhr"),
            ("es", "las 12"),
            ("fr", "heures"),
        ];
        assert_eq!(hour.len(), LANGUAGES.len());
        for (lang, word) in hour {
            let p = prompts(lang).unwrap();
            let c = clock_prompts(lang).unwrap();
            for (side, clock) in [
                (p.scene, c.scene),
                (p.brief, c.brief),
                (p.detail, c.detail),
                (p.changed, c.changed),
            ] {
                assert_ne!(side, clock, "{lang}");
                assert!(clock.contains(word), "{lang}: {clock}");
                assert!(!side.contains(word), "{lang}: {side}");
            }
            assert!(c.changed.contains("{previous}"), "{lang}");
            if lang != "en" {
                assert_ne!(c.scene, EN_CLOCK.scene, "{lang}");
            }
        }
        assert_eq!(clock_prompts("fr_CA"), clock_prompts("fr"));
        assert_eq!(clock_prompts("tlh"), None);
    }

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
