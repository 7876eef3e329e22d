//! The engine against the reference goldens (transformers `fast_vlm` + timm `fastvit_mci3`, fp32),
//! for both checkpoint layouts, within the tolerances of the model design notes:
//! pixels ≤ 1/255 (Pillow path), vision / projector / hidden states ≤ 1e-4 relative,
//! logits ≤ 1e-3 absolute, greedy ids equal.

mod common;

use common::*;
use scenesay::model::{FastVlm, FeatureMap, GenerationParams, Precision};

const LAYOUTS: [&str; 2] = ["hf", "apple"];

/// Per-element tolerance of the vision stages, image features and projector output, besides the
/// relative error normalised by the tensor's maximum: every element within
/// `RTOL·|b| + ATOL·max|b|`. RTOL is the design's 1e-4; the floor ATOL (a fraction of the
/// tensor's largest value) only covers elements near zero, where f32 rounding of sums of large
/// terms dominates; bound 2e-5, five times tighter than the max-normalised check. A small channel
/// can no longer hide behind a large one. (The LLM's hidden states are held per token instead:
/// [`assert_per_token`].)
const RTOL: f32 = 1e-4;
const ATOL: f32 = 2e-5;

fn assert_elementwise(got: &[f32], want: &[f32], what: &str) {
    let atol = ATOL * max_abs(want);
    let (r, _) = worst_close(got, want, RTOL, atol);
    println!("{what}: worst element at {r:.3} of its tolerance");
    assert_close(got, want, RTOL, atol, what);
}

/// The LLM's hidden states `[tokens, hidden]`, token by token: every element within
/// `RTOL·|b| + RTOL·max|row of b|`, the design's 1e-4 relative applied to each token's own row.
/// Rows differ in scale by more than three orders of magnitude (image tokens reach ~600, text
/// tokens ~0.3 in the first states), so neither the tensor-wide error nor a floor taken from the
/// tensor's maximum says anything about the small rows. Measured per row, worst over every case
/// and layout: ≤ 1.3e-5 (embeddings and layer outputs), ≤ 4.9e-5 (the final-norm state, whose
/// rows come from sums of much larger values), on the scalar and AVX2 paths alike in kind.
fn assert_per_token(got: &[f32], want: &[f32], hidden: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        hidden > 0 && want.len().is_multiple_of(hidden),
        "{what}: rows"
    );
    // the ratio of a NaN is NaN, which no `>` comparison picks as the worst: refuse it first
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("{what}: element {i} is {}", got[i]);
    }
    let mut worst = (0f32, 0usize);
    for (t, (g, w)) in got.chunks(hidden).zip(want.chunks(hidden)).enumerate() {
        let (r, _) = worst_close(g, w, RTOL, RTOL * max_abs(w));
        if r > worst.0 {
            worst = (r, t);
        }
    }
    println!(
        "{what}: worst token {} at {:.3} of its tolerance",
        worst.1, worst.0
    );
    let t = worst.1;
    let (g, w) = (
        &got[t * hidden..(t + 1) * hidden],
        &want[t * hidden..(t + 1) * hidden],
    );
    assert_close(g, w, RTOL, RTOL * max_abs(w), &format!("{what}, token {t}"));
}

/// How many cases store the full set of tensors (pixel values, hidden states, all logits): those
/// at or below the index's `stored_full_up_to_res`.
fn full_cases() -> usize {
    let idx = index();
    let up_to = idx["stored_full_up_to_res"].as_u64().unwrap();
    let n = cases()
        .iter()
        .filter(|(_, c)| c["resolution"].as_u64().unwrap() <= up_to)
        .count();
    assert!(n >= 4, "only {n} cases store every tensor");
    n
}

fn load(layout: &str) -> FastVlm {
    FastVlm::load(&model_dir(layout), Precision::F32).unwrap_or_else(|e| panic!("{layout}: {e}"))
}

fn cases() -> Vec<(String, serde_json::Value)> {
    let idx = index();
    let mut v: Vec<_> = idx["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.clone(), c.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn pixels_of(m: &FastVlm, case: &serde_json::Value) -> FeatureMap {
    let img = load_image(case["image"].as_str().unwrap());
    m.preprocess(&img, case["resolution"].as_u64().unwrap() as u32)
        .unwrap()
}

/// The reference's own pixel values where the goldens store them (so model numerics are checked
/// independently of the ≤ 1/255 resize differences), else ours.
fn model_input(
    m: &FastVlm,
    case: &serde_json::Value,
    g: &std::collections::HashMap<String, candle_core::Tensor>,
) -> FeatureMap {
    match g.get("pixel_values") {
        Some(pv) => {
            let r = case["resolution"].as_u64().unwrap() as usize;
            FeatureMap::new(3, r, r, flat(pv))
        }
        None => pixels_of(m, case),
    }
}

/// Whether the model sees exactly the reference's pixels in this case: the goldens store them up
/// to 512 px; at 1024 px they were made from transformers' torch resize, which equals Pillow's
/// (what we implement, as Apple does) only where the index records no difference.
fn exact_input(case: &serde_json::Value) -> bool {
    case["resolution"].as_u64().unwrap() <= 512
        || case["max_abs_diff_pixel_values_vs_apple_pil"]
            .as_f64()
            .unwrap()
            == 0.0
}

/// 1e-4 relative (the design tolerance) on the reference's own pixels. Where our Pillow-exact
/// input differs from the reference's torch-resized input by up to 2 levels, the features
/// inherit that difference: measured 8e-4 (features) and 1.4e-3 (projector) on the 300×500
/// portrait at 1024 px; bound 2e-3.
fn feature_tolerance(case: &serde_json::Value) -> f32 {
    if exact_input(case) {
        1e-4
    } else {
        2e-3
    }
}

/// 1e-3 absolute on exact input; with the pixel difference above, 5e-3 (measured 3.2e-3).
fn logits_tolerance(case: &serde_json::Value) -> f32 {
    if exact_input(case) {
        1e-3
    } else {
        5e-3
    }
}

#[test]
fn pixel_values_equal_pillows_exactly() {
    // The preprocessing is Pillow's own arithmetic (fastvlm.md §5): every pixel value equals the
    // reference's Pillow path exactly; the torch-resize path differs by up to 2 levels.
    let m = load("hf");
    let mut checked = 0;
    for (name, case) in cases() {
        let g = golden(case["file"].as_str().unwrap());
        let Some(pil) = g.get("pixel_values_apple_pil") else {
            continue;
        };
        let px = pixels_of(&m, &case);
        let d_pil = max_abs_diff(&px.data, &flat(pil));
        let d_hf = max_abs_diff(&px.data, &flat(&g["pixel_values"]));
        println!(
            "{name}: pixels vs Pillow {:.6} ({:.2} levels), vs torch path {:.6}",
            d_pil,
            d_pil * 255.0,
            d_hf
        );
        assert_eq!(d_pil, 0.0, "{name}: not Pillow's values");
        assert!(d_hf <= 2.0 / 255.0 + 1e-6, "{name}: {d_hf}");
        checked += 1;
    }
    assert_eq!(checked, full_cases(), "cases with Pillow pixel goldens");
}

#[test]
fn every_vision_stage_matches_in_both_layouts() {
    let idx = index();
    let (case_name, case) = idx["cases"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, c)| c.get("vision_stages_file").is_some())
        .map(|(k, c)| (k.clone(), c.clone()))
        .unwrap();
    let stages = golden(case["vision_stages_file"].as_str().unwrap());
    let g = golden(case["file"].as_str().unwrap());
    // feed the reference pixels so the vision check is independent of the resize
    let pv = flat(&g["pixel_values"]);
    let r = case["resolution"].as_u64().unwrap() as usize;
    let pixels = FeatureMap::new(3, r, r, pv);
    for layout in LAYOUTS {
        let m = load(layout);
        let mut seen = std::collections::BTreeMap::new();
        m.vision_forward_with(&pixels, |name, fm| {
            seen.insert(name.to_string(), fm.clone());
        })
        .unwrap();
        for (name, want) in &stages {
            let got = seen
                .get(name)
                .unwrap_or_else(|| panic!("{layout}: no activation tapped for `{name}`"));
            assert_eq!(
                [got.c, got.h, got.w].to_vec(),
                want.dims()[1..].to_vec(),
                "{layout} {case_name} {name}: shape"
            );
            let e = rel_err(&got.data, &flat(want));
            println!("{layout} {name}: rel err {e:.2e}");
            assert!(e <= 1e-4, "{layout} {case_name} {name}: relative error {e}");
            assert_elementwise(
                &got.data,
                &flat(want),
                &format!("{layout} {case_name} {name}"),
            );
        }
        assert_eq!(
            seen.len(),
            stages.len(),
            "{layout}: tapped names {:?}",
            seen.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn image_features_and_projector_match_for_every_case_and_layout() {
    for layout in LAYOUTS {
        let m = load(layout);
        let mut nchw_checked = 0;
        for (name, case) in cases() {
            let g = golden(case["file"].as_str().unwrap());
            let enc = m.encode_pixels(&model_input(&m, &case, &g)).unwrap();
            if let Some(nchw) = g.get("vision_features_nchw") {
                let e = rel_err(&enc.features_nchw.data, &flat(nchw));
                assert!(e <= 1e-4, "{layout} {name} vision_features_nchw: {e}");
                assert_elementwise(
                    &enc.features_nchw.data,
                    &flat(nchw),
                    &format!("{layout} {name} vision_features_nchw"),
                );
                nchw_checked += 1;
            }
            let (feat, proj) = (flat(&enc.image_features), flat(&enc.projected));
            let (want_feat, want_proj) = (flat(&g["image_features"]), flat(&g["projector_output"]));
            let e_feat = rel_err(&feat, &want_feat);
            let e_proj = rel_err(&proj, &want_proj);
            println!("{layout} {name}: image_features {e_feat:.2e}, projector_output {e_proj:.2e}");
            let tol = feature_tolerance(&case);
            assert!(e_feat <= tol, "{layout} {name} image_features: {e_feat}");
            assert!(e_proj <= tol, "{layout} {name} projector_output: {e_proj}");
            if exact_input(&case) {
                assert_elementwise(
                    &feat,
                    &want_feat,
                    &format!("{layout} {name} image_features"),
                );
                assert_elementwise(
                    &proj,
                    &want_proj,
                    &format!("{layout} {name} projector_output"),
                );
            }
        }
        assert_eq!(
            nchw_checked,
            full_cases(),
            "{layout}: cases with vision_features_nchw"
        );
    }
}

#[test]
fn prompt_ids_match_the_reference_in_both_layouts() {
    let idx = index();
    let prompt = idx["prompt"].as_str().unwrap();
    for layout in LAYOUTS {
        let m = load(layout);
        let p = m.prompt_ids(prompt).unwrap();
        for (name, case) in cases() {
            let want = ids(&case["input_ids"]);
            let n = case["n_image_tokens"].as_u64().unwrap() as usize;
            let image_token = m.config.image_token_id.unwrap_or(703);
            assert_eq!(p.input_ids(image_token, n), want, "{layout} {name}");
        }
    }
}

#[test]
fn llm_hidden_states_logits_and_greedy_ids_match() {
    let idx = index();
    let prompt = idx["prompt"].as_str().unwrap().to_string();
    let n_gen = idx["n_generated"].as_u64().unwrap() as usize;
    for layout in LAYOUTS {
        let mut m = load(layout);
        let (mut hidden_checked, mut logits_checked) = (0, 0);
        for (name, case) in cases() {
            let g = golden(case["file"].as_str().unwrap());
            let enc = m.encode_pixels(&model_input(&m, &case, &g)).unwrap();
            let p = m.prompt_ids(&prompt).unwrap();
            let embeds = m.input_embeds(&p, &enc.projected).unwrap();
            let mut hidden_states = vec![];
            let hidden = m
                .prefill_with(&embeds, |_, h| hidden_states.push(flat(h)))
                .unwrap();
            if let Some(want) = g.get("llm_hidden_states") {
                let layers = want.dim(0).unwrap();
                assert_eq!(
                    hidden_states.len(),
                    layers,
                    "{layout} {name}: number of hidden states"
                );
                for (l, got) in hidden_states.iter().enumerate() {
                    let w = flat(&want.get(l).unwrap());
                    let e = rel_err(got, &w);
                    assert!(e <= 1e-4, "{layout} {name} hidden state {l}: {e}");
                    assert_per_token(
                        got,
                        &w,
                        want.dim(2).unwrap(),
                        &format!("{layout} {name} hidden state {l}"),
                    );
                }
                hidden_checked += 1;
            }
            if let Some(want) = g.get("logits_all") {
                let d = max_abs_diff(&flat(&m.logits(&hidden).unwrap()), &flat(want));
                assert!(d <= 1e-3, "{layout} {name} logits_all: {d}");
                logits_checked += 1;
            }
            let d = max_abs_diff(
                &flat(&m.last_logits(&hidden).unwrap()),
                &flat(&g["logits_last"]),
            );
            println!("{layout} {name}: logits_last max abs diff {d:.2e}");
            assert!(
                d <= logits_tolerance(&case),
                "{layout} {name} logits_last: {d}"
            );

            // the full generation path, with the KV cache
            let img = load_image(case["image"].as_str().unwrap());
            let params = GenerationParams {
                max_tokens: n_gen,
                ignore_eos: true,
                ..Default::default()
            };
            let mut streamed = String::new();
            let res = case["resolution"].as_u64().unwrap() as u32;
            let out = m
                .generate(
                    &img,
                    &prompt,
                    res,
                    &params,
                    &mut |t| streamed.push_str(t),
                    &|| false,
                )
                .unwrap();
            assert_eq!(
                out.token_ids,
                ids(&case["generated_ids"]),
                "{layout} {name}: greedy ids"
            );
            assert_eq!(
                streamed, out.text,
                "{layout} {name}: streamed text equals the final text"
            );
            assert_eq!(
                out.prompt_tokens,
                case["n_input_ids"].as_u64().unwrap() as usize
            );
        }
        assert_eq!(
            hidden_checked,
            full_cases(),
            "{layout}: cases with llm_hidden_states"
        );
        assert_eq!(
            logits_checked,
            full_cases(),
            "{layout}: cases with logits_all"
        );
    }
}

#[test]
fn generation_stops_on_eos_on_the_limit_and_on_cancel() {
    // EOS, on a copy of the fixture rewritten to emit <|im_end|> first: nothing is generated,
    // said or returned, and the flag says why
    for layout in LAYOUTS {
        let d = copy_model(layout);
        force_token(d.path(), 702);
        let mut forced = FastVlm::load(d.path(), Precision::F32).unwrap();
        let img = load_image("../images/landscape_640x480.png");
        let mut said = String::new();
        let out = forced
            .generate(
                &img,
                "Describe the image.",
                256,
                &GenerationParams {
                    max_tokens: 40,
                    ..Default::default()
                },
                &mut |t| said.push_str(t),
                &|| false,
            )
            .unwrap();
        assert!(out.stopped_on_eos, "{layout}: {:?}", out.token_ids);
        assert!(out.token_ids.is_empty() && out.text.is_empty() && said.is_empty());
    }
    // the golden greedy ids (made with EOS ignored) hold no end-of-turn id, so with EOS live the
    // same 12 come back and generation ends on the limit
    let mut m = load("hf");
    let img = load_image("../images/landscape_640x480.png");
    let idx = index();
    let (_, case) = cases()
        .into_iter()
        .find(|(n, _)| n == "landscape_640x480_r256")
        .unwrap();
    let want = ids(&case["generated_ids"]);
    assert!(want.iter().all(|t| !m.stop_token_ids().contains(t)));
    let out = m
        .generate(
            &img,
            idx["prompt"].as_str().unwrap(),
            256,
            &GenerationParams {
                max_tokens: want.len(),
                ..Default::default()
            },
            &mut |_| {},
            &|| false,
        )
        .unwrap();
    assert_eq!(out.token_ids, want);
    assert!(!out.stopped_on_eos);
    // limit
    let params = GenerationParams {
        max_tokens: 3,
        ignore_eos: true,
        ..Default::default()
    };
    let out = m
        .generate(
            &img,
            "Describe the image.",
            256,
            &params,
            &mut |_| {},
            &|| false,
        )
        .unwrap();
    assert_eq!(out.token_ids.len(), 3);
    assert!(!out.cancelled);
    // cancel after two tokens (the encoder polls `cancel` before its stem and after every block;
    // the picture is encoded anew rather than recalled from the runs above)
    m.forget_encoding();
    let encoder_polls = 1 + m.config.vision.layers.iter().sum::<usize>();
    let count = std::cell::Cell::new(0);
    let params = GenerationParams {
        max_tokens: 12,
        ignore_eos: true,
        ..Default::default()
    };
    let out = m
        .generate(
            &img,
            "Describe the image.",
            256,
            &params,
            &mut |_| {},
            &|| {
                count.set(count.get() + 1);
                count.get() > encoder_polls + 2
            },
        )
        .unwrap();
    assert!(out.cancelled);
    assert_eq!(out.token_ids.len(), 2);
}

#[test]
fn bf16_and_f16_agree_with_f32() {
    // Agreement with the fp32 model, teacher-forced over the golden sequence (prompt + the 12
    // greedy tokens) of the 256-px cases, so one early difference does not compound: top-1
    // agreement per position and cosine of the last logits. Stated levels (this random tiny model
    // has top-1 margins as small as 0.003, so they are far below what real weights give).
    // Measured (weights stored in bf16 / f16, arithmetic in f32): bf16 95.4 % top-1, worst
    // cosine 0.9993; f16 100 %, 0.99999.
    // Asserted: bf16 ≥ 88 % and ≥ 0.97; f16 ≥ 93 % and ≥ 0.9999.
    let idx = index();
    let prompt = idx["prompt"].as_str().unwrap().to_string();
    let mut f32m = load("hf");
    for (precision, min_top1, min_cos) in [
        (Precision::Bf16, 0.88, 0.97),
        (Precision::F16, 0.93, 0.9999),
    ] {
        let mut lo = FastVlm::load(&model_dir("hf"), precision).unwrap();
        let (mut agree, mut total) = (0, 0);
        let mut worst_cos = 1.0f64;
        for (_, case) in cases() {
            if case["resolution"].as_u64().unwrap() != 256 {
                continue;
            }
            let img = load_image(case["image"].as_str().unwrap());
            let gen = ids(&case["generated_ids"]);
            let argmax = |m: &mut FastVlm| {
                let enc = m.encode_pixels(&m.preprocess(&img, 256).unwrap()).unwrap();
                let mut p = m.prompt_ids(&prompt).unwrap();
                p.after.extend(&gen);
                let e = m.input_embeds(&p, &enc.projected).unwrap();
                let h = m.prefill_with(&e, |_, _| {}).unwrap();
                let logits = m.logits(&h).unwrap();
                let top: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
                (top, flat(&m.last_logits(&h).unwrap()))
            };
            let (want, want_last) = argmax(&mut f32m);
            let (got, got_last) = argmax(&mut lo);
            agree += got.iter().zip(&want).filter(|(a, b)| a == b).count();
            total += want.len();
            worst_cos = worst_cos.min(cosine(&got_last, &want_last));
        }
        let rate = agree as f64 / total as f64;
        println!("{precision:?}: teacher-forced top-1 agreement {agree}/{total} = {rate:.3}, worst cosine {worst_cos:.6}");
        assert!(rate >= min_top1, "{precision:?}: top-1 agreement {rate}");
        assert!(worst_cos >= min_cos, "{precision:?}: cosine {worst_cos}");
    }
}
