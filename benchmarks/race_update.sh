#!/usr/bin/env bash
# Old commit against the working tree, interleaved on one machine: bench_update.py at each (N, B), old then
# new, so both see the same load. The old side runs from a temporary git worktree of OLD.
#   bash benchmarks/race_update.sh f5ff202                  # the table in benchmarks/README.md (issue 16)
#   SIZES="96:64:5 225:64:5" bash benchmarks/race_update.sh f5ff202
#   PRECISIONS="fp32 bf16" THREADS=1 bash benchmarks/race_update.sh f5ff202   # new side at each algo.precision
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: race_update.sh OLD_COMMIT}
SIZES=${SIZES:-"96:64:5 225:64:5 96:1024:2 225:1024:2"}   # N:B:repeats
PRECISIONS=${PRECISIONS:-fp32}                              # the new side's algo.precision values
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi  # both sides
tree=$(mktemp -d)
git worktree add -q --detach "$tree" "$OLD"
trap 'git worktree remove --force "$tree"' EXIT
echo "| side | N | B | nodes | propagation fwd+bwd (s) | minibatch assembly (s) | full SAC update (s) | updates/s |"
for size in $SIZES; do
  IFS=: read -r n b r <<< "$size"
  (cd "$tree" && PYTHONPATH="$tree/src" python benchmarks/bench_update.py --agents "$n" --batch "$b" --repeats "$r" \
     --max-nodes 300000 | tail -1 | sed "s/^|/| old ($OLD) |/")
  for prec in $PRECISIONS; do
    python benchmarks/bench_update.py --agents "$n" --batch "$b" --repeats "$r" --max-nodes 300000 \
      --precision "$prec" | tail -1 | sed "s/^|/| new ($prec) |/"
  done
done
