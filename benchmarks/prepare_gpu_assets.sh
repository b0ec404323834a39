#!/usr/bin/env bash
# Stages what benchmarks/gpu_check.sh needs on a machine with no internet, no model packages and no shared data
# folder, into two git-ignored folders to carry there:
#   .whl/           transformers 5.24.0 (+ regex, whose required version may be missing) wheels for Python 3.12
#   .bench_assets/  the default pair's tokenizers (from the converted pretrained models) and the benchmark data
#                   (GSM8K train, MGSM en/zh/sw/bn) copied from ../shared/data; nothing here is committed
# Without .bench_assets the GPU run still works: synthetic tokenizers and synthetic data of the same shape.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

for ignored in /.whl/ /.bench_assets/; do
  grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done

mkdir -p .whl
if ! ls .whl/transformers-5.24.0-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl transformers==5.24.0
fi
if ! ls .whl/regex-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl "regex>=2025.10.22"
fi

rm -rf .bench_assets
mkdir -p .bench_assets/tokenizers .bench_assets/data/gsm8k .bench_assets/data/mgsm
PYTHONPATH=src "$PY" - <<'EOF'
import shutil
from pathlib import Path

from langbridge.pretrained import resolve_pretrained

for alias in ("e5-small", "smollm2-135m-instruct"):
    src = Path(resolve_pretrained(alias))
    dst = Path(".bench_assets/tokenizers") / alias
    dst.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    print(f"tokenizer {alias}: {sorted(p.name for p in dst.iterdir())}")
EOF
DATA=${LANGBRIDGE_DATA:-../shared/data}
cp "$DATA/gsm8k/train.jsonl" .bench_assets/data/gsm8k/
for lang in en zh sw bn; do cp "$DATA/mgsm/mgsm_$lang.tsv" .bench_assets/data/mgsm/; done
du -sh .whl .bench_assets
echo "carry: .whl .bench_assets"
