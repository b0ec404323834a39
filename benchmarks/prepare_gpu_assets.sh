#!/usr/bin/env bash
# Stages what benchmarks/gpu_check.sh needs on a machine with no internet, no model packages and no shared data
# folder, into two git-ignored folders to carry there:
#   .whl/           transformers 5.24.0 (+ regex, whose required version may be missing) wheels for Python 3.12
#   .bench_assets/  the default pair's tokenizers (from the converted pretrained models) and the benchmark data
#                   (GSM8K train, MGSM en/zh/sw/bn) copied from ../shared/data; nothing here is committed
#   .peer_assets/   for the peer benchmark (benchmarks/peer, issue 19): wheels of transformers 4.37.2 and what it
#                   needs beside that machine's packages (setup_official_env.sh --wheels), and the parts of the
#                   official checkout the benchmark runs (langbridge/ and the harness's lm_eval core and models/),
#                   copied from $LANGBRIDGE_OFFICIAL (a checkout of github.com/kaistAI/LangBridge at 4f43fb2);
#                   skipped, with a note, when that variable is not set
# Without .bench_assets the GPU run still works: synthetic tokenizers and synthetic data of the same shape.
# Carry all three (about 50 MiB; the device tool carries at most 64 MiB): .whl .bench_assets .peer_assets
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

EXCLUDE=$(git rev-parse --git-path info/exclude)  # .git is a file in a worktree
mkdir -p "$(dirname "$EXCLUDE")"
for ignored in /.whl/ /.bench_assets/ /.peer_assets/; do
  grep -qxF "$ignored" "$EXCLUDE" 2>/dev/null || echo "$ignored" >> "$EXCLUDE"
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

# Peer benchmark: the official code's environment as wheels, and the official code it runs.
rm -rf .peer_assets
mkdir -p .peer_assets
bash benchmarks/peer/setup_official_env.sh --wheels .peer_assets/wheels 3.12
OFFICIAL=${LANGBRIDGE_OFFICIAL:-}
if [[ -n "$OFFICIAL" && -f "$OFFICIAL/langbridge/modeling_langbridge.py" ]]; then
  dst=.peer_assets/official
  mkdir -p "$dst/evaluation-harness/lm_eval"
  cp -r "$OFFICIAL/langbridge" "$dst/"
  cp "$OFFICIAL"/evaluation-harness/lm_eval/{__init__,base,metrics,utils}.py "$dst/evaluation-harness/lm_eval/"
  cp -r "$OFFICIAL/evaluation-harness/lm_eval/models" "$dst/evaluation-harness/lm_eval/"
  commit=$(git -C "$OFFICIAL" rev-parse HEAD 2>/dev/null || cat "$OFFICIAL/COMMIT" 2>/dev/null || echo unknown)
  echo "$commit (a subset of $OFFICIAL, copied by prepare_gpu_assets.sh)" > "$dst/COMMIT"
  echo "official code: $(cat "$dst/COMMIT")"
else
  echo "LANGBRIDGE_OFFICIAL is not set to an official checkout: the GPU run will skip the peer comparison"
fi
du -sh .whl .bench_assets .peer_assets
echo "carry: .whl .bench_assets .peer_assets"
