"""Wall-clock per 1000 decisions of a training config once learning has started (simulator, acting and
gradient steps together, as the trainer runs them), and the ETA it implies for ``train.total_steps``
(the paper-scale Manhattan-96 config: 10^6 decisions; issue 16's target is <= 2 h on a GPU).

The config runs as given except: ``train.total_steps`` = ``learning_starts`` + ``--decisions``, no periodic
evaluation or checkpoint, logging off, and a replay buffer just large enough. The clock starts at the first
decision after ``learning_starts`` and stops when the loop ends; the final evaluation is timed apart (one
evaluation of ``train.eval_episodes`` episodes) and added to the ETA once per ``train.eval_every`` decisions.

    python benchmarks/bench_decisions.py --config configs/paper/manhattan96.yaml --device cuda
    python benchmarks/bench_decisions.py --config configs/paper/manhattan96.yaml --device cpu --decisions 200 \\
        --replay.batch_size=64            # a quick check of the script on a CPU (not the paper's batch)

Extra ``--section.key=value`` arguments override the config, as for ``ipgnn-train``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ipgnn.config import load_config
from ipgnn.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--decisions", type=int, default=1000, help="decisions timed after learning_starts")
    p.add_argument("--json", help="write the figures here")
    args, overrides = p.parse_known_args()
    base = load_config(args.config, overrides)
    tc = base.train
    total = tc.learning_starts + args.decisions
    cfg = load_config(
        args.config,
        overrides
        + [
            f"--device={args.device}",
            f"--train.total_steps={total}",
            "--train.eval_every=0",
            "--train.checkpoint_every=0",
            f"--replay.capacity={total}",
            "--train.save_replay=false",
            "--logger.mode=disabled",
            "--logger.progress=false",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.from_config(cfg, Path(tmp) / "run")
        clock: dict[str, float] = {}
        real_step, real_eval = trainer.env.step, trainer.evaluate

        def step(action):
            if trainer.env_step == tc.learning_starts + trainer.num_envs and "start" not in clock:
                clock["start"] = time.perf_counter()  # the first decision after learning_starts
            return real_step(action)

        def evaluate(episodes=None):
            clock.setdefault("end", time.perf_counter())
            t0 = time.perf_counter()
            out = real_eval(episodes)
            clock["eval"] = time.perf_counter() - t0
            return out

        trainer.env.step, trainer.evaluate = step, evaluate
        trainer.train()
        trainer.close()
    per_1000 = (clock["end"] - clock["start"]) / (args.decisions - trainer.num_envs) * 1000
    evals = tc.total_steps // tc.eval_every if tc.eval_every else 1
    eta = per_1000 * (tc.total_steps - tc.learning_starts) / 1000 + evals * clock["eval"]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    out = {
        "config": args.config,
        "device": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": cfg.replay.batch_size,
        "engine": cfg.env.options.get("engine"),
        "seconds_per_1000_decisions": per_1000,
        "seconds_per_evaluation": clock["eval"],
        "total_steps": tc.total_steps,
        "eta_hours": eta / 3600,
    }
    print(
        f"{name}: {per_1000:.1f} s per 1000 decisions (batch {cfg.replay.batch_size}, "
        f"{tc.gradient_steps} gradient steps every {tc.update_every} decisions), {clock['eval']:.1f} s per "
        f"evaluation; ETA for {tc.total_steps:,} decisions with {evals} evaluations: {eta / 3600:.2f} h"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
