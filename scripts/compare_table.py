"""Ratio table of a scripts/compare.sh run (standard library only).

usage: python3 compare_table.py RESULTS_DIR

Reads scenesay-rN.json and quantized-NAME-rN.json (scenesay bench --json), pytorch-rN.json (time_checkpoint.py),
ort-vision-rN.json (ort_vision.py), ort-prefill-rN.json (ort_prefill.py) and, when present,
llama-TYPE-rN.json (llama.cpp's `llama-bench -o json`, TYPE f16, q8_0 or q4_0), pools every raw sample
of all rounds and prints medians and speed-ups (> 1: scenesay is faster) as Markdown tables. llama.cpp
gets a table of its own, on the language model only: F16 against CKPT's scenesay run, Q8_0 and Q4_0
against the quantized checkpoints whose weights are 8-bit (q8_0) and 4-bit (q4_1 + q8_0).
"""
import glob
import json
import os
import re
import statistics
import sys


def load(pattern):
    out = []
    for p in sorted(glob.glob(pattern)):
        with open(p) as f:
            text = f.read().strip()
        if text:
            out.append(json.loads(text))
    return out


def pooled(docs, path):
    """Every sample under `path` (a list of keys, the last one naming a list) in every doc."""
    xs = []
    for d in docs:
        v = d
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
            if v is None:
                break
        if isinstance(v, list):
            xs.extend(v)
        elif isinstance(v, (int, float)):
            xs.append(v)
    return statistics.median(xs) if xs else None


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "s":
        return f"{v:.3f} s"
    if unit == "tok/s":
        return f"{v:.1f} tok/s"
    return f"{v:.0f} MB"


def ratio(ours, other, higher_better=False):
    if ours is None or other is None or ours == 0 or other == 0:
        return "—"
    r = ours / other if higher_better else other / ours
    return f"{r:.2f}×"


LLAMA_TYPES = ("f16", "q8_0", "q4_0")


def load_llama(d):
    """{type: every test of every round}, {type: rounds}; llama-bench -o json prints a list of tests."""
    out, rounds = {}, {}
    for p in sorted(glob.glob(os.path.join(d, "llama-*-r*.json"))):
        t = re.sub(r"-r\d+\.json$", "", os.path.basename(p))[len("llama-"):]
        for doc in load(p):
            out.setdefault(t, []).extend(doc if isinstance(doc, list) else [doc])
            rounds[t] = rounds.get(t, 0) + 1
    return out, rounds


def llama_s(tests, n_prompt, n_gen):
    """Median seconds of the llama-bench tests with these sizes (no context depth), over every sample."""
    xs = [ns / 1e9 for t in tests
          if t.get("n_prompt") == n_prompt and t.get("n_gen") == n_gen and not t.get("n_depth")
          for ns in t.get("samples_ns", [])]
    return statistics.median(xs) if xs else None


def llama_type_of(docs):
    """The llama.cpp type to set a quantized scenesay checkpoint against, from how its weights are held."""
    w = docs[0].get("llm_weights", "") if docs else ""
    return "q4_0" if "q4" in w else "q8_0" if "q8" in w else None


def llama_table(llama, llama_rounds, ours, quant, res, tok_s):
    meta = ours[0]
    n_new = meta["resolutions"][res[0]].get("decode_new_tokens")
    any_test = next(t for tests in llama.values() for t in tests)
    sizes = ", ".join(f"{t.upper()} {llama[t][0]['model_size'] / 1e6:.0f} MB" for t in LLAMA_TYPES
                      if t in llama and "model_size" in llama[t][0])
    rounds = max(llama_rounds.values())
    print()
    print(f"llama.cpp {any_test.get('build_commit', '?')} (llama-bench, {any_test.get('n_threads', '?')} threads, "
          f"{rounds} rounds) on the same language-model weights as GGUF ({sizes}); "
          "its decode starts from an empty context")
    print()
    print("| | scenesay | llama.cpp | speed-up vs llama.cpp |")
    print("|---|---|---|---|")
    # which scenesay runs each llama.cpp type is set against: (label, docs)
    peers = {t: [] for t in LLAMA_TYPES}
    peers["f16"].append((meta["dtype"], ours))
    for name, docs in sorted(quant.items()):
        t = llama_type_of(docs)
        if t:
            peers[t].append((f"{name} ({docs[0].get('llm_weights', '?')})", docs))
    missing = {"q8_0": [("no 8-bit checkpoint", None)], "q4_0": [("no 4-bit checkpoint", None)]}
    rows = []
    for t in LLAMA_TYPES:
        if t not in llama:
            continue
        peers[t] = peers[t] or missing[t]
        lengths = sorted({tt.get("n_prompt") for tt in llama[t] if tt.get("n_prompt") and not tt.get("n_gen")})
        for r in res:
            n = meta["resolutions"][r]["prompt_tokens"]
            # compare.sh passes the synthetic prompt's lengths; a tokenizer's prompt may differ a little
            p = min(lengths, key=lambda k: abs(k - n)) if lengths else None
            x = llama_s(llama[t], p, 0) if p else None
            for label, docs in peers[t]:
                o = pooled(docs, ["resolutions", r, "prefill_all_s"]) if docs else None
                rows.append((f"LLM prefill, {n} tokens ({r} px): {label} vs {t.upper()} (pp{p})",
                             "s", o, x, False))
        gen = [g for g in {tt.get("n_gen") for tt in llama[t]} if g]
        g = n_new if n_new in gen else (gen[0] if gen else None)
        s = llama_s(llama[t], 0, g) if g else None
        x = g / s if s else None
        for r in res:
            for label, docs in peers[t]:
                o = tok_s(docs, r) if docs else None
                rows.append((f"decode, after the {r} px prompt: {label} vs {t.upper()} (tg{g})", "tok/s", o, x,
                             True))
    for name, unit, o, x, hb in rows:
        print(f"| {name} | {fmt(o, unit)} | {fmt(x, unit)} | {ratio(o, x, hb)} |")


def main():
    d = sys.argv[1]
    ours = load(os.path.join(d, "scenesay-r*.json"))
    torch = load(os.path.join(d, "pytorch-r*.json"))
    ortv = load(os.path.join(d, "ort-vision-r*.json"))
    ortp = load(os.path.join(d, "ort-prefill-r*.json"))
    quant = {}
    for p in glob.glob(os.path.join(d, "quantized-*-r*.json")):
        name = re.sub(r"-r\d+\.json$", "", os.path.basename(p))[len("quantized-"):]
        quant.setdefault(name, []).extend(load(p))
    llama, llama_rounds = load_llama(d)
    if not ours:
        sys.exit(f"{d}: no scenesay results")
    meta = ours[0]
    res = sorted(meta["resolutions"], key=int)
    rows = []
    for r in res:
        rows.append((f"vision encoder, {r} px", "s",
                     pooled(ours, ["resolutions", r, "vision_all_s"]),
                     pooled(torch, ["resolutions", r, "vision_all_s"]),
                     pooled(ortv, ["resolutions", r, "vision_all_s"]), False))
    for r in res:
        t = str(meta["resolutions"][r]["prompt_tokens"])
        rows.append((f"LLM prefill, {t} tokens ({r} px)", "s",
                     pooled(ours, ["resolutions", r, "prefill_all_s"]),
                     pooled(torch, ["resolutions", r, "prefill_all_s"]),
                     pooled(ortp, ["prompt_tokens", t, "prefill_all_s"]), False))
    for r in res:
        rows.append((f"time to first token, {r} px", "s",
                     pooled(ours, ["resolutions", r, "ttft_all_s"]),
                     pooled(torch, ["resolutions", r, "ttft_all_s"]), None, False))

    def tok_s(docs, r):
        s = pooled(docs, ["resolutions", r, "decode_all_s"])
        n = docs[0]["resolutions"][r].get("decode_new_tokens") if docs else None
        return n / s if s and n else None

    for r in res:
        rows.append((f"decode, after the {r} px prompt", "tok/s", tok_s(ours, r), tok_s(torch, r), None, True))
    for name, docs in sorted(quant.items()):
        for r in res:
            rows.append((f"decode {name}, after the {r} px prompt", "tok/s", tok_s(docs, r), tok_s(torch, r),
                         None, True))
        r = res[-1]
        rows.append((f"time to first token {name}, {r} px", "s",
                     pooled(docs, ["resolutions", r, "ttft_all_s"]),
                     pooled(torch, ["resolutions", r, "ttft_all_s"]), None, False))
    rss_o = pooled(ours, ["peak_rss_mb"])
    rss_t = pooled(torch, ["peak_rss_mb"])
    print(f"checkpoint {meta['checkpoint']} ({meta['layout']}), scenesay LLM {meta['dtype']} "
          f"(weights held as {meta.get('llm_weights', meta['dtype'])}), "
          f"{meta['threads']} threads, {len(ours)} rounds; medians of all samples")
    print()
    print("| | scenesay | PyTorch | ONNX Runtime | speed-up vs PyTorch | vs ONNX Runtime |")
    print("|---|---|---|---|---|---|")
    for name, unit, o, t, x, hb in rows:
        print(f"| {name} | {fmt(o, unit)} | {fmt(t, unit)} | {fmt(x, unit)} | {ratio(o, t, hb)} | {ratio(o, x, hb)} |")
    share = f"{100 * rss_o / rss_t:.0f} % of PyTorch's" if rss_o and rss_t else "—"
    print(f"| peak RSS | {fmt(rss_o, 'MB')} | {fmt(rss_t, 'MB')} | — | {share} | — |")
    for name, docs in sorted(quant.items()):
        rq = pooled(docs, ["peak_rss_mb"])
        share = f"{100 * rq / rss_t:.0f} % of PyTorch's" if rq and rss_t else "—"
        print(f"| peak RSS {name} | {fmt(rq, 'MB')} | {fmt(rss_t, 'MB')} | — | {share} | — |")
    if llama:
        llama_table(llama, llama_rounds, ours, quant, res, tok_s)


if __name__ == "__main__":
    main()
