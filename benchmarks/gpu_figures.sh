#!/usr/bin/env bash
# The GPU figures of issue 16, as one script for a device machine (`run` tool), or on a CPU to check it:
#   bash benchmarks/gpu_figures.sh            # cuda (default)
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_figures.sh
# Writes Markdown tables and JSON under ${OUT:-benchmarks/out}; record them in benchmarks/README.md with
# the card's name (the first line prints it).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
fi
if [ -n "${QUICK:-}" ]; then  # a check that the script runs, in a minute or two on a CPU
  AGENTS="16 96"; BATCHES="64"; PROP_REPEATS=2; DECISIONS=(--decisions 120 --replay.batch_size=32)
else
  AGENTS="16 96 225 1225"; BATCHES="64 1024"; PROP_REPEATS=20; DECISIONS=(--decisions 1000)
fi
# 1. bench_update.py at N = 16, 96, 225, 1225 (B = 64 and 1024; pairs above 1.3M nodes skipped)
python benchmarks/bench_update.py --device "$DEVICE" --agents $AGENTS --batch $BATCHES --max-nodes 1300000 \
  --json "$OUT/update.json" | tee "$OUT/update.md"
# 1b. the same update in bfloat16 autocast (algo.precision: bf16), B = 1024
python benchmarks/bench_update.py --device "$DEVICE" --agents $AGENTS --batch 1024 --max-nodes 1300000 \
  --precision bf16 --json "$OUT/update_bf16.json" | tee "$OUT/update_bf16.md"
# 2. propagation alone at N = 1225, M = 3, d = 128, one graph (target < 2 ms forward+backward)
python benchmarks/bench_update.py --device "$DEVICE" --agents 1225 --batch 1 --rounds 3 --hidden 128 \
  --repeats "$PROP_REPEATS" --json "$OUT/propagation.json" | tee "$OUT/propagation.md"
# 3. time per 1000 decisions of the paper-scale Manhattan-96 config, and the ETA for its 10^6 (target <= 2 h)
python benchmarks/bench_decisions.py --config configs/paper/manhattan96.yaml --device "$DEVICE" "${DECISIONS[@]}" \
  --json "$OUT/decisions.json" | tee "$OUT/decisions.md"
