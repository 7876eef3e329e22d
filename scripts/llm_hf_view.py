"""Write the language-model half of a FastVLM checkpoint as a one-file transformers (`fast_vlm`)
directory: config.json with the Qwen2 `text_config`, and model.safetensors holding only the
`model.language_model.*` tensors (plus `lm_head.weight` when the checkpoint has one). This is the
shape the reference harness's qwen2_gguf.py reads, so scripts/compare.sh can hand llama.cpp the same
weights from an Apple (`llava_qwen2`) directory or a sharded one.

usage: python llm_hf_view.py CKPT_DIR OUT_DIR --ref-dir REFERENCE_DIR

REFERENCE_DIR is the FastVLM reference harness (its `common.py` maps Apple keys to transformers keys).
Tensors keep their dtype. Prints OUT_DIR.
"""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("out")
    ap.add_argument("--ref-dir", required=True, help="directory holding the reference harness's common.py")
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.ref_dir))
    import common  # noqa: E402
    from safetensors import safe_open  # noqa: E402
    from safetensors.torch import save_file  # noqa: E402

    with open(os.path.join(a.ckpt, "config.json")) as f:
        c = json.load(f)
    kind = c.get("model_type")
    if kind == "fast_vlm":
        text = c["text_config"]
        text.setdefault("tie_word_embeddings", c.get("tie_word_embeddings", True))
        rename = lambda k: k  # noqa: E731
    elif kind == "llava_qwen2":
        text = {k: v for k, v in c.items() if not k.startswith("mm_") and k != "architectures"}
        text["model_type"] = "qwen2"
        rename = common.apple_key_to_hf
    else:
        sys.exit(f"{a.ckpt}: model_type {kind!r}; expected an unquantized FastVLM checkpoint "
                 "(`llava_qwen2` or `fast_vlm`)")

    index = os.path.join(a.ckpt, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    keep = {}
    for name in files:
        with safe_open(os.path.join(a.ckpt, name), framework="pt") as st:
            for k in st.keys():
                try:
                    nk = rename(k)
                except KeyError:  # a key outside the known prefixes: not the language model's
                    continue
                if nk is not None and (nk.startswith("model.language_model.") or nk == "lm_head.weight"):
                    keep[nk] = st.get_tensor(k).contiguous()
    if not any(k.startswith("model.language_model.") for k in keep):
        sys.exit(f"{a.ckpt}: no language-model tensors found")

    os.makedirs(a.out, exist_ok=True)
    save_file(keep, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump({"model_type": "fast_vlm", "text_config": text,
                   "tie_word_embeddings": text.get("tie_word_embeddings", True)}, f, indent=2)
    print(a.out)


if __name__ == "__main__":
    main()
