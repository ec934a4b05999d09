"""Uniformly random actions on the comparison's own evaluation episodes: the floor every method of the paper's
comparison must clear ("clearly beats random", issue 26), per task of ``results/paper/``.

    python benchmarks/random_reference.py spread30 hetero100 hangzhou16   # -> results/paper/<task>/random.json

For each seed of a task, the resolved ``config.yaml`` of one of its finished runs gives the environment and the
evaluation protocol (``train.eval_episodes`` episodes of the run seed's evaluation stream,
:func:`ipgnn.seeding.eval_seed`), so the random policy plays exactly the episodes the methods were scored on;
torch is seeded with the run seed before the episodes. ``benchmarks/paper_table.py`` puts the result in its
"random" column.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def random_reference(task: str) -> dict:
    from ipgnn.config import validate
    from ipgnn.envs import make_env
    from ipgnn.runs import evaluate, random_policy

    configs = {}
    for path in sorted((ROOT / "results" / "paper" / task).glob("*/*/seed*/config.yaml")):
        raw = yaml.safe_load(path.read_text())
        configs.setdefault(int(raw["seed"]), (raw, path))
    if not configs:
        raise SystemExit(f"results/paper/{task}: no finished run's config.yaml (run its campaign step first)")
    per_seed = {}
    for seed, (raw, path) in sorted(configs.items()):
        cfg = validate(raw, str(path))
        env = make_env(cfg.env)
        try:
            torch.manual_seed(seed)
            per_seed[seed] = evaluate(random_policy(env), env, cfg.train.eval_episodes, seed)
        finally:
            env.close()
    metrics = sorted({k for m in per_seed.values() for k in m})
    summary = {
        "task": task,
        "policy": "uniformly random valid actions",
        "seeds": sorted(per_seed),
        "episodes_per_seed": cfg.train.eval_episodes,
        "per_seed": per_seed,
    }
    for k in metrics:
        xs = [m[k] for m in per_seed.values() if k in m]
        mean = sum(xs) / len(xs)
        summary[f"{k}/mean"], summary[f"{k}/std"] = mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    out = ROOT / "results" / "paper" / task / "random.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="task directories under results/paper/ (e.g. spread30 hangzhou16)")
    args = parser.parse_args()
    from ipgnn.cpu import set_threads

    set_threads(1)
    for task in args.tasks:
        s = random_reference(task)
        shown = {k: round(v, 2) for k, v in s.items() if k.endswith("/mean") or k.endswith("/std")}
        print(task, json.dumps(shown))


if __name__ == "__main__":
    main()
