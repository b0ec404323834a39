#!/usr/bin/env bash
# Pilot chain for docs/science.md: each line trains the reconstruction (alignment) stage with one option set
# and scores it on FLORES dev. Usage: bash scripts/science/run_pilots.sh OUT NAME "overrides" [NAME "overrides" ...]
set -uo pipefail
out=$1; shift
mkdir -p "$out"
while [ $# -ge 2 ]; do
  name=$1; overrides=$2; shift 2
  if [ ! -f "$out/$name/final/config.json" ]; then
    echo "=== $name: $overrides ($(date +%T))"
    # shellcheck disable=SC2086
    langbridge train "${CONFIG:-configs/demo/reconstruction.yaml}" output_dir="$out/$name" $overrides \
      > "$out/$name.log" 2>&1 || { echo "FAILED, see $out/$name.log"; tail -3 "$out/$name.log"; continue; }
    grep -E "held-out|bridge_init|done:" "$out/$name.log"
  fi
  python scripts/science/pilot_eval.py "$out/$name/final" 2>&1 | grep -v Loading
done
