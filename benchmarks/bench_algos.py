"""Time per update and peak memory of every algorithm (the six baselines and IP-SAC) at N = 16, 96, 225.

Synthetic minibatches shaped like the traffic tasks: N agents on a grid road graph (4 x 4, 16 x 6 and
15 x 15 intersections: up to 4 neighbours each, in both directions), observations of 30 features, 8
discrete actions, random rewards and a few terminations; ``B`` transitions per minibatch. Each
algorithm is built from its defaults (``model``: Table 2's 128 units, IP's M = 2 rounds; ``algo.options``:
each method's own defaults, e.g. MADDPG's 64 units), does one warm-up update, then ``--repeats``
updates (forward, backward, optimiser steps, target updates) whose mean time is reported.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the updates (the minibatch excluded). On
the CPU each (algorithm, N) runs in a fresh process, and the figure is the growth of its peak resident
set from just before the algorithm is built to the end of the updates (``ru_maxrss``): parameters,
gradients, optimiser state, targets and the update's activations. The configuration check each
algorithm runs first (``check``) is reported too: ``refused`` with its message when the estimate does
not fit.

    python benchmarks/bench_algos.py                         # N = 16 96 225, B = 64, every algorithm
    python benchmarks/bench_algos.py --batch 16 --repeats 3 --algos iql qmix --agents 16 96
    python benchmarks/bench_algos.py --device cuda --batch 1024

Prints a Markdown table; ``--json PATH`` writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from typing import Any

import torch

OBS, ACTIONS = 30, 8
GRIDS = {16: (4, 4), 96: (16, 6), 225: (15, 15), 1225: (35, 35)}
ALGOS = ["ipsac", "iql", "dgn", "qmix", "maddpg", "maddpg_s", "pic"]


def grid_edges(rows: int, cols: int) -> torch.Tensor:
    """A road grid: each intersection linked to its (up to) 4 neighbours, both directions."""
    idx = torch.arange(rows * cols).view(rows, cols)
    pairs = [
        torch.stack([idx[:, :-1].flatten(), idx[:, 1:].flatten()]),
        torch.stack([idx[:-1, :].flatten(), idx[1:, :].flatten()]),
    ]
    e = torch.cat(pairs, 1)
    return torch.cat([e, e.flip(0)], 1)


def grid_for(n: int) -> tuple[int, int]:
    if n in GRIDS:
        return GRIDS[n]
    rows = int(n**0.5)
    while n % rows:
        rows -= 1
    return rows, n // rows


def make_batch(n: int, b: int, device: torch.device, seed: int = 0):
    from torch_geometric.data import Batch

    from ipgnn.replay import TransitionBatch

    g = torch.Generator().manual_seed(seed)
    e = grid_edges(*grid_for(n))
    ei = (e.unsqueeze(0) + (torch.arange(b) * n).view(b, 1, 1)).permute(1, 0, 2).reshape(2, -1)
    batch_vec, ptr = torch.arange(b).repeat_interleave(n), torch.arange(b + 1) * n

    def graphs():
        return Batch(x=torch.randn(b * n, OBS, generator=g), edge_index=ei, batch=batch_vec, ptr=ptr)

    out = TransitionBatch(
        graphs(),
        graphs(),
        torch.randint(ACTIONS, (b * n,), generator=g),
        torch.randn(b * n, generator=g),
        (torch.rand(b * n, generator=g) < 0.01).float(),
    )
    return TransitionBatch(
        out.obs.to(device),
        out.next_obs.to(device),
        out.action.to(device),
        out.reward.to(device),
        out.terminated.to(device),
    ), int(e.size(1))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def bench_one(name: str, n: int, b: int, repeats: int, device_name: str, threads: int | None) -> dict[str, Any]:
    """Build ``name`` for N agents, time ``repeats`` updates after a warm-up, measure peak memory."""
    from ipgnn.cpu import set_threads

    if threads:
        set_threads(threads)
    from ipgnn.algos import algo_class
    from ipgnn.algos.ipsac import AgentSpec
    from ipgnn.config import AlgoConfig, ConfigError, ModelConfig

    device = torch.device(device_name)
    torch.manual_seed(0)
    spec = AgentSpec(OBS, ACTIONS, True)
    model, algo_cfg = ModelConfig(), AlgoConfig(name=name)
    batch, edges = make_batch(n, b, device)
    row: dict[str, Any] = {"algo": name, "agents": n, "batch": b, "edges_per_graph": edges, "device": device_name}
    cls = algo_class(name)
    check = getattr(cls, "check", None)
    try:
        if check is not None:  # the baselines' checks take the device whose memory they compare with
            check(spec, model, algo_cfg, n, b, **({} if name == "ipsac" else {"device": device}))
    except ConfigError as exc:
        row.update(status="refused", message=str(exc))
        return row
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    rss0 = _rss_bytes()
    algo = cls(spec, model, algo_cfg, n).to(device)
    row["parameters"] = sum(p.numel() for p in algo.parameters())
    algo.update(batch)  # warm-up (optimiser state allocated here)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        algo.update(batch)
    sync()
    row["update_s"] = (time.perf_counter() - t0) / repeats
    if device.type == "cuda":
        row["peak_mem_bytes"] = torch.cuda.max_memory_allocated(device) - base
    else:
        row["peak_mem_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    row["status"] = "ok"
    return row


def _worker(args, queue) -> None:
    try:
        queue.put(bench_one(*args))
    except Exception as exc:  # noqa: BLE001 - report it in the table rather than dying
        queue.put({"algo": args[0], "agents": args[1], "batch": args[2], "status": "error", "message": repr(exc)})


def run(name: str, n: int, b: int, repeats: int, device: str, threads: int | None) -> dict[str, Any]:
    """One (algorithm, N) in a fresh process, so that its peak resident set is its own."""
    if device.startswith("cuda"):
        return bench_one(name, n, b, repeats, device, threads)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=((name, n, b, repeats, device, threads), queue))
    proc.start()
    proc.join()
    if not queue.empty():
        return queue.get()
    return {"algo": name, "agents": n, "batch": b, "status": "error", "message": f"worker exit code {proc.exitcode}"}


def fmt(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        msg = row.get("message", "")
        if row["status"] == "refused" and "needs about" in msg:
            msg = "needs " + msg.split("needs about ")[1].split(" for")[0]
        return f"| {row['algo']} | {row['agents']} | {row['batch']} | {row['status']}: {msg[:90]} | | |"
    return (
        f"| {row['algo']} | {row['agents']} | {row['batch']} | {row['update_s']:.4f} | "
        f"{row['peak_mem_bytes'] / 2**20:.0f} | {row['parameters'] / 1e6:.2f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=[16, 96, 225])
    p.add_argument("--batch", type=int, default=64, help="transitions per minibatch (default 64, a CPU size)")
    p.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS)
    p.add_argument("--repeats", type=int, default=3, help="timed updates after one warm-up update")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (ipgnn.cpu.set_threads; default: as it is)")
    p.add_argument("--json", default=None, help="write the raw rows here")
    args = p.parse_args()
    threads = args.threads or torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {args.device}, "
        f"{threads} thread(s), batch {args.batch}, obs {OBS}, {ACTIONS} actions, grid road graph"
    )
    print()
    print("| algorithm | N | B | update (s) | peak memory (MiB) | parameters (M) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for n in args.agents:
        for name in args.algos:
            row = run(name, n, args.batch, args.repeats, args.device, args.threads)
            rows.append(row)
            print(fmt(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
