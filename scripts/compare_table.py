"""Ratio table of a scripts/compare.sh run (standard library only).

usage: python3 compare_table.py RESULTS_DIR

Reads scenesay-rN.json and quantized-NAME-rN.json (scenesay bench --json), pytorch-rN.json (time_checkpoint.py),
ort-vision-rN.json (ort_vision.py) and ort-prefill-rN.json (ort_prefill.py), pools every raw sample
of all rounds and prints medians and speed-ups (> 1: scenesay is faster) as a Markdown table.
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


if __name__ == "__main__":
    main()
