#!/usr/bin/env bash
# Side-by-side speed comparison on one checkpoint: scenesay's `bench`, the PyTorch reference timer
# (time_checkpoint.py), ONNX Runtime on the vision encoder (ort_vision.py) and on the LLM prefill
# (scripts/ort_prefill.py), all with the same threads, run in alternating rounds so that a noisy
# machine disturbs every engine alike. Prints the ratio table (medians over all rounds' samples).
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
set -euo pipefail
cd "$(dirname "$0")/.."

ref_dir=${SCENESAY_REF_DIR:-}
python=${SCENESAY_PYTHON:-python3}
threads=2 rounds=3 runs=3 new_tokens=32 resolutions=256,1024 dtype=f32
work=compare-out bin="" ort=1 quantized=() ckpt=""
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

for ((r = 1; r <= rounds; r++)); do
  # rotate the order every round
  jobs=("ours" "torch")
  [[ $ort == 1 ]] && jobs+=("ort")
  for ((i = 0; i < ${#quantized[@]}; i++)); do jobs+=("q$i"); done
  n=${#jobs[@]}
  for ((j = 0; j < n; j++)); do
    job=${jobs[$(((j + r - 1) % n))]}
    echo "round $r/$rounds: $job" >&2
    case $job in
      ours) run_ours scenesay "$ckpt" "$dtype" ;;
      torch) run_torch ;;
      ort) run_ort ;;
      q*) q=${quantized[${job#q}]}; run_ours "quantized-$(basename "$q")" "$q" f32 ;;
    esac
  done
done
"$python" scripts/compare_table.py "$out"
