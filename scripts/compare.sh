#!/usr/bin/env bash
# Side-by-side speed comparison on one checkpoint: scenesay's `bench`, the PyTorch reference timer
# (time_checkpoint.py), ONNX Runtime on the vision encoder (ort_vision.py) and on the LLM prefill
# (scripts/ort_prefill.py) and, optionally, llama.cpp's llama-bench on the language model, all with
# the same threads, run in alternating rounds so that a noisy machine disturbs every engine alike.
# Prints the ratio tables (medians over all rounds' samples).
#
# usage: scripts/compare.sh [options] CKPT
#   --ref-dir DIR      the FastVLM reference harness (time_checkpoint.py, ort_vision.py, common.py);
#                      default $SCENESAY_REF_DIR
#   --python PY        interpreter of the reference virtualenv (torch, transformers, timm,
#                      onnxruntime); default $SCENESAY_PYTHON, else `python3`
#   --threads N        threads for every engine (default 2)
#   --rounds N         alternating rounds (default 3)
#   --runs N           timed runs per measurement and round (default 3)
#   --new-tokens N     greedy decode steps per decode measurement (default 32)
#   --resolutions L    comma-separated (default 256,1024)
#   --dtype D          scenesay's LLM weight precision for CKPT (default f32)
#   --quantized DIR    also bench a quantized checkpoint (from `scenesay quantize`); repeatable
#   --work-dir DIR     where JSON results and exported ONNX graphs go (default ./compare-out)
#   --bin PATH         scenesay binary (default: target/release/scenesay, built if missing)
#   --no-ort           skip ONNX Runtime
#   --llama-cpp DIR    also time llama.cpp on the language model: DIR holds its llama-bench and
#                      llama-quantize binaries (a CPU build's bin/ directory). CKPT's Qwen2 half is
#                      written once as an F16 GGUF (the reference harness's qwen2_gguf.py; an Apple-
#                      layout or sharded CKPT goes through scripts/llm_hf_view.py first) and quantized
#                      to Q8_0 and Q4_0 with llama-quantize; all three are kept in WORK_DIR/llama/ and
#                      reused. Every round runs `llama-bench -t THREADS -p <the bench's prompt lengths>
#                      -n NEW_TOKENS -r RUNS` on each (llama-TYPE-rN.json). F16 is set against
#                      CKPT, Q8_0 and Q4_0 against the 8- and 4-bit --quantized checkpoints.
#   --gguf-py DIR      llama.cpp's gguf-py directory (the Python GGUF writer qwen2_gguf.py imports);
#                      default: a gguf-py directory next to DIR or up to two levels above it, unless
#                      --python imports `gguf` already
set -euo pipefail
cd "$(dirname "$0")/.."

ref_dir=${SCENESAY_REF_DIR:-}
python=${SCENESAY_PYTHON:-python3}
threads=2 rounds=3 runs=3 new_tokens=32 resolutions=256,1024 dtype=f32
work=compare-out bin="" ort=1 quantized=() ckpt="" llama="" gguf_py=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --ref-dir) ref_dir=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --new-tokens) new_tokens=$2; shift 2 ;;
    --resolutions) resolutions=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --quantized) quantized+=("$2"); shift 2 ;;
    --work-dir) work=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --no-ort) ort=0; shift ;;
    --llama-cpp) llama=$2; shift 2 ;;
    --gguf-py) gguf_py=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) ckpt=$1; shift ;;
  esac
done
[[ -n $ckpt ]] || { echo "usage: scripts/compare.sh [options] CKPT (see --help)" >&2; exit 2; }
[[ -d $ckpt ]] || { echo "$ckpt: not a checkpoint directory" >&2; exit 2; }
[[ -n $ref_dir && -f $ref_dir/time_checkpoint.py && -f $ref_dir/ort_vision.py ]] || {
  echo "need the reference harness: pass --ref-dir DIR or set SCENESAY_REF_DIR (a directory with time_checkpoint.py and ort_vision.py)" >&2
  exit 2
}
"$python" -c 'import torch, transformers, timm' 2>/dev/null || {
  echo "$python cannot import torch/transformers/timm: pass --python or set SCENESAY_PYTHON to the reference virtualenv's interpreter" >&2
  exit 2
}
if [[ -n $llama ]]; then
  for tool in llama-bench llama-quantize; do
    [[ -x $llama/$tool ]] || { echo "--llama-cpp $llama: no executable $tool there (pass the directory holding llama.cpp's built binaries)" >&2; exit 2; }
  done
  [[ -f $ref_dir/qwen2_gguf.py ]] || { echo "--llama-cpp needs the reference harness's qwen2_gguf.py in $ref_dir" >&2; exit 2; }
  if [[ -z $gguf_py ]] && ! "$python" -c 'import gguf' 2>/dev/null; then
    for d in "$llama/gguf-py" "$llama/../gguf-py" "$llama/../../gguf-py"; do
      [[ -f $d/gguf/__init__.py ]] && { gguf_py=$d; break; }
    done
  fi
  if [[ -n $gguf_py ]]; then
    export PYTHONPATH="$gguf_py${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$python" -c 'import gguf' 2>/dev/null || {
    echo "$python cannot import gguf: pass --gguf-py DIR (llama.cpp's gguf-py directory)" >&2
    exit 2
  }
fi
if [[ -z $bin ]]; then
  bin=target/release/scenesay
  [[ -x $bin ]] || cargo build --release
fi
mkdir -p "$work/onnx"
stamp=$(date +%Y%m%d-%H%M%S)
out="$work/$stamp"
mkdir -p "$out"
# prompt lengths the bench uses at each resolution (25 text tokens + (R/64)² image tokens)
prompt_tokens=$(echo "$resolutions" | tr ',' '\n' | awk '{printf "%s%d", (NR>1?",":""), 25 + ($1/64)^2}')
echo "results in $out (threads $threads, $rounds rounds × $runs runs)" >&2

llama_types=(F16 Q8_0 Q4_0)
declare -A gguf
if [[ -n $llama ]]; then
  # one cache entry per checkpoint directory; rewritten when its weights are newer than the GGUF
  key=$(basename "$(realpath "$ckpt")")-$(realpath "$ckpt" | cksum | cut -d' ' -f1)
  mkdir -p "$work/llama"
  weights=$ckpt/model.safetensors
  [[ -f $weights ]] || weights=$ckpt/model.safetensors.index.json
  f16=$work/llama/$key-f16.gguf
  if [[ ! -s $f16 || $weights -nt $f16 ]]; then
    src=$ckpt
    kind=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("model_type"))' "$ckpt/config.json")
    if [[ $kind != fast_vlm || ! -f $ckpt/model.safetensors ]]; then
      # Apple layout (or sharded): a one-file transformers-layout copy of the language model first
      src=$work/llama/$key-hf
      echo "llama.cpp: language model of $ckpt -> $src" >&2
      "$python" scripts/llm_hf_view.py "$ckpt" "$src" --ref-dir "$ref_dir" >/dev/null
    fi
    echo "llama.cpp: writing $f16" >&2
    "$python" "$ref_dir/qwen2_gguf.py" "$src" "$f16.tmp" >/dev/null
    mv "$f16.tmp" "$f16"
    [[ $src == "$ckpt" ]] || rm -rf "$src"
  fi
  gguf[F16]=$f16
  for t in Q8_0 Q4_0; do
    q=$work/llama/$key-${t,,}.gguf
    if [[ ! -s $q || $f16 -nt $q ]]; then
      echo "llama.cpp: quantizing to $q" >&2
      "$llama/llama-quantize" "$f16" "$q.tmp" "$t" "$threads" > "$work/llama/$key-${t,,}.log" 2>&1 || {
        echo "llama-quantize failed, see $work/llama/$key-${t,,}.log" >&2
        exit 1
      }
      mv "$q.tmp" "$q"
    fi
    gguf[$t]=$q
  done
fi

run_ours() {  # name dir dtype
  "$bin" --threads "$threads" bench --model "$2" --dtype "$3" --resolutions "$resolutions" \
    --runs "$runs" --new-tokens "$new_tokens" --json > "$out/$1-r$r.json"
}
run_torch() {
  "$python" "$ref_dir/time_checkpoint.py" "$ckpt" --resolutions "$resolutions" --threads "$threads" \
    --runs "$runs" --new-tokens "$new_tokens" > "$out/pytorch-r$r.json"
}
run_ort() {
  "$python" "$ref_dir/ort_vision.py" "$ckpt" --resolutions "$resolutions" --threads "$threads" \
    --runs "$runs" --onnx-dir "$work/onnx" > "$out/ort-vision-r$r.json"
  "$python" scripts/ort_prefill.py "$ckpt" --ref-dir "$ref_dir" --prompt-tokens "$prompt_tokens" \
    --threads "$threads" --runs "$runs" --onnx-dir "$work/onnx" > "$out/ort-prefill-r$r.json"
}
run_llama() {  # type
  "$llama/llama-bench" -m "${gguf[$1]}" -t "$threads" -p "$prompt_tokens" -n "$new_tokens" -r "$runs" \
    -o json > "$out/llama-${1,,}-r$r.json"
}

for ((r = 1; r <= rounds; r++)); do
  # rotate the order every round
  jobs=("ours" "torch")
  [[ $ort == 1 ]] && jobs+=("ort")
  for ((i = 0; i < ${#quantized[@]}; i++)); do jobs+=("q$i"); done
  [[ -n $llama ]] && for t in "${llama_types[@]}"; do jobs+=("llama-$t"); done
  n=${#jobs[@]}
  for ((j = 0; j < n; j++)); do
    job=${jobs[$(((j + r - 1) % n))]}
    echo "round $r/$rounds: $job" >&2
    case $job in
      ours) run_ours scenesay "$ckpt" "$dtype" ;;
      torch) run_torch ;;
      ort) run_ort ;;
      q*) q=${quantized[${job#q}]}; run_ours "quantized-$(basename "$q")" "$q" f32 ;;
      llama-*) run_llama "${job#llama-}" ;;
    esac
  done
done
"$python" scripts/compare_table.py "$out"
