//! Loading checkpoints: both layouts, sharded files, and one clear error for every way a checkpoint
//! can be broken (missing file, missing / misnamed / extra tensor, wrong shape, unknown tower or
//! projector, truncated file). Plus the slow-file tokenizer against tokenizer.json, and (heavy)
//! full-size random weights of the real FastVLM-0.5B shapes in both layouts.

mod common;
mod full_size;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use scenesay::model::tokenizer::TextTokenizer;
use scenesay::model::{FastVlm, ModelError, Precision};

fn load_err(dir: &Path) -> String {
    match FastVlm::load(dir, Precision::F32) {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn save(dir: &Path, t: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(t, dir.join("model.safetensors")).unwrap();
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn missing_files_are_named() {
    let d = copy_model("apple");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("missing"), "{e}");

    let d = copy_model("hf");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("missing"),
        "{e}"
    );

    let e = load_err(Path::new("/nonexistent/scenesay-model"));
    assert!(e.contains("/nonexistent/scenesay-model"), "{e}");
}

#[test]
fn a_missing_tensor_is_an_error_naming_it_and_its_shape() {
    for (layout, name) in [
        ("apple", "model.layers.1.mlp.up_proj.weight"),
        (
            "hf",
            "model.vision_tower.timm_model.stages.3.blocks.1.token_mixer.qkv.weight",
        ),
        (
            "apple",
            "model.vision_tower.vision_tower.model.network.0.1.convffn.conv.bn.running_var",
        ),
        ("hf", "model.multi_modal_projector.linear_2.bias"),
    ] {
        let d = copy_model(layout);
        let mut t = tensors(d.path());
        let shape = t
            .remove(name)
            .unwrap_or_else(|| panic!("fixture lacks {name}"))
            .dims()
            .to_vec();
        save(d.path(), &t);
        let e = load_err(d.path());
        assert!(e.contains(name), "{layout}: {e}");
        assert!(
            e.contains(&format!("{shape:?}")),
            "{layout}: expected shape in {e}"
        );
    }
}

#[test]
fn a_misnamed_tensor_is_an_error_not_a_skipped_layer() {
    let d = copy_model("apple");
    let mut t = tensors(d.path());
    let old = "model.vision_tower.vision_tower.model.network.7.0.layer_scale_1";
    let v = t.remove(old).unwrap();
    t.insert(
        "model.vision_tower.vision_tower.model.network.7.0.layer_scale_one".into(),
        v,
    );
    save(d.path(), &t);
    let e = load_err(d.path());
    assert!(e.contains(old), "{e}");
}

#[test]
fn an_extra_tensor_is_an_error() {
    let d = copy_model("hf");
    let mut t = tensors(d.path());
    t.insert(
        "model.language_model.layers.2.mlp.up_proj.weight".into(),
        Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    save(d.path(), &t);
    let e = load_err(d.path());
    assert!(
        e.contains("not used") && e.contains("layers.2.mlp.up_proj.weight"),
        "{e}"
    );
}

#[test]
fn a_wrong_shape_is_an_error_naming_both_shapes() {
    let d = copy_model("apple");
    let mut t = tensors(d.path());
    let name = "model.mm_projector.0.weight";
    t.insert(
        name.into(),
        Tensor::zeros((64, 256), DType::F32, &Device::Cpu).unwrap(),
    );
    save(d.path(), &t);
    let e = load_err(d.path());
    assert!(
        e.contains(name) && e.contains("[64, 256]") && e.contains("[64, 512]"),
        "{e}"
    );
    match FastVlm::load(d.path(), Precision::F32) {
        Err(ModelError::ShapeMismatch { expected, got, .. }) => {
            assert_eq!(expected, vec![64, 512]);
            assert_eq!(got, vec![64, 256]);
        }
        other => panic!("expected a shape mismatch, got {:?}", other.err()),
    }
}

#[test]
fn unknown_tower_or_projector_is_a_config_error() {
    let d = copy_model("apple");
    edit_config(d.path(), |v| v["mm_vision_tower"] = "siglip_so400m".into());
    let e = load_err(d.path());
    assert!(
        e.contains("config.json") && e.contains("siglip_so400m") && e.contains("mm_vision_tower"),
        "{e}"
    );

    let d = copy_model("apple");
    edit_config(d.path(), |v| v["mm_projector_type"] = "mlp3x_gelu".into());
    let e = load_err(d.path());
    assert!(e.contains("mlp3x_gelu"), "{e}");

    let d = copy_model("hf");
    edit_config(d.path(), |v| {
        v["vision_config"]["architecture"] = "vit_base_patch16_224".into()
    });
    let e = load_err(d.path());
    assert!(e.contains("vit_base_patch16_224"), "{e}");
}

#[test]
fn apple_clip_head_is_optional_and_ignored() {
    let d = copy_model("apple");
    let mut t = tensors(d.path());
    assert!(t
        .remove("model.vision_tower.vision_tower.model.head.proj")
        .is_some());
    save(d.path(), &t);
    FastVlm::load(d.path(), Precision::F32).unwrap();
}

#[test]
fn truncated_weights_are_reported_as_corrupt() {
    let d = copy_model("hf");
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::write(&p, b"not a safetensors file").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

/// Splits a checkpoint into two shards with an index, like FastVLM-7B ships.
fn shard(dir: &Path) {
    let t = tensors(dir);
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let sub: HashMap<String, Tensor> =
            part.iter().map(|n| ((*n).clone(), t[*n].clone())).collect();
        candle_core::safetensors::save(&sub, dir.join(file)).unwrap();
        for n in part {
            map.insert((*n).clone(), file.into());
        }
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_checkpoints_load_and_give_the_same_result() {
    let img = load_image("../images/portrait_300x500.png");
    let whole = FastVlm::load(&model_dir("hf"), Precision::F32).unwrap();
    let want = whole.scene_embedding(&img, 256).unwrap();
    let d = copy_model("hf");
    shard(d.path());
    let m = FastVlm::load(d.path(), Precision::F32).unwrap();
    let got = m.scene_embedding(&img, 256).unwrap();
    assert_eq!(flat(&got.projector_output), flat(&want.projector_output));
    assert_eq!(got.embedding, want.embedding);

    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn slow_tokenizer_files_tokenize_like_tokenizer_json() {
    let fast = TextTokenizer::from_dir(&model_dir("hf")).unwrap();
    let slow = TextTokenizer::from_dir(&model_dir("apple")).unwrap();
    assert!(slow.source.ends_with("vocab.json"));
    for text in [
        "Describe the image.",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
        "What's in front of me?  Two  spaces,\ttabs\n\nand newlines\r\n",
        "Numbers 1234567 and symbols #@!%^&*() — dashes… “quotes”",
        "Ünïcödé naïve café 東京 🚶 e\u{301}",
        "I'll say it's the cat's; they'd've",
    ] {
        let a = fast.encode(text).unwrap();
        let b = slow.encode(text).unwrap();
        assert_eq!(a, b, "{text:?}");
        assert_eq!(
            slow.decode(&b).unwrap(),
            fast.decode(&a).unwrap(),
            "{text:?}"
        );
    }
    assert_eq!(slow.token_to_id("<|im_end|>"), Some(702));
    assert_eq!(slow.token_to_id("<|im_start|>"), Some(701));
}

#[test]
fn a_model_without_tokenizer_embeds_but_says_why_it_cannot_describe() {
    let d = copy_model("hf");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::remove_file(d.path().join(f)).unwrap();
    }
    let mut m = FastVlm::load(d.path(), Precision::F32).unwrap();
    let img = load_image("../images/landscape_640x480.png");
    assert_eq!(m.scene_embedding(&img, 256).unwrap().embedding.len(), 512);
    let e = m
        .generate(
            &img,
            "Describe.",
            256,
            &Default::default(),
            &mut |_| {},
            &|| false,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer"), "{e}");
}

#[test]
fn resolutions_must_be_multiples_of_64() {
    let m = FastVlm::load(&model_dir("apple"), Precision::F32).unwrap();
    let img = load_image("../images/landscape_640x480.png");
    for r in [0, 100, 200] {
        let e = m.scene_embedding(&img, r).err().unwrap().to_string();
        assert!(e.contains("multiple of 64"), "{e}");
    }
    for r in [64, 128, 320] {
        let e = m.scene_embedding(&img, r).unwrap();
        assert_eq!(e.image_features.dims(), &[(r as usize / 64).pow(2), 512]);
    }
}

// ---- full size (heavy) -------------------------------------------------------------------------

fn heavy() -> bool {
    std::env::var("SCENESAY_HEAVY_TESTS").is_ok_and(|v| v == "1")
}

#[test]
fn full_size_random_checkpoints_of_the_real_shapes_load_and_run() {
    if !heavy() {
        eprintln!("skipped: set SCENESAY_HEAVY_TESTS=1 (scripts/test does)");
        return;
    }
    let img = load_image("../images/landscape_640x480.png");
    for layout in ["apple", "hf"] {
        let dir = tempfile::tempdir().unwrap();
        full_size::write_full_size(
            &fixtures().join(format!("full-size/fastvlm-0.5b-{layout}.json")),
            &model_dir("apple"),
            dir.path(),
        )
        .unwrap();
        let mut m =
            FastVlm::load(dir.path(), Precision::Bf16).unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert_eq!(m.config.vision.embed_dims, vec![96, 192, 384, 768, 1536]);
        assert_eq!(m.config.native_resolution, 1024);
        let e = m.scene_embedding(&img, 256).unwrap();
        assert_eq!(e.image_features.dims(), &[16, 3072]);
        assert_eq!(e.projector_output.dims(), &[16, 896]);
        assert!(
            flat(&e.projector_output).iter().all(|v| v.is_finite()),
            "{layout}: non-finite projector output"
        );
        let norm: f32 = e.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        let params = scenesay::model::GenerationParams {
            max_tokens: 3,
            ignore_eos: true,
            ..Default::default()
        };
        let g = m
            .generate(
                &img,
                "Describe the image.",
                256,
                &params,
                &mut |_| {},
                &|| false,
            )
            .unwrap();
        assert_eq!(g.token_ids.len(), 3, "{layout}");
        assert!(g.token_ids.iter().all(|&t| (t as usize) < 151936));
    }
}

// ---- configuration keys that change the computation --------------------------------------------

#[test]
fn config_keys_that_change_the_computation_are_refused_by_name_and_value() {
    use serde_json::json;
    // (layout, path to the key, value, text the error must show besides the key)
    let cases: Vec<(&str, Vec<&str>, serde_json::Value, &str)> = vec![
        ("apple", vec!["mm_use_im_start_end"], json!(true), "true"),
        (
            "apple",
            vec!["image_aspect_ratio"],
            json!("anyres"),
            "anyres",
        ),
        (
            "apple",
            vec!["image_aspect_ratio"],
            json!("square"),
            "square",
        ),
        ("apple", vec!["image_aspect_ratio"], json!(null), "null"),
        (
            "apple",
            vec!["mm_patch_merge_type"],
            json!("spatial_unpad"),
            "spatial_unpad",
        ),
        ("apple", vec!["use_sliding_window"], json!(true), "true"),
        (
            "hf",
            vec!["text_config", "use_sliding_window"],
            json!(true),
            "true",
        ),
        (
            "hf",
            vec!["text_config", "layer_types"],
            json!(["full_attention", "sliding_attention"]),
            "sliding_attention",
        ),
        ("hf", vec!["vision_feature_layer"], json!(-2), "-2"),
        (
            "hf",
            vec!["vision_feature_layer"],
            json!([-2, -1]),
            "[-2,-1]",
        ),
        (
            "hf",
            vec!["vision_config", "model_args", "token_mixers"],
            json!(["repmixer"]),
            "repmixer",
        ),
        (
            "hf",
            vec!["vision_config", "model_args", "inference_mode"],
            json!(false),
            "false",
        ),
    ];
    for (layout, path, value, shown) in cases {
        let d = copy_model(layout);
        let key = path.last().unwrap().to_string();
        edit_config(d.path(), |v| {
            let mut at = v;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[key.as_str()] = value.clone();
        });
        let e = load_err(d.path());
        println!("{layout} {path:?} = {value}: {e}");
        assert!(
            e.contains("config.json") && e.contains(&key) && e.contains(shown),
            "{layout} {path:?} = {value}: {e}"
        );
    }
}

#[test]
fn config_values_the_reference_ignores_or_defaults_still_load() {
    use serde_json::json;
    // Apple's MobileCLIP tower always returns its last feature map: the LLaVA selection keys
    // the released configs carry (`mm_vision_select_layer: -2`, `patch`) do not apply to it
    let d = copy_model("apple");
    edit_config(d.path(), |v| {
        v["mm_vision_select_layer"] = json!(-1);
        v["mm_vision_select_feature"] = json!("cls_patch");
        v["use_sliding_window"] = json!(false);
        v["mm_patch_merge_type"] = json!("flat");
        v.as_object_mut().unwrap().remove("mm_use_im_start_end");
    });
    FastVlm::load(d.path(), Precision::F32).unwrap();
    let d = copy_model("hf");
    edit_config(d.path(), |v| {
        v["vision_feature_layer"] = json!([-1]);
        v["vision_config"]["model_args"]["drop_path_rate"] = json!(0.1);
        v["text_config"]["sliding_window"] = json!(4096);
    });
    FastVlm::load(d.path(), Precision::F32).unwrap();
    // the full-size configs of the reference's own files load as they are
    for layout in ["apple", "hf"] {
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                fixtures().join(format!("full-size/fastvlm-0.5b-{layout}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        scenesay::model::FastVlmConfig::from_json(&m["config"], Path::new("config.json"))
            .unwrap_or_else(|e| panic!("{layout}: {e}"));
    }
}

// ---- narrowing to f16 --------------------------------------------------------------------------

#[test]
fn f16_refuses_weights_beyond_its_range_naming_the_tensor() {
    // f16 tops out at 65504; bf16 and f32 checkpoints can hold far more. A weight that would
    // become infinity is refused with its name, value and what to use instead.
    for (layout, name) in [
        ("hf", "model.language_model.layers.1.mlp.up_proj.weight"),
        ("apple", "model.embed_tokens.weight"),
    ] {
        for dtype in [DType::BF16, DType::F32] {
            let d = copy_model(layout);
            let mut t = tensors(d.path());
            let w = &t[name];
            let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v[17] = 1e6;
            let shape = w.dims().to_vec();
            t.insert(
                name.into(),
                Tensor::from_vec(v, shape, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            );
            save(d.path(), &t);
            let e = match FastVlm::load(d.path(), Precision::F16) {
                Ok(_) => panic!("{layout} {dtype:?}: loaded as f16"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains(name) && e.contains("f16") && e.contains("bf16"),
                "{layout} {dtype:?}: {e}"
            );
            assert!(e.contains("65504"), "{e}");
            // the same weights load at the other precisions
            for ok in [Precision::Bf16, Precision::F32] {
                FastVlm::load(d.path(), ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            }
        }
    }
    // values inside the range load as f16 (the fixture itself)
    FastVlm::load(&model_dir("hf"), Precision::F16).unwrap();
}
