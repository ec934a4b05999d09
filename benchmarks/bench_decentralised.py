"""Time per decision of decentralised execution against the central network, and the bytes it sends.

    python benchmarks/bench_decentralised.py --checkpoint CKPT [--processes 0 2 16] [--decisions 30]

Plays ``--decisions`` steps of the checkpoint's task with the central greedy policy (real observations),
then times each executor on those same observations: the central ``IntentionPropagationNetwork`` (one
PyG forward), the in-process decentralised network (``processes 0``), and ``W`` worker processes
exchanging intentions through ``multiprocessing`` queues. Each figure is the median over the decisions
after two warm-up decisions. Messages are ``4 d + 12`` bytes (``ipgnn.decentralised``).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--processes", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--decisions", type=int, default=30)
    args = parser.parse_args()

    import torch

    from ipgnn.cpu import set_threads
    from ipgnn.decentralised import Links, decentralised_policy
    from ipgnn.runs import load_run

    set_threads(1)
    cfg, env, algo = load_run(args.checkpoint)
    obs_list, obs = [], env.reset(seed=0)
    for _ in range(args.decisions):
        obs_list.append(obs)
        obs = env.step(algo.act(obs, deterministic=True)).obs
    env.close()

    def time_it(act) -> float:
        times = []
        for k, o in enumerate(obs_list):
            t0 = time.perf_counter()
            act(o)
            if k >= 2:
                times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    n = env.num_agents
    rows = [("central (one PyG forward)", time_it(lambda o: algo.act(o, deterministic=True)), "")]
    for w in args.processes:
        pol = decentralised_policy(algo, n, Links(), w)
        pol.begin_episode(0)
        try:
            ms = time_it(pol)
            stats = pol.stats
        finally:
            pol.close()
        rows.append(
            (
                f"decentralised, {'in this process' if w == 0 else f'{w} worker processes'}",
                ms,
                f"{stats['bytes_per_agent_round']:.0f}",
            )
        )
    print(
        f"{cfg.name}, N = {n}, d = {cfg.model.hidden}, M = {cfg.model.rounds}, {args.decisions} decisions, "
        f"torch {torch.__version__}, one torch thread per process"
    )
    print("| executor | ms per decision (median) | bytes per agent and round |\n|---|---|---|")
    for name, ms, b in rows:
        print(f"| {name} | {ms:.2f} | {b} |")


if __name__ == "__main__":
    main()
