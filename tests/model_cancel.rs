//! Cancelling a description reaches into the image encoder: `cancel` is polled between the
//! encoder's blocks as well as before every token, so a detail request or a shutdown does not wait
//! for a whole high-resolution encoding. An abandoned encoding leaves the model as it was: the next
//! description is identical to one made before it. And a picture just encoded (the daemon's scene
//! watch embeds the frame it then describes) is not encoded again.

mod common;

use std::cell::Cell;

use common::*;
use scenesay::model::{FastVlm, Generation, GenerationParams, Precision};

const TOKENS: usize = 4;

/// Generates with a `cancel` that answers true from its `stop_at`-th call on (never when 0);
/// returns the generation, how often `cancel` was asked, and the streamed text.
fn run(m: &mut FastVlm, stop_at: usize) -> (Generation, usize, String) {
    let img = load_image("../images/landscape_640x480.png");
    let params = GenerationParams {
        max_tokens: TOKENS,
        ignore_eos: true,
        ..GenerationParams::default()
    };
    // encode every time: this test is about the encoder pass
    m.forget_encoding();
    let calls = Cell::new(0usize);
    let cancel = || {
        calls.set(calls.get() + 1);
        stop_at != 0 && calls.get() >= stop_at
    };
    let mut streamed = String::new();
    let g = m
        .generate(
            &img,
            "Describe the image.",
            512,
            &params,
            &mut |t| streamed.push_str(t),
            &cancel,
        )
        .unwrap();
    (g, calls.get(), streamed)
}

#[test]
fn cancel_stops_the_encoder_between_blocks_and_leaves_the_model_intact() {
    for layout in ["apple", "hf"] {
        let mut m = FastVlm::load(&model_dir(layout), Precision::F32).unwrap();
        let (full, polls, text) = run(&mut m, 0);
        assert!(!full.cancelled);
        assert_eq!(full.token_ids.len(), TOKENS, "{layout}");
        assert!(!text.is_empty(), "{layout}: nothing streamed");
        // one poll before each token, the rest while encoding (before the stem + after each block)
        let encoder_polls = polls - TOKENS;
        let blocks: usize = m.config.vision.layers.iter().sum();
        assert_eq!(encoder_polls, 1 + blocks, "{layout}: {polls} polls in all");

        // cancelled at every point of the encoding: nothing generated, nothing said
        for stop_at in 1..=encoder_polls {
            let (g, asked, text) = run(&mut m, stop_at);
            assert!(g.cancelled, "{layout}: stop at poll {stop_at}");
            assert!(g.token_ids.is_empty() && g.text.is_empty() && text.is_empty());
            assert_eq!(asked, stop_at, "{layout}: work went on after cancel");
            assert_eq!(
                g.timings.prefill_ms, 0.0,
                "{layout}: prefill ran after cancel"
            );
        }
        // cancelled during decoding: the tokens before it
        let (g, _, _) = run(&mut m, encoder_polls + 3);
        assert!(g.cancelled);
        assert_eq!(g.token_ids, full.token_ids[..2], "{layout}");

        // the abandoned encodings left no trace
        let (again, _, text_again) = run(&mut m, 0);
        assert_eq!(again.token_ids, full.token_ids, "{layout}");
        assert_eq!(text_again, text, "{layout}");
    }
}

#[test]
fn the_picture_just_encoded_is_described_without_encoding_it_again() {
    let img = load_image("../images/landscape_640x480.png");
    let other = load_image("../images/portrait_300x500.png");
    let params = GenerationParams {
        max_tokens: TOKENS,
        ignore_eos: true,
        ..GenerationParams::default()
    };
    let describe = |m: &mut FastVlm, image: &image::RgbImage, res: u32| {
        m.generate(
            image,
            "Describe the image.",
            res,
            &params,
            &mut |_| {},
            &|| false,
        )
        .unwrap()
    };
    for layout in ["apple", "hf"] {
        let mut fresh = FastVlm::load(&model_dir(layout), Precision::F32).unwrap();
        let want = describe(&mut fresh, &img, 256);
        assert!(
            !want.reused_encoding,
            "{layout}: a new model remembers nothing"
        );

        let mut m = FastVlm::load(&model_dir(layout), Precision::F32).unwrap();
        let scene = m.scene_embedding(&img, 256).unwrap();
        let got = describe(&mut m, &img, 256);
        assert!(
            got.reused_encoding,
            "{layout}: the embedded frame was encoded again"
        );
        assert_eq!(got.token_ids, want.token_ids, "{layout}");
        assert_eq!(got.timings.vision_ms, 0.0);
        // and the other way round: the described picture's embedding is the one computed anew
        let again = m.scene_embedding(&img, 256).unwrap();
        assert_eq!(again.embedding, scene.embedding, "{layout}");

        // another resolution, another picture, one pixel changed: encoded anew
        assert!(
            !describe(&mut m, &img, 512).reused_encoding,
            "{layout}: resolution"
        );
        assert!(describe(&mut m, &img, 512).reused_encoding, "{layout}");
        assert!(
            !describe(&mut m, &other, 512).reused_encoding,
            "{layout}: picture"
        );
        let mut touched = other.clone();
        touched.get_pixel_mut(0, 0).0[0] ^= 1;
        assert!(
            !describe(&mut m, &touched, 512).reused_encoding,
            "{layout}: one pixel"
        );
        m.forget_encoding();
        assert!(
            !describe(&mut m, &touched, 512).reused_encoding,
            "{layout}: forgotten"
        );
    }
}

#[test]
fn the_encoders_buffer_pool_does_not_grow_from_encode_to_encode() {
    // Every encoder pass borrows its activation buffers from a pool and gives them back; the
    // final one leaves as the image features. The pool must hold the same buffers after every
    // pass — completed, cancelled, at another resolution — or a daemon encoding a frame a second
    // grows it (and slows down) for as long as it runs. 10 000 passes with SCENESAY_HEAVY_TESTS=1.
    let heavy = std::env::var("SCENESAY_HEAVY_TESTS").is_ok_and(|v| v == "1");
    let passes = if heavy { 10_000 } else { 1_000 };
    let m = FastVlm::load(&model_dir("hf"), Precision::F32).unwrap();
    let img = load_image("../images/landscape_640x480.png");
    let small = m.preprocess(&img, 64).unwrap();
    let large = m.preprocess(&img, 128).unwrap();
    let cancelled = |m: &FastVlm, polls: usize| {
        let n = std::cell::Cell::new(0);
        let stop = || {
            n.set(n.get() + 1);
            n.get() > polls
        };
        assert!(m.encode_pixels_until(&small, &stop).unwrap().is_none());
    };
    // one round of everything, twice, to fill the pool
    let round = |m: &FastVlm, i: usize| {
        m.encode_pixels(&small).unwrap();
        if i.is_multiple_of(10) {
            m.encode_pixels(&large).unwrap();
        }
        if i.is_multiple_of(7) {
            cancelled(m, 1 + i % 5);
        }
    };
    // a cancelled pass keeps its last buffer, a completed one hands it out: the count moves by
    // one between kinds of pass, so the bound is the most seen over two full cycles (70 rounds)
    let mut settled = 0;
    for i in 0..140 {
        round(&m, i);
        settled = settled.max(m.vision().pool_buffers());
    }
    assert!(settled > 0);
    for i in 0..passes {
        round(&m, i);
        let n = m.vision().pool_buffers();
        assert!(
            n <= settled,
            "after {i} more passes the pool holds {n} entries, more than {settled}"
        );
    }
}
