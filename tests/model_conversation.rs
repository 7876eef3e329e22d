//! Follow-up questions on the tiny fixture models: a follow-up that reuses the KV cache of the
//! conversation (system prompt, image, earlier turns) gives exactly what a fresh run over the whole
//! multi-turn ChatML prompt gives, and the ids it appends are what that prompt tokenises to.

mod common;

use common::*;
use scenesay::model::prompt::{chat_prompt_turns, follow_up_ids, PromptIds, IMAGE_MARKER};
use scenesay::model::{stop_token_ids, FastVlm, GenerationParams, Precision};

const LAYOUTS: [&str; 2] = ["apple", "hf"];
const RES: u32 = 256;

fn load(layout: &str) -> FastVlm {
    FastVlm::load(&model_dir(layout), Precision::F32).unwrap_or_else(|e| panic!("{e}"))
}

fn params(max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        ..Default::default()
    }
}

#[test]
fn the_appended_ids_are_what_the_whole_multi_turn_prompt_tokenises_to() {
    for layout in LAYOUTS {
        let m = load(layout);
        let tok = m.tokenizer().unwrap();
        let turns = [
            ("What is on the table?", "A red mug, near, at 2 o'clock."),
            ("Is it full?", " It looks empty.\nNothing inside"),
        ];
        let next = "What colour is the handle?";
        let text = chat_prompt_turns(&turns, next);
        assert_eq!(text.matches(IMAGE_MARKER).count(), 1, "{text}");
        assert_eq!(text.matches("<|im_start|>system").count(), 1, "{text}");
        let (a, b) = text.split_once(IMAGE_MARKER).unwrap();
        // the reference: the whole text, control tokens live, around the image
        let whole = tok.encode(b).unwrap();
        // the pieces: the first turn as a fresh prompt, then each answer and follow-up
        let first = PromptIds::new(tok, turns[0].0).unwrap();
        assert_eq!(first.before, tok.encode(a).unwrap(), "{layout}");
        let mut pieces = first.after.clone();
        pieces.extend(tok.encode_plain(turns[0].1).unwrap());
        pieces.extend(follow_up_ids(tok, turns[1].0).unwrap());
        pieces.extend(tok.encode_plain(turns[1].1).unwrap());
        pieces.extend(follow_up_ids(tok, next).unwrap());
        assert_eq!(pieces, whole, "{layout}");
        // what a user types stays text
        let typed = follow_up_ids(tok, "<|im_end|> hi").unwrap();
        let im_end = tok.token_to_id("<|im_end|>").unwrap();
        assert_eq!(
            typed.iter().filter(|&&t| t == im_end).count(),
            2,
            "{layout}"
        );
    }
}

/// Greedy decoding over the whole conversation from an empty cache, as a fresh ask would do it.
fn fresh_run(
    m: &mut FastVlm,
    image: &image::RgbImage,
    turns: &[(String, String)],
    question: &str,
    max_tokens: usize,
) -> (Vec<u32>, usize) {
    let tok = m.tokenizer().unwrap();
    let first = PromptIds::new(tok, &turns[0].0).unwrap();
    let mut after = first.after.clone();
    for (i, (_, answer)) in turns.iter().enumerate() {
        after.extend(tok.encode_plain(answer).unwrap());
        let q = turns.get(i + 1).map_or(question, |t| t.0.as_str());
        after.extend(follow_up_ids(tok, q).unwrap());
    }
    let prompt = PromptIds {
        before: first.before,
        after,
    };
    let stops = stop_token_ids(&m.config, m.tokenizer());
    let enc = m.encode_pixels(&m.preprocess(image, RES).unwrap()).unwrap();
    let embeds = m.input_embeds(&prompt, &enc.projected).unwrap();
    let prompt_len = embeds.dim(1).unwrap();
    let mut h = m.prefill(&embeds).unwrap();
    let mut ids = vec![];
    while ids.len() < max_tokens {
        let logits = flat(&m.last_logits(&h).unwrap());
        let next = logits
            .iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |b, (i, v)| if *v > b.1 { (i, *v) } else { b },
            )
            .0 as u32;
        if stops.contains(&next) {
            break;
        }
        ids.push(next);
        if ids.len() == max_tokens {
            break;
        }
        h = m.extend(&m.token_embeds(&[next]).unwrap()).unwrap();
    }
    (ids, prompt_len)
}

#[test]
fn a_follow_up_on_the_kept_cache_equals_a_fresh_run_over_the_whole_conversation() {
    let questions = [
        "Describe the image.",
        "What is on the left?",
        "And what colour is it?",
        "Is there any text?",
    ];
    let mut rewritten = 0;
    for layout in LAYOUTS {
        for (img, max) in [("landscape_640x480", 8), ("portrait_300x500", 5)] {
            let image = load_image(&format!("../images/{img}.png"));
            let mut m = load(layout);
            let mut reference = load(layout);
            let g = m
                .generate(
                    &image,
                    questions[0],
                    RES,
                    &params(max),
                    &mut |_| {},
                    &|| false,
                )
                .unwrap();
            assert_eq!(m.conversation_turns(), 1);
            let first_prompt = g.prompt_tokens;
            let tok = m.tokenizer().unwrap();
            let mut turns = vec![(questions[0].to_string(), tok.decode(&g.token_ids).unwrap())];
            let mut last = g.token_ids;
            for (k, q) in questions[1..].iter().enumerate() {
                let tok = m.tokenizer().unwrap();
                if tok.encode_plain(&turns.last().unwrap().1).unwrap() != last {
                    // the model's own ids are not how its text tokenises: the cache was cut
                    // back and the text run again
                    rewritten += 1;
                }
                let mut streamed = String::new();
                let f = m
                    .follow_up(q, &params(max), &mut |t| streamed.push_str(t), &|| false)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{layout} {img}: no conversation to follow up"));
                let (want, whole) = fresh_run(&mut reference, &image, &turns, q, max);
                assert_eq!(f.token_ids, want, "{layout} {img}: follow-up {}", k + 1);
                assert_eq!(f.text, streamed);
                assert!(f.reused_encoding && f.timings.vision_ms == 0.0);
                assert_eq!(m.conversation_turns(), k + 2);
                // only the new turn was run: fewer tokens than the whole prompt's text alone
                assert!(
                    f.prompt_tokens <= whole - first_prompt,
                    "{layout}: {} new tokens of {whole}",
                    f.prompt_tokens
                );
                assert!(
                    reference.conversation_room().is_none(),
                    "a prefill holds no conversation"
                );
                let tok = m.tokenizer().unwrap();
                turns.push((q.to_string(), tok.decode(&f.token_ids).unwrap()));
                last = f.token_ids;
            }
        }
    }
    eprintln!("answers whose ids were not their text's tokenisation: {rewritten}");
    // the fixtures' random answers include such cases, so the cut-back path is checked too
    assert!(rewritten > 0);
}

#[test]
fn the_conversation_ends_when_the_model_is_used_otherwise_or_is_full() {
    let image = load_image("../images/landscape_640x480.png");
    let mut m = load("hf");
    let ask = |m: &mut FastVlm, max: usize| {
        m.follow_up("And then?", &params(max), &mut |_| {}, &|| false)
            .unwrap()
    };
    // nothing to follow up yet
    assert!(ask(&mut m, 4).is_none());
    m.generate(
        &image,
        "Describe the image.",
        RES,
        &params(4),
        &mut |_| {},
        &|| false,
    )
    .unwrap();
    let (used, limit) = m.conversation_room().unwrap();
    assert!(used > 16 && limit >= used);
    assert!(ask(&mut m, 4).is_some());
    assert!(m.conversation_room().unwrap().0 > used);
    // ended on request
    m.end_conversation();
    assert_eq!(m.conversation_turns(), 0);
    assert!(ask(&mut m, 4).is_none());
    // a new description is a new conversation; running the model otherwise ends it
    m.generate(
        &image,
        "Describe the image.",
        RES,
        &params(4),
        &mut |_| {},
        &|| false,
    )
    .unwrap();
    let e = m.token_embeds(&[5]).unwrap();
    m.extend(&e).unwrap();
    assert!(ask(&mut m, 4).is_none());
    // an answer that would not fit in the context: no follow-up, and the conversation is over
    m.generate(
        &image,
        "Describe the image.",
        RES,
        &params(4),
        &mut |_| {},
        &|| false,
    )
    .unwrap();
    let (_, limit) = m.conversation_room().unwrap();
    assert!(ask(&mut m, limit).is_none());
    assert_eq!(m.conversation_turns(), 0);
    assert!(ask(&mut m, 4).is_none());
}
