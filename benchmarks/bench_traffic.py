"""Engine time and the environment's own overhead per decision, on generated grids (SUMO; CityFlow
where installed).

For N = 16, 96 (Manhattan-96), 225 and 1225 intersections: one decision = ``action_interval`` (10)
engine steps plus the wrapper's work (setting phases, reading lane counts, building observations,
rewards and the PyG graph). The engine's share is timed around ``next_step``; the rest is the wrapper.

    python benchmarks/bench_traffic.py
    python benchmarks/bench_traffic.py --decisions 30 --engine cityflow
"""

import argparse
import time

import torch

from ipgnn.config import EnvConfig, GraphConfig
from ipgnn.envs import make_env

SCENARIOS = {
    16: ({"kind": "grid", "rows": 4, "cols": 4, "rate": 300}, "grid 4x4"),
    96: ({"kind": "manhattan", "rate": 150}, "Manhattan-96"),
    225: ({"kind": "grid", "rows": 15, "cols": 15, "rate": 300}, "grid 15x15"),
    1225: ({"kind": "grid", "rows": 35, "cols": 35, "rate": 300}, "grid 35x35"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=list(SCENARIOS))
    p.add_argument("--decisions", type=int, default=30, help="decisions timed after 10 of warm-up traffic")
    p.add_argument("--engine", default="sumo")
    args = p.parse_args()
    print("| N | scenario | engine s/decision | wrapper s/decision | wrapper share |")
    print("|---|---|---|---|---|")
    for n in args.agents:
        spec, label = SCENARIOS[n]
        env = make_env(EnvConfig(task="traffic", num_agents=n, max_steps=10_000, graph=GraphConfig(kind="env"),
                                 options={"scenario": spec, "engine": args.engine}))
        raw = env.env
        obs = env.reset(seed=0)
        engine_time = 0.0
        real_next = raw.engine.next_step

        def timed_next():
            nonlocal engine_time
            t0 = time.perf_counter()
            real_next()
            engine_time += time.perf_counter() - t0

        raw.engine.next_step = timed_next
        torch.manual_seed(0)
        for _ in range(10):
            obs = env.step(env.random_action(obs)).obs
        engine_time = 0.0
        t0 = time.perf_counter()
        for _ in range(args.decisions):
            obs = env.step(env.random_action(obs)).obs
        total = (time.perf_counter() - t0) / args.decisions
        eng = engine_time / args.decisions
        print(f"| {n} | {label} | {eng:.4f} | {total - eng:.4f} | {(total - eng) / total:.1%} |", flush=True)
        env.close()


if __name__ == "__main__":
    main()
