"""Environment steps per second: ``mpe2``'s ``simple_spread_v3`` against the tensor ``spread`` scenario.

One environment step = all ``N`` agents act once and every agent's observation and reward are
computed (for ``mpe2``: ``parallel_env.step`` with a dict of random discrete actions; for the tensor
scenario: ``step`` with a ``[B, N]`` tensor of random discrete actions, ``B`` worlds at once, every
world counted). Random actions, CPU, torch's threads left as they are unless ``--threads``.
``mpe2`` has no batching — ``B`` environments cost ``B`` times one — so it is timed at ``B = 1`` only.
Episodes are long enough that no reset falls inside a timed block. The tensor figures are the median
(and the best) of ``--repeats`` blocks of ``--steps`` steps after a warm-up block; ``mpe2`` runs one block of
``--mpe2-steps`` steps (it makes about 1.5 steps/s at ``N = 200``).

Usage: ``python benchmarks/bench_mpe.py [--agents 30 200] [--batch 1 64] [--steps 50] [--repeats 5]``

``--select`` times instead the nearest-candidate selection the scenarios use on each step
(:func:`ipgnn.ops.smallest_k`, ``k = 5``) against ``torch.topk`` on ``[B, N, N]`` squared distances, for
the same ``--agents`` and ``--batch``: median of ``--repeats`` blocks of ``--steps`` calls.
``--graph K`` times the trainer's environment step instead: ``TensorGraphEnv.step`` (the tensor step,
the k-NN graph with ``k = K`` and the PyG ``Batch``), milliseconds per step, same blocks.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench_mpe2(n: int, steps: int, seed: int = 0) -> float:
    """Environment steps per second of ``simple_spread_v3`` with ``n`` agents."""
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(N=n, max_cycles=10**6)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    agents = list(env.possible_agents)
    env.step({a: int(x) for a, x in zip(agents, rng.integers(0, 5, n))})  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step({a: int(x) for a, x in zip(agents, rng.integers(0, 5, n))})
    elapsed = time.perf_counter() - t0
    env.close()
    return steps / elapsed


def bench_tensor(n: int, b: int, steps: int, repeats: int, device: str, seed: int = 0) -> tuple[float, float]:
    """Environment steps per second (counting each of the ``b`` worlds) of the tensor ``spread``: the
    median and the best of ``repeats`` blocks."""
    from ipgnn.envs.mpe_tensor import make_scenario

    sc = make_scenario("spread", n, num_envs=b, max_steps=10**9, device=device)
    sc.reset(seed=seed)
    gen = torch.Generator(device=device).manual_seed(seed)

    def block() -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            sc.step(torch.randint(0, 5, (b, n), generator=gen, device=device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    block()  # warm-up
    times = [block() for _ in range(repeats)]
    return b * steps / statistics.median(times), b * steps / min(times)


def bench_select(n: int, b: int, steps: int, repeats: int, k: int = 5) -> tuple[float, float]:
    """Milliseconds per call (median of ``repeats`` blocks) of ``smallest_k`` and of ``topk``."""
    from ipgnn.ops import smallest_k

    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(b, n, 2, generator=gen) * 8
    d2 = ((pos.unsqueeze(1) - pos.unsqueeze(2)) ** 2).sum(-1)
    d2.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    out = []
    for fn in (lambda: smallest_k(d2, k), lambda: d2.topk(k, dim=-1, largest=False, sorted=True)):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times.append((time.perf_counter() - t0) / steps * 1e3)
        out.append(statistics.median(times))
    return out[0], out[1]


def bench_graph_env(n: int, b: int, k: int, steps: int, repeats: int) -> float:
    """Milliseconds per ``TensorGraphEnv.step`` (median of ``repeats`` blocks of ``steps``)."""
    from ipgnn.config import GraphConfig
    from ipgnn.envs.mpe_tensor import make_scenario
    from ipgnn.envs.vector import TensorGraphEnv

    env = TensorGraphEnv(make_scenario("spread", n, num_envs=b, max_steps=10**9), GraphConfig(kind="knn", k=k))
    env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    times = []
    for rep in range(repeats + 1):  # the first block warms up
        actions = [torch.randint(0, 5, (b * n,), generator=gen) for _ in range(steps)]
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        if rep:
            times.append((time.perf_counter() - t0) / steps * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, nargs="+", default=[30, 200])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--steps", type=int, default=50, help="tensor steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per tensor case (median reported)")
    p.add_argument(
        "--mpe2-steps", type=int, nargs="+", default=None, help="mpe2 steps per N (default: 50 below N = 100, else 3)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (ipgnn.cpu.set_threads; default: as it is)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--select", action="store_true", help="time the k-nearest selection instead (CPU)")
    p.add_argument(
        "--graph",
        type=int,
        default=None,
        metavar="K",
        help="time TensorGraphEnv.step (tensor step + k-NN graph with k = K + Batch) instead",
    )
    args = p.parse_args()
    if args.threads is not None:
        from ipgnn.cpu import set_threads

        set_threads(args.threads)
    if args.graph is not None:
        print(
            f"# {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads\n"
        )
        print(f"| N | B | TensorGraphEnv.step, k = {args.graph} (ms) | env-steps/s |")
        print("|---|---|---|---|")
        for n in args.agents:
            for b in args.batch:
                ms = bench_graph_env(n, b, args.graph, args.steps, args.repeats)
                print(f"| {n} | {b} | {ms:.2f} | {b / ms * 1e3:,.0f} |", flush=True)
        return
    if args.select:
        print(
            f"# {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads\n"
        )
        print("| N | B | smallest_k (ms) | topk (ms) | topk / smallest_k |")
        print("|---|---|---|---|---|")
        for n in args.agents:
            for b in args.batch:
                ours, ref = bench_select(n, b, args.steps, args.repeats)
                print(f"| {n} | {b} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f}x |", flush=True)
        return
    mpe2_steps = args.mpe2_steps or [50 if n < 100 else 3 for n in args.agents]
    if len(mpe2_steps) != len(args.agents):
        p.error("--mpe2-steps needs one value per --agents value")

    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}; load average at start {load0:.2f}"
    )
    rows = []
    for n, ms in zip(args.agents, mpe2_steps):
        ref = bench_mpe2(n, ms)
        for b in args.batch:
            ours, best = bench_tensor(n, b, args.steps, args.repeats, args.device)
            rows.append((n, b, ref, ours, best))
            print(
                f"  N={n} B={b}: mpe2 {ref:.1f}/s ({ms} steps), tensor {ours:.1f}/s (best block {best:.1f}/s)",
                flush=True,
            )
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average at end {load1:.2f}\n")
    print(
        "| N | B | mpe2 simple_spread_v3 (env-steps/s) | tensor spread, median (env-steps/s) | best block "
        "| ratio (median) |"
    )
    print("|---|---|---|---|---|---|")
    for n, b, ref, ours, best in rows:
        print(f"| {n} | {b} | {ref:,.1f} | {ours:,.0f} | {best:,.0f} | {ours / ref:,.0f}x |")


if __name__ == "__main__":
    main()
