#!/usr/bin/env bash
# A Python environment for the REAL official LangBridge code (github.com/kaistAI/LangBridge @ 4f43fb2), for the
# peer benchmark (benchmarks/peer/run_peer.py). The official code needs transformers 4.37.2; this library needs
# transformers 5, so the official side runs in its own environment and process.
#
#   bash benchmarks/peer/setup_official_env.sh VENV                 # a virtual env at VENV (CPU, from PyPI)
#   bash benchmarks/peer/setup_official_env.sh --wheels DIR [PYVER] # download wheels for an offline machine (GPU)
#
# VENV gets: torch 2.13.0 (pinned: this machine's pip takes its local CPU wheel; unpinned, pip would download a
# multi-GB CUDA build), transformers 4.37.2 with a tokenizers/huggingface-hub of its time, what the official
# `langbridge` package imports (einops, einops-exts; sentencepiece from its requirements), and what the official
# evaluation harness imports on its generation path (evaluation-harness/lm_eval: peft, datasets, sqlitedict,
# omegaconf, sacrebleu, scikit-learn, accelerate). Left out, as irrelevant to inference: deepspeed,
# pytorch-lightning, wandb, torchinfo. Neither the official code nor this repository is installed into it: the
# benchmark puts the checkout on sys.path.
#
# --wheels DIR: wheels (no dependencies) of the packages that differ from a transformers-5 environment, for
# Python PYVER (default 3.12) on manylinux x86_64: transformers 4.37.2, tokenizers 0.15.2, huggingface-hub 0.20.3,
# accelerate 0.26.1, einops, einops-exts. On the offline machine the benchmark installs them with
# `pip install --no-index --no-deps --target` into a folder put ahead of that machine's packages, and uses that
# machine's torch. The harness's other imports are then absent, and the runner stands in empty modules for them
# (only the harness's generation path runs, which does not use them) and says so in its results.
set -euo pipefail

TRANSFORMERS=transformers==4.37.2
TOKENIZERS=tokenizers==0.15.2
HUB=huggingface-hub==0.20.3
ACCELERATE=accelerate==0.26.1

if [[ "${1:-}" == "--wheels" ]]; then
  DIR=${2:?usage: $0 --wheels DIR [PYVER]}
  PYVER=${3:-3.12}
  PY=${PYTHON:-python3}
  mkdir -p "$DIR"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$DIR" \
    "$TRANSFORMERS" "$TOKENIZERS" "$HUB" "$ACCELERATE" einops einops-exts
  ls -la "$DIR"
  exit 0
fi

VENV=${1:?usage: $0 VENV   (or: $0 --wheels DIR [PYVER])}
PY=${PYTHON:-python3}
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade "pip<26" wheel
# One resolve, everything pinned that has a bearing on speed or on loading the models.
"$VENV/bin/python" -m pip install -q \
  "torch==2.13.0" "$TRANSFORMERS" "$TOKENIZERS" "$HUB" "$ACCELERATE" "safetensors>=0.4.1" "numpy<2" \
  einops einops-exts sentencepiece \
  "peft==0.8.2" "datasets==2.16.1" "pyarrow==15.0.2" sqlitedict "omegaconf>=2.2" "sacrebleu==1.5.0" scikit-learn psutil
"$VENV/bin/python" - <<'EOF'
import sys, torch, transformers, tokenizers, huggingface_hub, accelerate
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__, "hub", huggingface_hub.__version__, "accelerate", accelerate.__version__)
assert transformers.__version__ == "4.37.2", transformers.__version__
EOF
echo "official env ready: $VENV"
