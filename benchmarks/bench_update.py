"""Forward+backward time of the intention propagation network and of one full IP-SAC update.

For each N: B graphs of N agents at random positions in the unit square, a k-NN graph (k = 8), the
network at M rounds and hidden width 128 (the issue's setting), observations of 18 features and 5
discrete actions (cooperative navigation's sizes). Minibatches come from a real GraphReplayBuffer
(dynamic graphs), so batch assembly is included in the update time.

    python benchmarks/bench_update.py                       # the table in benchmarks/README.md
    python benchmarks/bench_update.py --agents 16 96 --batch 1024 --device cuda

Prints one Markdown row per (N, B); ``--json`` writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch_geometric.data import Data

from ipgnn.algos.ipsac import IPSAC, AgentSpec
from ipgnn.config import AlgoConfig, ModelConfig
from ipgnn.cpu import keep_freed_memory_if_room, reexec_with_huge_pages, release_freed_memory, set_threads
from ipgnn.graphs import knn_edges
from ipgnn.precision import autocast
from ipgnn.replay import GraphReplayBuffer

OBS, ACTIONS, K = 18, 5, 8


def make_buffer(n: int, steps: int, seed: int = 0) -> GraphReplayBuffer:
    g = torch.Generator().manual_seed(seed)
    buf = GraphReplayBuffer(steps, n, OBS, ACTIONS, True, max_edges=n * min(K, n - 1), seed=seed)
    pos = torch.rand(steps + 1, n, 2, generator=g)
    edges = knn_edges(pos, K)  # [steps+1, 2, N*k], one batched call
    for t in range(steps):
        obs = Data(x=torch.randn(n, OBS, generator=g), edge_index=edges[t])
        nxt = Data(x=torch.randn(n, OBS, generator=g), edge_index=edges[t + 1])
        buf.add(
            obs,
            torch.randint(ACTIONS, (n,), generator=g),
            torch.randn(n, generator=g),
            torch.zeros(n, dtype=torch.bool),
            nxt,
        )
    return buf


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def bench(
    n: int,
    batch: int,
    rounds: int,
    hidden: int,
    repeats: int,
    device: torch.device,
    keep_memory: bool = True,
    precision: str = "fp32",
) -> dict:
    torch.manual_seed(0)
    buf = make_buffer(n, steps=min(64, max(8, batch)))
    algo = IPSAC(
        AgentSpec(OBS, ACTIONS, True),
        ModelConfig(hidden=hidden, rounds=rounds),
        AlgoConfig(lr=1e-3, precision=precision),
    ).to(device)
    sample = buf.sample(batch, device)
    release_freed_memory()  # each size decides for itself, after one update, as the trainer does
    algo.update(sample)
    kept = keep_memory and device.type == "cpu" and keep_freed_memory_if_room()[0]

    def policy_fwd_bwd():
        with autocast(precision, device.type):
            out = algo.policy(sample.obs).dist
        out.logits.sum().backward()

    t_policy = timed(policy_fwd_bwd, repeats, device)
    t_sample = timed(lambda: buf.sample(batch, device), repeats, device)
    t_update = timed(lambda: algo.update(buf.sample(batch, device)), repeats, device)
    return {
        "agents": n,
        "batch": batch,
        "nodes": n * batch,
        "edges": n * min(K, n - 1) * batch,
        "policy_fwd_bwd_s": t_policy,
        "sample_s": t_sample,
        "update_s": t_update,
        "updates_per_s": 1.0 / t_update,
        "freed_memory_kept": kept,
        "precision": precision,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=[16, 96, 225, 1225])
    p.add_argument("--batch", type=int, nargs="+", default=[32, 1024])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--max-nodes",
        type=int,
        default=300_000,
        help="skip (N, B) pairs above this many nodes per minibatch (memory/time guard)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="algo.precision of the update")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--json", help="write the raw figures here")
    p.add_argument(
        "--release-memory",
        action="store_true",
        help="leave glibc's allocator as it is (by default, as ipgnn-train does, huge pages where the kernel "
        "offers them, and freed memory kept after the first update when there is room: ipgnn.cpu)",
    )
    args = p.parse_args()
    if not args.release_memory:
        reexec_with_huge_pages()  # as ipgnn-train does (ipgnn.cpu)
    if args.threads:
        set_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}; precision {args.precision}; "
        f"k={K}, M={args.rounds}, hidden={args.hidden}"
    )
    print("| N | B | nodes | propagation fwd+bwd (s) | minibatch assembly (s) | full SAC update (s) | updates/s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for n in args.agents:
        for b in args.batch:
            if n * b > args.max_nodes:
                print(f"| {n} | {b} | {n * b} | skipped (> --max-nodes) | | | |")
                continue
            r = bench(n, b, args.rounds, args.hidden, args.repeats, device, not args.release_memory, args.precision)
            rows.append(r)
            print(
                f"| {n} | {b} | {r['nodes']} | {r['policy_fwd_bwd_s']:.4f} | {r['sample_s']:.4f} | "
                f"{r['update_s']:.4f} | {r['updates_per_s']:.2f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
