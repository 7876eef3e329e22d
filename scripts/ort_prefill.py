"""ONNX Runtime anchor for the LLM prefill of a FastVLM checkpoint: export its Qwen2 decoder
(input embeddings -> last-position logits, no KV cache) to ONNX once per prompt length, check it
against PyTorch, then time ONNX Runtime's CPU provider.

usage: python ort_prefill.py CKPT_DIR --ref-dir REFERENCE_DIR [--prompt-tokens 41,281] [--threads 2]
                             [--runs 5] [--onnx-dir DIR]

REFERENCE_DIR is the FastVLM reference harness (its `common.py` loads either checkpoint layout).
Prints one JSON object: {"prompt_tokens": {"281": {"prefill_s": ..., "prefill_all_s": [...],
"pytorch_prefill_s": ..., "max_abs_err_vs_pytorch": ...}}}.
"""
import argparse
import json
import os
import statistics
import sys
import time


def median_time(fn, runs):
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("--ref-dir", required=True, help="directory holding the reference harness's common.py")
    ap.add_argument("--prompt-tokens", default="41,281", help="prompt lengths (256 px: 41, 1024 px: 281)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--onnx-dir", default=None, help="where exported graphs are kept (default: CKPT_DIR/onnx)")
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.ref_dir))
    import common  # noqa: E402
    import numpy as np  # noqa: E402
    import onnxruntime as ort  # noqa: E402
    import torch  # noqa: E402

    torch.set_num_threads(a.threads)
    # eager attention exports as plain MatMul / Softmax with the causal mask (the SDPA path traces
    # without its causal flag here and gives wrong logits)
    model, layout = common.load_model(a.ckpt, dtype=torch.float32, attn_implementation="eager")
    lm, head = model.model.language_model, model.lm_head

    class Prefill(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm, self.head = lm, head

        def forward(self, inputs_embeds):
            # an explicit all-ones mask keeps transformers off its packed-sequence detection, which
            # the ONNX exporter cannot trace
            mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
            h = self.lm(inputs_embeds=inputs_embeds, attention_mask=mask, use_cache=False).last_hidden_state
            return self.head(h[:, -1:])

    net = Prefill().eval()
    onnx_dir = a.onnx_dir or os.path.join(a.ckpt, "onnx")
    os.makedirs(onnx_dir, exist_ok=True)
    hidden = lm.config.hidden_size
    out = {"checkpoint": os.path.basename(os.path.normpath(a.ckpt)), "layout": layout, "threads": a.threads,
           "onnxruntime": ort.__version__, "torch": torch.__version__, "prompt_tokens": {}}
    for t in [int(x) for x in a.prompt_tokens.split(",")]:
        g = torch.Generator().manual_seed(t)
        x = torch.randn(1, t, hidden, generator=g) * 0.02
        path = os.path.join(onnx_dir, f"prefill_{t}.onnx")
        with torch.no_grad():
            if not os.path.exists(path):
                torch.onnx.export(net, (x,), path, input_names=["inputs_embeds"], output_names=["logits"],
                                  opset_version=17, dynamo=False, do_constant_folding=True, external_data=True)
            ref = net(x).numpy()
            pt_s, pt_all = median_time(lambda: net(x), a.runs)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        got = sess.run(None, {"inputs_embeds": xn})[0]
        err = float(np.abs(got - ref).max())
        ort_s, ort_all = median_time(lambda: sess.run(None, {"inputs_embeds": xn}), a.runs)
        del sess
        out["prompt_tokens"][str(t)] = {"prefill_s": ort_s, "prefill_all_s": ort_all, "pytorch_prefill_s": pt_s,
                                        "pytorch_prefill_all_s": pt_all, "max_abs_err_vs_pytorch": err}
        print(f"{t} tokens: onnxruntime {ort_s:.3f} s, pytorch {pt_s:.3f} s, max abs err {err:.1e}",
              file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
