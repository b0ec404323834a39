#!/usr/bin/env bash
# One prepared GPU run (about 8 minutes on one H100): the benchmark on CUDA with bf16 weights + autocast for
#   1. the default pair's architecture (e5-small + SmolLM2-135M, random weights), with the official-approach
#      reference (fp32) for speed ratios: training MFU, generation b=1/8/32, MGSM (100 questions), scaling;
#   2. a 1B-class Llama (hidden 2048, 16 layers) with an e5-small-class encoder: training MFU and generation;
#   3. the paper's scale (issue 8): mT5-XL encoder + 7B Llama (configs/model_configs), bridge trained, encoder
#      and LM frozen: a few training steps, tokens/s, MFU and peak memory;
#   4. the peer benchmark (issue 19, benchmarks/peer): the REAL official LangBridge code (transformers 4.37.2,
#      its harness's generate path) against ours on the default pair's architecture (random weights, bf16), 20
#      Swahili MGSM questions x 64 tokens, batch 1 and 20: tokens/s, peak GPU memory, batched = batch-1 outputs.
#      Needs .peer_assets (LANGBRIDGE_OFFICIAL=<official checkout> bash benchmarks/prepare_gpu_assets.sh);
#      skipped without it. About 5 minutes.
# MFU is against the GPU's bf16 dense matmul peak measured in the same run. Results: $OUT/gpu_*.json, the log
# $OUT/gpu_check.log. Prepare the carried folders first with benchmarks/prepare_gpu_assets.sh.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine
#   bash benchmarks/gpu_check.sh --peer-only  # only step 4 (and the installs): the peer comparison
#   bash benchmarks/gpu_check.sh --dry        # the same steps on this CPU with toy models, to test the script
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
PEER_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --dry) DRY=1 ;;
    --peer-only) PEER_ONLY=1 ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$(mktemp -d /tmp/gpu-check-XXXX)}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
PY=${PYTHON:-python3}
FAILED=()
START=$(date +%s)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, record failures, keep going
  local name=$1 limit=$2
  shift 2
  echo "=== [$(($(date +%s) - START))s] $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  local rc=$?
  echo "=== $name: exit $rc"
  [[ $rc -ne 0 ]] && FAILED+=("$name=$rc")
  return 0
}

echo "gpu_check: dry=$DRY out=$OUT $(date -u +%FT%TZ)"
if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi

# transformers 5.24 (the version this code targets) from the carried wheels, ahead of the machine's own.
shopt -s nullglob
WHEELS=(.whl/*.whl)
if ((${#WHEELS[@]})); then
  if ((DRY)); then
    # Python here is not 3.12: check that the wheels install for 3.12, but run with the local packages.
    step install-check 120 "$PY" -m pip install -q --no-index --no-deps --target "$OUT/site-check" \
      --python-version 3.12 --platform manylinux2014_x86_64 --only-binary=:all: "${WHEELS[@]}"
    export PYTHONPATH=src
  else
    step install 120 "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "${WHEELS[@]}"
    export PYTHONPATH=/tmp/site:src
  fi
else
  echo "no .whl/ wheels: using the installed transformers"
  export PYTHONPATH=src
fi
step versions 180 "$PY" -c "
import sys, torch, transformers, tokenizers, huggingface_hub, safetensors, accelerate, numpy
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'transformers', transformers.__version__, 'from', transformers.__file__)
print('tokenizers', tokenizers.__version__, 'hub', huggingface_hub.__version__, 'safetensors', safetensors.__version__,
      'accelerate', accelerate.__version__, 'numpy', numpy.__version__)
print('gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
import langbridge, langbridge.training, langbridge.evaluation, benchmarks.run  # everything the runs import
"

if ((DRY)); then
  DEV=(--device cpu --dtype fp32)
  DEFAULT=tiny LARGE=tiny PAPER=tiny-mt5
  SMALL=(--quick --train-steps 1 --repeats 1 --gen-batches 1,2 --gen-tokens 2 --eval-questions 4
    --eval-max-new-tokens 2 --train-batch 2)
  LIMITS=(600 300 300)
else
  DEV=(--device cuda --dtype bf16)
  DEFAULT=default LARGE=llama-1b PAPER=paper
  SMALL=()
  LIMITS=(200 110 150)
fi

if ((!PEER_ONLY)); then
step default-pair "${LIMITS[0]}" "$PY" benchmarks/run.py --models "$DEFAULT" "${DEV[@]}" --random-weights \
  --eval-max-new-tokens 64 "${SMALL[@]}" --output "$OUT/gpu_default.json"
step llama-1b "${LIMITS[1]}" "$PY" benchmarks/run.py --models "$LARGE" "${DEV[@]}" --random-weights \
  --phases train,generate "${SMALL[@]}" --output "$OUT/gpu_llama1b.json"
step paper-scale "${LIMITS[2]}" "$PY" benchmarks/run.py --models "$PAPER" "${DEV[@]}" --random-weights \
  --phases train --no-reference --train-batch 4 --train-steps 5 --repeats 1 \
  --train-override data.max_encoder_length=1024 --train-override data.max_lm_length=1024 \
  "${SMALL[@]}" --output "$OUT/gpu_paper.json"
fi

# 4. Peer benchmark: the official code runs with that machine's torch and the carried transformers 4.37.2 wheels,
# installed into a folder of their own that only the official side's processes see; the harness's imports that
# its generation path never uses (datasets, sklearn, ...) are stood in and listed in the results.
if [[ -f .peer_assets/official/langbridge/modeling_langbridge.py ]] && compgen -G ".peer_assets/wheels/*.whl" >/dev/null; then
  PEER_WHEELS=.peer_assets/wheels
  if ((DRY)); then
    # The carried wheels are for Python 3.12; fetch the same set for this Python (this machine reaches PyPI).
    PEER_WHEELS="$OUT/peer-wheels"
    step peer-wheels 300 bash benchmarks/peer/setup_official_env.sh --wheels "$PEER_WHEELS" \
      "$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    PEER=(--pair tiny --device cpu --dtype fp32 --threads 1 --questions 2 --new-tokens 4 --batch 2 --engine-batches 2)
    PEER_LIMIT=1500
  else
    PEER=(--device cuda --dtype bf16 --threads 8)
    PEER_LIMIT=420
  fi
  step peer-install 120 "$PY" -m pip install -q --no-index --no-deps --target "$OUT/official-site" "$PEER_WHEELS"/*.whl
  step peer "$PEER_LIMIT" "$PY" benchmarks/peer/run_peer.py --official-checkout .peer_assets/official \
    --official-site "$OUT/official-site" --random-weights "${PEER[@]}" --out-dir "$OUT/peer"
  rm -rf "$OUT/peer/assets" "$OUT/peer"/*.pt  # models and logits: GBs, not results
else
  echo "no .peer_assets: peer comparison skipped (LANGBRIDGE_OFFICIAL=<checkout> bash benchmarks/prepare_gpu_assets.sh)"
fi

echo "=== done in $(($(date +%s) - START))s; results:"
ls -la "$OUT"
if ((${#FAILED[@]})); then
  echo "FAILED steps: ${FAILED[*]}"
  exit 1
fi
