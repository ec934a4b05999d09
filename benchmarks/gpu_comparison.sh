#!/usr/bin/env bash
# The paper's large-N comparison rows (Fig. 3b: grid 15x15, N = 225; Fig. 3c: grid 35x35, N = 1225), seven
# methods on Table 2's settings, for a GPU machine (the `run` tool) as it stands:
#   bash benchmarks/gpu_comparison.sh                       # both grids, seeds 0-2, Table 2's run length
#   STEPS=20000 SEEDS=0 bash benchmarks/gpu_comparison.sh   # a reduced budget (state it with the result)
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_comparison.sh    # a check that it runs, in minutes on a CPU
# Each method runs at the lr tuned on Hangzhou-16 (results/paper/tuning/hangzhou16/tuned.yaml) when that file
# exists, else at Table 2's. A method that cannot fit the device's memory (MADDPG, QMIX at N = 1225) is refused
# up front by its memory check and reported as failed, with the figure, in its run's stderr.log. Results go to
# ${OUT:-results/paper}/grid15x15 and grid35x35, as the CPU rows; record the card (first line) with them.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-results/paper}
SEEDS=${SEEDS:-0-2}
ALL=${ALGOS:-ipsac,iql,dgn,qmix,maddpg,maddpg_s,pic}
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
TUNED=()
[ -f results/paper/tuning/hangzhou16/tuned.yaml ] && TUNED=(--tuned results/paper/tuning/hangzhou16/tuned.yaml)
EXTRA=(--device="$DEVICE" --logger.mode=disabled --env.options.engine=cityflow)
[ -n "${STEPS:-}" ] && EXTRA+=(--train.total_steps="$STEPS")
if [ -n "${QUICK:-}" ]; then  # tiny: 300 decisions, batch 16, width 16, the 15x15 grid only
  EXTRA+=(--train.total_steps=300 --train.learning_starts=100 --train.eval_every=100 --replay.batch_size=16
          --model.hidden=16 --train.checkpoint_every=0 --env.max_steps=50)
  GRIDS="grid15x15"
else
  GRIDS="grid15x15 grid35x35"
fi
status=0
for grid in $GRIDS; do
  ipgnn-compare --config "configs/$grid.yaml" --algos "$ALL" --seeds "$SEEDS" "${TUNED[@]}" "${EXTRA[@]}" \
    --out "$OUT/$grid" || status=1   # a refused method fails its run; the others still run and are summarised
done
exit $status
