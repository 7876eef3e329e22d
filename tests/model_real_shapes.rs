//! The language model at the real shapes of FastVLM-1.5B (Qwen2-1.5B: hidden 1536, 12 query /
//! 2 key-value heads of 128, MLP 8960, tied embeddings) and FastVLM-7B (Qwen2-7B: hidden 3584,
//! 28 / 4 heads of 128, MLP 18944, untied `lm_head`), with small random weights: one or two layers
//! and a reduced vocabulary, stored in bf16 across a 4-shard `model.safetensors.index.json` as the
//! 7B checkpoint ships. The image tower is the tiny fixture's. Every position's logits are compared
//! with a plain f64 implementation of Qwen2 written from its definition (RMSNorm, q/k/v with bias,
//! rotate-half RoPE, causal grouped-query attention, SiLU-gated MLP, final norm, `lm_head`), and
//! greedy decoding through the KV cache with the argmax of the full-sequence pass.
//! The 7B shapes (≈ 0.5 GB of weights) run with SCENESAY_HEAVY_TESTS=1.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use scenesay::model::{FastVlm, GenerationParams, Precision};
use serde_json::json;

struct Shape {
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    vocab: usize,
    tied: bool,
}

const QWEN2_1_5B: Shape = Shape {
    hidden: 1536,
    inter: 8960,
    layers: 2,
    heads: 12,
    kv: 2,
    vocab: 1024,
    tied: true,
};

const QWEN2_7B: Shape = Shape {
    hidden: 3584,
    inter: 18944,
    layers: 1,
    heads: 28,
    kv: 4,
    vocab: 1024,
    tied: false,
};

fn heavy() -> bool {
    std::env::var("SCENESAY_HEAVY_TESTS").is_ok_and(|v| v == "1")
}

/// Deterministic values in [-0.5, 0.5).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next() * scale).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
    }
}

/// A checkpoint of `layout` with the language model of shape `s` (random bf16 weights), the tiny
/// fixture's vision tower and a projector to the new width, in 4 shards with an index.
fn write_checkpoint(layout: &str, s: &Shape, dir: &Path) {
    let src = model_dir(layout);
    let hd = s.hidden / s.heads;
    // config: the fixture's, with the language model's sizes replaced
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let text = json!({
        "hidden_size": s.hidden, "intermediate_size": s.inter, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.kv, "vocab_size": s.vocab,
        "tie_word_embeddings": s.tied, "max_position_embeddings": 32768, "max_window_layers": 28,
        "sliding_window": 32768,
    });
    let (prefix, target) = if layout == "hf" {
        cfg["tie_word_embeddings"] = json!(s.tied);
        cfg["text_config"]["layer_types"] = json!(vec!["full_attention"; s.layers]);
        ("model.language_model.", &mut cfg["text_config"])
    } else {
        ("model.", &mut cfg)
    };
    for (k, v) in text.as_object().unwrap() {
        target[k.as_str()] = v.clone();
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name != "config.json" && !name.ends_with(".safetensors") {
            std::fs::copy(src.join(&name), dir.join(&name)).unwrap();
        }
    }
    // weights: the vision tower as it is, everything else new
    let tiny = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut t: HashMap<String, Tensor> = tiny
        .into_iter()
        .filter(|(k, _)| k.contains("vision_tower"))
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ s.hidden as u64);
    let (h, q, kv) = (s.hidden, s.heads * hd, s.kv * hd);
    let (p1, p2) = if layout == "hf" {
        (
            "model.multi_modal_projector.linear_1",
            "model.multi_modal_projector.linear_2",
        )
    } else {
        ("model.mm_projector.0", "model.mm_projector.2")
    };
    // the projector is f32 in the fixtures; its output scale is kept moderate
    let f32t =
        |r: &mut Rng, shape: &[usize], sc: f32| r.tensor(shape, sc).to_dtype(DType::F32).unwrap();
    t.insert(format!("{p1}.weight"), f32t(&mut rng, &[h, 512], 0.01));
    t.insert(format!("{p1}.bias"), f32t(&mut rng, &[h], 0.1));
    t.insert(format!("{p2}.weight"), f32t(&mut rng, &[h, h], 0.05));
    t.insert(format!("{p2}.bias"), f32t(&mut rng, &[h], 0.1));
    t.insert(
        format!("{prefix}embed_tokens.weight"),
        rng.tensor(&[s.vocab, h], 2.0),
    );
    for l in 0..s.layers {
        let p = format!("{prefix}layers.{l}");
        let w = 2.0 / (h as f32).sqrt();
        for (name, shape, scale) in [
            ("self_attn.q_proj.weight", vec![q, h], w * 4.0),
            ("self_attn.q_proj.bias", vec![q], 0.5),
            ("self_attn.k_proj.weight", vec![kv, h], w * 4.0),
            ("self_attn.k_proj.bias", vec![kv], 0.5),
            ("self_attn.v_proj.weight", vec![kv, h], w),
            ("self_attn.v_proj.bias", vec![kv], 0.1),
            ("self_attn.o_proj.weight", vec![h, q], w),
            ("mlp.gate_proj.weight", vec![s.inter, h], w),
            ("mlp.up_proj.weight", vec![s.inter, h], w),
            (
                "mlp.down_proj.weight",
                vec![h, s.inter],
                2.0 / (s.inter as f32).sqrt(),
            ),
        ] {
            t.insert(format!("{p}.{name}"), rng.tensor(&shape, scale));
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            let v: Vec<f32> = (0..h).map(|_| 1.0 + rng.next() * 0.2).collect();
            t.insert(
                format!("{p}.{n}.weight"),
                Tensor::from_vec(v, h, &Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::BF16)
                    .unwrap(),
            );
        }
    }
    let v: Vec<f32> = (0..h).map(|_| 1.0 + rng.next() * 0.2).collect();
    t.insert(
        format!("{prefix}norm.weight"),
        Tensor::from_vec(v, h, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap(),
    );
    if !s.tied {
        t.insert("lm_head.weight".into(), rng.tensor(&[s.vocab, h], 0.1));
    }
    // 4 shards, as FastVLM-7B ships
    let mut names: Vec<String> = t.keys().cloned().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    let per = names.len().div_ceil(4);
    for (i, part) in names.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-00004.safetensors", i + 1);
        let sub: HashMap<String, Tensor> = part.iter().map(|n| (n.clone(), t[n].clone())).collect();
        candle_core::safetensors::save(&sub, dir.join(&file)).unwrap();
        for n in part {
            map.insert(n.clone(), file.clone().into());
        }
    }
    assert_eq!(names.chunks(per).count(), 4);
    let index = json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Qwen2 from its definition, in f64, over input embeddings `[t, h]`: logits `[t, vocab]`.
fn reference_logits(dir: &Path, layout: &str, s: &Shape, x: &[f32]) -> Vec<f64> {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let mut w: HashMap<String, Vec<f32>> = HashMap::new();
    let mut files: Vec<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    files.sort();
    files.dedup();
    for f in files {
        for (k, v) in candle_core::safetensors::load(dir.join(f), &Device::Cpu).unwrap() {
            if !k.contains("vision_tower") && !k.contains("projector") {
                w.insert(k, flat(&v));
            }
        }
    }
    let prefix = if layout == "hf" {
        "model.language_model."
    } else {
        "model."
    };
    let (h, hd) = (s.hidden, s.hidden / s.heads);
    let t = x.len() / h;
    let mut xs: Vec<Vec<f64>> = x
        .chunks(h)
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    let rms = |r: &[f64], g: &[f32]| -> Vec<f64> {
        let ms = r.iter().map(|v| v * v).sum::<f64>() / r.len() as f64;
        let inv = 1.0 / (ms + 1e-6).sqrt();
        r.iter().zip(g).map(|(v, g)| v * inv * *g as f64).collect()
    };
    let matvec = |m: &[f32], b: Option<&Vec<f32>>, v: &[f64], rows: usize| -> Vec<f64> {
        let k = v.len();
        (0..rows)
            .map(|r| {
                let dot: f64 = m[r * k..(r + 1) * k]
                    .iter()
                    .zip(v)
                    .map(|(a, b)| *a as f64 * b)
                    .sum();
                dot + b.map_or(0.0, |b| b[r] as f64)
            })
            .collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        let half = hd / 2;
        for head in v.chunks_mut(hd) {
            for i in 0..half {
                let f = 1.0 / 1e6f64.powf((2 * i) as f64 / hd as f64);
                let (c, sn) = ((pos as f64 * f).cos(), (pos as f64 * f).sin());
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * sn;
                head[i + half] = b * c + a * sn;
            }
        }
    };
    let group = s.heads / s.kv;
    for l in 0..s.layers {
        let p = format!("{prefix}layers.{l}");
        let g = |n: &str| &w[&format!("{p}.{n}")];
        let mut qs = vec![];
        let mut ks = vec![];
        let mut vs = vec![];
        for (i, xi) in xs.iter().enumerate() {
            let n = rms(xi, g("input_layernorm.weight"));
            let mut q = matvec(
                g("self_attn.q_proj.weight"),
                Some(g("self_attn.q_proj.bias")),
                &n,
                s.heads * hd,
            );
            let mut k = matvec(
                g("self_attn.k_proj.weight"),
                Some(g("self_attn.k_proj.bias")),
                &n,
                s.kv * hd,
            );
            rope(&mut q, i);
            rope(&mut k, i);
            qs.push(q);
            ks.push(k);
            vs.push(matvec(
                g("self_attn.v_proj.weight"),
                Some(g("self_attn.v_proj.bias")),
                &n,
                s.kv * hd,
            ));
        }
        for i in 0..t {
            let mut attn = vec![0f64; s.heads * hd];
            for head in 0..s.heads {
                let kvh = head / group;
                let q = &qs[i][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let k = &ks[j][kvh * hd..(kvh + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    let v = &vs[j][kvh * hd..(kvh + 1) * hd];
                    for d in 0..hd {
                        attn[head * hd + d] += ej / z * v[d];
                    }
                }
            }
            let o = matvec(g("self_attn.o_proj.weight"), None, &attn, h);
            xs[i].iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let n = rms(&xs[i], g("post_attention_layernorm.weight"));
            let gate = matvec(g("mlp.gate_proj.weight"), None, &n, s.inter);
            let up = matvec(g("mlp.up_proj.weight"), None, &n, s.inter);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = matvec(g("mlp.down_proj.weight"), None, &act, h);
            xs[i].iter_mut().zip(&d).for_each(|(x, d)| *x += d);
        }
    }
    let head = if s.tied {
        &w[&format!("{prefix}embed_tokens.weight")]
    } else {
        &w["lm_head.weight"]
    };
    let norm = &w[&format!("{prefix}norm.weight")];
    xs.iter()
        .flat_map(|x| matvec(head, None, &rms(x, norm), s.vocab))
        .collect()
}

fn check(layout: &str, s: &Shape) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(layout, s, dir.path());
    let mut m =
        FastVlm::load(dir.path(), Precision::F32).unwrap_or_else(|e| panic!("{layout}: {e}"));
    assert_eq!(m.config.text.head_dim, 128);
    assert_eq!(m.config.text.tie_word_embeddings, s.tied);
    // every position of a short token sequence against the f64 definition
    let ids: Vec<u32> = vec![701, 8, 340, 77, 512, 1003, 9, 702, 701];
    let embeds = m.token_embeds(&ids).unwrap();
    let hidden = m.prefill(&embeds).unwrap();
    let got = flat(&m.logits(&hidden).unwrap());
    let want = reference_logits(dir.path(), layout, s, &flat(&embeds));
    let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0f64, f64::max);
    println!(
        "{layout} hidden {}: logits max |Δ| {worst:.2e} (max |logit| {scale:.2})",
        s.hidden
    );
    // f32 arithmetic against f64 over k = hidden / intermediate sums: 1e-4 of the largest logit
    assert!(worst <= 1e-4 * scale, "{layout}: {worst} (scale {scale})");
    let want_top: Vec<usize> = want
        .chunks(s.vocab)
        .map(|r| (0..s.vocab).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect();
    let got_top: Vec<usize> = got
        .chunks(s.vocab)
        .map(|r| (0..s.vocab).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect();
    assert_eq!(got_top, want_top, "{layout}");

    // describing a picture: greedy decoding through the KV cache equals the argmax of one pass
    // over the prompt and the generated tokens
    let img = load_image("../images/landscape_640x480.png");
    let params = GenerationParams {
        max_tokens: 4,
        ignore_eos: true,
        ..Default::default()
    };
    let g = m
        .generate(
            &img,
            "Describe the image.",
            64,
            &params,
            &mut |_| {},
            &|| false,
        )
        .unwrap();
    assert_eq!(g.token_ids.len(), 4);
    let enc = m.encode_pixels(&m.preprocess(&img, 64).unwrap()).unwrap();
    let mut p = m.prompt_ids("Describe the image.").unwrap();
    let t0 = p.len(1);
    p.after.extend(&g.token_ids);
    let e = m.input_embeds(&p, &enc.projected).unwrap();
    let h = m.prefill(&e).unwrap();
    let top: Vec<u32> = m.logits(&h).unwrap().argmax(1).unwrap().to_vec1().unwrap();
    assert_eq!(
        top[t0 - 1..t0 - 1 + 4],
        g.token_ids[..],
        "{layout}: cached decoding"
    );
}

#[test]
fn qwen2_1_5b_shapes_match_the_definition_in_both_layouts() {
    check("apple", &QWEN2_1_5B);
    // the same shapes with an untied lm_head
    check(
        "hf",
        &Shape {
            tied: false,
            ..QWEN2_1_5B
        },
    );
}

#[test]
fn qwen2_7b_shapes_match_the_definition() {
    if !heavy() {
        eprintln!("skipped: set SCENESAY_HEAVY_TESTS=1 (scripts/test does)");
        return;
    }
    check("hf", &QWEN2_7B);
    check("apple", &QWEN2_7B);
}
