#!/usr/bin/env bash
# The paper's comparison (Fig. 3, 4a, 5), run on the CPU-sized configs: seven methods, one protocol.
#
#   bash benchmarks/paper_campaign.sh STEP [STEP ...]     # e.g. tune-traffic hangzhou16 manhattan96
#
# Steps, in the order they depend on each other:
#   tune-traffic   the lr grid {3e-4, 1e-3, 3e-3} x 7 methods on Hangzhou-16 (CityFlow), held-out seed 100,
#                  then each method's best lr -> results/paper/tuning/hangzhou16/tuned.yaml
#   hangzhou16 manhattan96 grid7x7
#                  7 methods x seeds $SEEDS on CityFlow, each method at its tuned lr
#   tune-spread30  the same grid on cooperative navigation N = 30 -> results/paper/tuning/spread30/tuned.yaml
#   spread30       7 methods x seeds $SEEDS, each at its tuned lr
#   hetero100      heterogeneous navigation N = 100 at a reduced budget (see its line), the spread30 lrs
# The ablations and the policy interpretation (Fig. 6, Fig. 7; results/paper/ablations, results/paper/interpretation):
# The traffic field's benchmark (docs/traffic.md#the-fields-benchmark; results/benchmark/learned):
#   bench-jn1 bench-jn2 bench-jn3 bench-hz1 bench-hz2
#                  IP-SAC and CoLight x seeds $SEEDS, 100 one-hour episodes each, one column of the table per step
#                  (the rule rows: python benchmarks/traffic_rules.py)
#   bench-jn1-u1 ... bench-hz2-u1
#                  the same at one gradient step per decision (--train.gradient_steps=100; results/benchmark/learned_u1),
#                  CoLight's own update ratio rather than the shared 8 per 100; run on HZ1 (bench-hz1-u1)
#   bench-jn1-running ... bench-hz2-running
#                  IP-SAC with the observation feature 'running' (Advanced-MP's effective running vehicles) added,
#                  the shared schedule; results/benchmark/learned_running
#   bench-jn1-long ... bench-hz2-long
#                  IP-SAC at twice the budget (200 episodes, --train.total_steps=72000): does it keep improving?
#                  Nothing in IP-SAC depends on the budget, so on one machine its first 100 episodes are the bench-<set>
#                  run of the same seed; on another CPU model the last digits differ and the runs part early.
#                  results/benchmark/learned_long
#   ablate-k       IP-SAC, k in {3, 4, 6, 8, 10} on navigation N = 30, seeds of the sweep file (configs/sweeps/knn_k.yaml)
#   ablate-hops    IP-SAC, M in {1, 2, 3} on navigation N = 30 (configs/sweeps/hop_size.yaml)
#   ablate-graph7 ablate-graph10
#                  IP-SAC on the road graph against a fully connected one, grid 7x7 / 10x10 on CityFlow
#   interpret      app. C.3 on grid 7x7 for IP, DGN and PIC, from the grid7x7 step's checkpoints (after grid7x7),
#                  5 episodes per seed, sampled actions as the paper, and again greedy
#
# Every step is an ipgnn-compare call: finished runs are skipped and interrupted ones resumed, so the script
# can be stopped and started again at will. One worker with one torch thread by default (WORKERS=2 for two).
# Each step ends with its results/paper/<task>/summary.md, summary.csv and curves_<task>.png.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0-2}
WORKERS=${WORKERS:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ALL=ipsac,iql,dgn,qmix,maddpg,maddpg_s,pic
DRY_RUN=${DRY_RUN:-}  # DRY_RUN=1: check and print every step's runs, run nothing
compare() { ipgnn-compare --workers "$WORKERS" --logger.mode=disabled ${DRY_RUN:+--dry-run} "$@"; }
after() { if [ -z "$DRY_RUN" ]; then "$@"; fi; }  # a step's follow-up (tuned.yaml, interpretation): not in a dry run

{  # parsed whole before it runs, so that editing this file during a campaign cannot change the running one
for step in "$@"; do
  case "$step" in
    tune-traffic)
      compare --sweep configs/sweeps/lr_hangzhou16.yaml --out results/paper/tuning/hangzhou16
      after ipgnn-compare --select-best results/paper/tuning/hangzhou16 ;;
    hangzhou16|manhattan96|grid7x7)
      compare --config "configs/$step.yaml" --algos "$ALL" --seeds "$SEEDS" --env.options.engine=cityflow \
        --tuned results/paper/tuning/hangzhou16/tuned.yaml --out "results/paper/$step" ;;
    tune-spread30)
      compare --sweep configs/sweeps/lr_spread30.yaml --out results/paper/tuning/spread30
      after ipgnn-compare --select-best results/paper/tuning/spread30 ;;
    spread30)
      compare --config configs/mpe_spread30.yaml --algos "$ALL" --seeds "$SEEDS" \
        --tuned results/paper/tuning/spread30/tuned.yaml --out results/paper/spread30 ;;
    hetero100)  # reduced budget: 20 000 steps as spread30, batch 64, evaluations of 16 episodes
      compare --config configs/mpe_hetero100.yaml --algos "$ALL" --seeds "$SEEDS" \
        --tuned results/paper/tuning/spread30/tuned.yaml --train.total_steps=20000 --train.learning_starts=2000 \
        --replay.batch_size=64 --train.eval_every=4000 --train.eval_episodes=16 --train.checkpoint_every=4000 \
        --out results/paper/hetero100 ;;
    bench-jn1|bench-jn2|bench-jn3|bench-hz1|bench-hz2)
      set_name=${step#bench-}
      compare --config "configs/benchmark/$set_name.yaml" --algos ipsac,colight --seeds "$SEEDS" \
        --out results/benchmark/learned ;;
    bench-jn1-u1|bench-jn2-u1|bench-jn3-u1|bench-hz1-u1|bench-hz2-u1)
      set_name=${step#bench-}; set_name=${set_name%-u1}
      compare --config "configs/benchmark/$set_name.yaml" --algos ipsac,colight --seeds "$SEEDS" \
        --train.gradient_steps=100 --out results/benchmark/learned_u1 ;;
    bench-jn1-running|bench-jn2-running|bench-jn3-running|bench-hz1-running|bench-hz2-running)
      set_name=${step#bench-}; set_name=${set_name%-running}
      compare --config "configs/benchmark/$set_name.yaml" --algos ipsac --seeds "$SEEDS" \
        "--env.options.features=[phase,count,waiting,pressure,running]" --out results/benchmark/learned_running ;;
    bench-jn1-long|bench-jn2-long|bench-jn3-long|bench-hz1-long|bench-hz2-long)
      set_name=${step#bench-}; set_name=${set_name%-long}
      compare --config "configs/benchmark/$set_name.yaml" --algos ipsac --seeds "$SEEDS" \
        --train.total_steps=72000 --out results/benchmark/learned_long ;;
    ablate-k|ablate-hops|ablate-graph7|ablate-graph10)
      sweep=$(case "$step" in ablate-k) echo knn_k ;; ablate-hops) echo hop_size ;; ablate-graph7) echo graph_grid7x7 ;;
              ablate-graph10) echo graph_grid10x10 ;; esac)
      compare --sweep "configs/sweeps/$sweep.yaml" --out "results/paper/ablations/$sweep" ;;
    interpret)
      after ipgnn-interpret --runs results/paper/grid7x7 --algos ipsac,dgn,pic --episodes 5 --interval 20 \
        --out results/paper/interpretation/sampled
      after ipgnn-interpret --runs results/paper/grid7x7 --algos ipsac,dgn,pic --episodes 5 --interval 20 --greedy \
        --out results/paper/interpretation/greedy ;;
    *) echo "unknown step '$step' (tune-traffic, hangzhou16, manhattan96, grid7x7, tune-spread30, spread30, hetero100," \
            "bench-jn1..bench-hz2, bench-jn1-u1..bench-hz2-u1, bench-jn1-running..bench-hz2-running, bench-jn1-long..bench-hz2-long, ablate-k, ablate-hops, ablate-graph7, ablate-graph10, interpret)" >&2
       exit 2 ;;
  esac
done
exit 0
}
