"""Parallel rollouts at N = 96, 225, 1225: environment decisions per second with 1, 2, ... workers beside a
single-process baseline, the learner's updates per second, and peak memory.

    python benchmarks/bench_rollout.py                       # all sizes, workers 1 and 2
    python benchmarks/bench_rollout.py --sizes 96 --workers 1 2 4 --decisions 20

Decisions are random actions (the policy's forward is timed separately as part of an update), so the
rates are the simulators' and the transport's. "single process" steps the environment in this
process, as ``rollout.workers: 1`` does; "W workers" steps W environments in W spawned processes in
lock step (``rollout.backend: process``) and counts every worker's decisions. Updates: one IP-SAC
gradient step (batch ``--batch``, hidden 128, M = 2) on transitions of that size, in this process.
Peak memory: the largest resident set of this process and of any worker process.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from ipgnn.config import EnvConfig, load_config
from ipgnn.envs import make_env
from ipgnn.rollout import WorkerPoolEnv

SCENARIOS = {96: "manhattan96.yaml", 225: "grid15x15.yaml", 1225: "grid35x35.yaml"}


def env_cfg(n: int, max_steps: int) -> EnvConfig:
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", SCENARIOS[n]))
    return cfg.env.model_copy(update={"max_steps": max_steps})


def rate(env, decisions: int, warmup: int = 2) -> float:
    obs = env.reset(seed=0)
    for _ in range(warmup):
        obs = env.step(env.random_action(obs)).obs
    t0 = time.perf_counter()
    for _ in range(decisions):
        obs = env.step(env.random_action(obs)).obs
    return getattr(env, "num_envs", 1) * decisions / (time.perf_counter() - t0)


def updates_per_second(env_cfg_: EnvConfig, batch: int, reps: int = 3) -> float:
    from ipgnn.algos import make_algo
    from ipgnn.config import AlgoConfig, ModelConfig
    from ipgnn.replay import GraphReplayBuffer

    env = make_env(env_cfg_)
    obs = env.reset(seed=0)
    buf = GraphReplayBuffer(
        64,
        env.num_agents,
        env.spec.obs_dim,
        env.spec.action_dim,
        True,
        env.graph.max_edges,
        static_edges=env.graph(None),
        has_action_mask=True,
        obs_dtype=torch.int16,
        episode_length=env_cfg_.max_steps,
    )
    for _ in range(8):
        res = env.step(env.random_action(obs))
        buf.add(obs, env.random_action(obs), res.reward, res.terminated, res.obs)
        obs = res.obs
    env.close()
    algo = make_algo(env.spec, ModelConfig(), AlgoConfig(), env.num_agents, batch)
    algo.update(buf.sample(batch))
    t0 = time.perf_counter()
    for _ in range(reps):
        algo.update(buf.sample(batch))
    return reps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 225, 1225])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--decisions", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}")
    print("| N | rollout | decisions/s | speed-up | learner updates/s (batch) | peak RSS learner / worker |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        cfg = env_cfg(n, max_steps=args.decisions + 5)
        env = make_env(cfg)
        base = rate(env, args.decisions)
        env.close()
        ups = updates_per_second(cfg, args.batch)
        me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(f"| {n} | single process | {base:.2f} | 1.00 | {ups:.2f} ({args.batch}) | {me:.2f} GiB / - |")
        for w in args.workers:
            pool = WorkerPoolEnv(cfg, w, "process")
            r = rate(pool, args.decisions)
            pool.close()
            kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
            me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(
                f"| {n} | {w} worker process(es) | {r:.2f} | {r / base:.2f} | | {me:.2f} GiB / {kids:.2f} GiB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
