"""Profile one IP-SAC update (the loop behind the figures in benchmarks/README.md).

Usage::

    python benchmarks/profile_update.py                 # mean time of 10 updates at N=96, B=64
    python benchmarks/profile_update.py --profile       # plus torch.profiler's table of operators
    python benchmarks/profile_update.py --precision bf16 --threads 1 --profile
    python benchmarks/profile_update.py --agents 3 --batch 128 --hidden 256 --rounds 2 --threads 1 --profile
"""

import argparse
import time

import torch
from bench_update import ACTIONS, OBS, make_buffer

from ipgnn.algos.ipsac import IPSAC, AgentSpec
from ipgnn.config import AlgoConfig, ModelConfig
from ipgnn.cpu import keep_freed_memory_if_room, reexec_with_huge_pages, set_threads


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--agents", type=int, default=96)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--release-memory",
        action="store_true",
        help="leave glibc's allocator as it is (by default, as ipgnn-train and bench_update.py do: huge pages "
        "where the kernel offers them, freed memory kept after the first update when there is room)",
    )
    args = p.parse_args()
    if not args.release_memory:
        reexec_with_huge_pages()
    if args.threads:
        set_threads(args.threads)
    torch.manual_seed(0)
    buf = make_buffer(args.agents, 64)
    algo = IPSAC(
        AgentSpec(OBS, ACTIONS, True),
        ModelConfig(hidden=args.hidden, rounds=args.rounds),
        AlgoConfig(lr=1e-3, precision=args.precision),
    )
    algo.update(buf.sample(args.batch))
    if not args.release_memory:
        print("freed memory kept:", keep_freed_memory_if_room())
    t = time.perf_counter()
    for _ in range(args.updates):
        algo.update(buf.sample(args.batch))
    print(f"N={args.agents} B={args.batch}: {(time.perf_counter() - t) / args.updates:.4f} s per update")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                algo.update(buf.sample(args.batch))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
