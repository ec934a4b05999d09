"""The simulator's time and the environment's own overhead per decision, on generated grids and
Manhattan-96, with SUMO or CityFlow.

For N = 16, 96 (Manhattan-96), 225 and 1225 intersections, one episode of ``--decisions`` decisions
(default 100, app. D's episode) from a reset, with uniformly random phases: most intersections change
phase at every decision, the wrapper's worst case. One decision = ``action_interval`` (10) simulated
seconds plus the wrapper's work: setting phases, the per-second lane reads of the travel-time reward, the
observation, the reward and the PyG graph.

What counts as the simulator: only the engine's own step call (libsumo's ``simulationStep``, CityFlow's
``Engine.next_step``). Everything else inside ``env.step`` is the wrapper, the adapters' bookkeeping
included (SUMO's arrival list for the travel time, CityFlow's vehicle list on an upstream build).
The actions are drawn before the clock starts.

    python benchmarks/bench_traffic.py --engine sumo
    python benchmarks/bench_traffic.py --engine cityflow --agents 16 96 225 1225
"""

import argparse
import time
import types

import torch
from _traffic import traffic_env

SCENARIOS = {
    16: ({"kind": "grid", "rows": 4, "cols": 4, "rate": 300}, "grid 4x4"),
    96: ({"kind": "manhattan", "rate": 150}, "Manhattan-96"),
    225: ({"kind": "grid", "rows": 15, "cols": 15, "rate": 300}, "grid 15x15"),
    1225: ({"kind": "grid", "rows": 35, "cols": 35, "rate": 300}, "grid 35x35"),
}


def _timed(inner, method: str, clock: list):
    """A stand-in for ``inner`` whose ``method`` adds its time to ``clock[0]``: every other public attribute is
    copied (bound methods, submodules), so the adapter's other calls cost what they cost unmeasured."""
    proxy = types.SimpleNamespace(**{name: getattr(inner, name) for name in dir(inner) if not name.startswith("__")})
    real = getattr(inner, method)
    perf = time.perf_counter

    def timed(*args, **kwargs):
        t0 = perf()
        out = real(*args, **kwargs)
        clock[0] += perf() - t0
        return out

    setattr(proxy, method, timed)
    return proxy


def measure(n: int, engine: str, decisions: int, seed: int = 0) -> tuple[float, float]:
    """``(simulator, wrapper)`` seconds per decision over one episode from a reset."""
    spec, _ = SCENARIOS[n]
    env = traffic_env(spec, n, engine, decisions)
    obs = env.reset(seed=seed)
    raw, clock = env.env.engine, [0.0]
    if engine == "cityflow":
        raw.eng = _timed(raw.eng, "next_step", clock)
    else:
        raw.traci = _timed(raw.traci, "simulationStep", clock)
    torch.manual_seed(seed)
    actions = [env.random_action(obs) for _ in range(decisions)]  # every phase valid at every decision
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
    total = time.perf_counter() - t0
    env.close()
    return clock[0] / decisions, (total - clock[0]) / decisions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=list(SCENARIOS))
    p.add_argument(
        "--decisions", type=int, default=100, help="decisions timed, from a reset (default: app. D's episode)"
    )
    p.add_argument("--engine", default="sumo", choices=["sumo", "cityflow"])
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="episodes per size; the table gives the median share and that episode's times (default 3)",
    )
    args = p.parse_args()
    print(f"{args.engine}, {args.decisions} decisions from a reset, median of {args.repeats} (shares of all repeats)")
    print("| N | scenario | simulator s/decision | wrapper s/decision | wrapper share | all shares |")
    print("|---|---|---|---|---|---|")
    for n in args.agents:
        runs = sorted(
            (wrap / (sim + wrap), sim, wrap)
            for sim, wrap in (measure(n, args.engine, args.decisions) for _ in range(args.repeats))
        )
        share, sim, wrap = runs[len(runs) // 2]
        shares = ", ".join(f"{r[0]:.1%}" for r in runs)
        print(f"| {n} | {SCENARIOS[n][1]} | {sim:.4f} | {wrap:.4f} | {share:.1%} | {shares} |", flush=True)


if __name__ == "__main__":
    main()
