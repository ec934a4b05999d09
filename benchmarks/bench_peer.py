"""Standing peer benchmark against BenchMARL: IP-SAC vs MASAC and MAPPO; IQL, QMIX, MADDPG vs theirs (--baselines).

Issue 16's race puts this package's IP-SAC against BenchMARL's MASAC and MAPPO; ``--baselines`` puts this
package's IQL, QMIX and MADDPG against BenchMARL's implementations of the same algorithms.

The shared task is cooperative navigation (``simple_spread_v3``: 3 agents, 25-step episodes,
``local_ratio`` 0.5, discrete actions) -- ``mpe2`` for this package, ``pettingzoo.mpe`` 1.24.3 for
BenchMARL (the same scenario and reward code). Each method runs, interleaved (ours, MASAC, MAPPO, ours,
...), in its own subprocess for a fixed wall-clock budget; the script records the evaluation return
against wall-clock seconds (from the subprocess's launch, so start-up counts) and against environment
steps (one step = one joint step of all agents, for both libraries), the time to a fixed return, and
the gradient updates per second -- as run, and, in a separate measurement, at *equal* minibatch size and
network width for IP-SAC and MASAC.

Return scale: both sides report the team return ``sum_t sum_i r_i^t`` of a greedy (deterministic)
evaluation episode, averaged over 10 episodes (this package's ``eval/episode_return``). BenchMARL's own
``eval/reward/episode_reward_mean`` is ``sum_t mean_i r_i^t`` (mean over the agents of the group), i.e.
the team return divided by N = 3; the BenchMARL runner below computes the team return directly from its
evaluation rollouts (and logs BenchMARL's own per-agent figure next to it). Each agent's reward is the
environment's ``0.5 * global + 0.5 * own collision penalty`` on both sides.

This script installs nothing. The BenchMARL environment it expects (``--benchmarl-python``)::

    python -m venv --system-site-packages /tmp/bm
    /tmp/bm/bin/pip install benchmarl==1.5.1 "pettingzoo[mpe]==1.24.3" "torchrl>=0.10,<0.11" "tensordict>=0.10,<0.11"
    /tmp/bm/bin/pip install torch==2.13.0        # put the CPU wheel back (pip pulls a CUDA torch otherwise)
    /tmp/bm/bin/python -c "import benchmarl, torchrl"

(torchrl 0.11 removed ``SyncDataCollector``, which BenchMARL 1.5.1 imports; measured with benchmarl 1.5.1,
torchrl 0.10.x, tensordict 0.10.0, pettingzoo 1.24.3, torch 2.13.0+cpu.) ``ipgnn`` itself must be
importable by the Python running this script (``ipgnn-train`` on the PATH or next to it).

Settings: ours is ``configs/mpe_spread_small.yaml`` (batch 256, hidden 128, 8 gradient steps per 100
environment steps) with checkpoints off and evaluation every 5000 steps (10 episodes). BenchMARL runs at
its defaults (``base_experiment.yaml``, ``masac.yaml``, ``mappo.yaml``, MLP [256, 256]: 6000 frames per
iteration; MASAC 1000 optimiser steps of batch 128 per iteration; MAPPO 45 x 15 minibatches of 400) except:
``max_cycles`` 25 (their task file says 100), discrete actions (``prefer_continuous_actions`` False, as
ours; ``--benchmarl-continuous`` for theirs), evaluation after every iteration (10 episodes,
deterministic), no rendering, no checkpoints, CSV logger only, CPU. Both libraries run with the same
number of torch/OpenMP threads (``--threads``, 1 by default: the machine this was written on is shared).

What one "update" is: one optimiser step of the whole algorithm as each library defines it. IP-SAC: one
``algo.update`` (a minibatch; policy, twin Q and V losses, three Adam steps, Polyak of the target V).
MASAC (BenchMARL ``_optimizer_loop``): one minibatch; actor, twin-Q and alpha losses, three Adam steps,
soft target update. MAPPO: one minibatch; actor+critic losses, one Adam step each. Equal batch = the same
number of joint transitions (graphs of 3 agents for ours, frames of 3 agents for theirs) per minibatch;
equal width = ``model.hidden`` for ours, MLP ``num_cells`` [W, W] for both MASAC actor and critic. What
cannot be matched: the architectures (ours: a 2-round graph propagation policy and graph critics; theirs:
2-layer MLPs with a centralised critic), and which networks one update trains (above).

Same-algorithm mode (``--baselines``): this package's IQL, QMIX and MADDPG (``--algo.name=X``, each method's
settings from ``ipgnn/algos/presets/X.yaml``, the rest -- batch 256, width 128, 8 gradient steps every 100
environment steps, lr 1e-3, gamma 0.95, tau 0.01 -- from ``configs/mpe_spread_small.yaml``) each against
BenchMARL's own ``iql``, ``qmix``, ``maddpg`` for the same number of environment steps (``--steps``; BenchMARL's
``max_n_frames``, a frame being one joint step), seed by seed, interleaved (ours X, theirs X, ours Y, ...), one
subprocess each, to the end (``--run-cap-minutes`` is only a safety cap). Ours evaluates 10 greedy episodes every
``--baseline-eval-every`` (6000) steps, BenchMARL after each of its 6000-frame iterations, so both are evaluated
at the same steps. BenchMARL runs at the defaults listed above plus ``iql.yaml``/``qmix.yaml``/``maddpg.yaml``
(epsilon 0.8 -> 0.01 over a third of the frames, gamma 0.99, lr 5e-5, Polyak 0.005 per optimiser step, MLP
[256, 256] Tanh), except the task settings above. BenchMARL 1.5.1's MADDPG has no discrete actions
(``MaddpgConfig.supports_discrete_actions()`` is False): that one BenchMARL run uses continuous actions (the
runner records ``continuous_forced``), ours stays discrete. The uniformly random policy's return on each seed's
evaluation episodes (``ipgnn-eval --controller random``) is recorded for reference. Writes ``results.json``,
``summary.json``, ``summary.md`` (the table), ``baselines.csv`` (return against steps) and
``bench_peer_baselines.png`` (one panel per algorithm, mean and min..max band over seeds).

Usage::

    python benchmarks/bench_peer.py --minutes 8 --seeds 0 --out /tmp/peer/run
    python benchmarks/bench_peer.py --baselines --steps 60000 --seeds 0 1 --out /tmp/peer/baselines
    python benchmarks/bench_peer.py --analyse /tmp/peer/run          # redo tables/plot from saved data
    python benchmarks/bench_peer.py --speed-only --out /tmp/peer/speed
    python benchmarks/bench_peer.py --flops --out /tmp/peer/flops        # FLOPs per update, both sides
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ipgnn.cpu import thread_env

ROOT = Path(__file__).resolve().parents[1]

BENCHMARL_RUNNER = textwrap.dedent('''
    """Run one BenchMARL experiment and append JSON rows (eval, train) to --rows. Written by bench_peer.py."""
    import argparse, json, time
    p = argparse.ArgumentParser()
    p.add_argument("--algo", choices=["masac", "mappo", "iql", "qmix", "maddpg"], required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--rows", required=True)
    p.add_argument("--save-folder", required=True)
    p.add_argument("--max-cycles", type=int, default=25)
    p.add_argument("--continuous", type=int, default=0)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (joint env steps)")
    p.add_argument("--evaluate", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--flops", type=int, default=0, help="count the FLOPs of this optimiser step (1-based), then exit")
    a = p.parse_args()
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    from benchmarl.algorithms import IqlConfig, MaddpgConfig, MappoConfig, MasacConfig, QmixConfig
    from benchmarl.environments import PettingZooTask
    from benchmarl.experiment import Experiment, ExperimentConfig
    from benchmarl.experiment.callback import Callback
    from benchmarl.models.mlp import MlpConfig

    out = open(a.rows, "a")

    def emit(**row):
        row["wall_s"] = time.time() - a.t0
        out.write(json.dumps(row) + "\\n")
        out.flush()

    class Recorder(Callback):
        def on_batch_collected(self, batch):
            self.n, self.t_first, self.t_last = 0, None, None
            emit(kind="collected", frames=int(self.experiment.total_frames))

        def on_train_step(self, batch, group):
            t = time.time()
            if self.t_first is None:
                self.t_first = t
            self.t_last, self.n = t, self.n + 1
            self.batch = int(batch.numel())
            return None

        def on_train_end(self, training_td, group):
            emit(kind="train", frames=int(self.experiment.total_frames), steps=self.n, batch=self.batch,
                 span_s=(self.t_last - self.t_first) if self.n > 1 else None)

        def on_evaluation_end(self, rollouts):
            teams, per_agent, lengths = [], [], []
            for td in rollouts:
                team, n = 0.0, 0
                for g in self.experiment.group_map:
                    r = td.get(("next", g, "reward"))  # [T, n_agents, 1]
                    team += float(r.sum())
                    n += r.shape[-2]
                teams.append(team)
                per_agent.append(team / n)
                lengths.append(int(td.batch_size[0]))
            emit(kind="eval", frames=int(self.experiment.total_frames), team_return=sum(teams) / len(teams),
                 per_agent_return=sum(per_agent) / len(per_agent), episodes=len(teams),
                 mean_length=sum(lengths) / len(lengths), n_agents=n)

    cfg = ExperimentConfig.get_from_yaml()
    cfg.sampling_device = cfg.train_device = cfg.buffer_device = "cpu"
    cfg.prefer_continuous_actions = bool(a.continuous)
    cfg.loggers = ["csv"]  # BenchMARL skips evaluation when no logger and no json are set
    cfg.create_json = False
    cfg.render = False
    cfg.checkpoint_interval = 0
    cfg.checkpoint_at_end = False
    cfg.save_folder = a.save_folder
    cfg.evaluation = bool(a.evaluate)
    on_policy = a.algo == "mappo"
    cfg.evaluation_interval = cfg.collected_frames_per_batch(on_policy)
    algo_cls = {"masac": MasacConfig, "mappo": MappoConfig, "iql": IqlConfig, "qmix": QmixConfig,
                "maddpg": MaddpgConfig}[a.algo]
    forced = not a.continuous and not algo_cls.supports_discrete_actions()
    if forced:  # BenchMARL 1.5.1's MADDPG has continuous actions only (supports_discrete_actions() is False)
        cfg.prefer_continuous_actions = True
    if a.iters:
        cfg.max_n_iters, cfg.max_n_frames = a.iters, None
    elif a.max_frames:
        cfg.max_n_iters, cfg.max_n_frames = None, a.max_frames
    else:
        cfg.max_n_iters, cfg.max_n_frames = None, 10 ** 10  # runs until the benchmark stops it
    if a.batch:
        cfg.off_policy_train_batch_size = a.batch
    task = PettingZooTask.SIMPLE_SPREAD.get_from_yaml()
    task.config["max_cycles"] = a.max_cycles
    algo = algo_cls.get_from_yaml()
    model, critic = MlpConfig.get_from_yaml(), MlpConfig.get_from_yaml()
    if a.hidden:
        model.num_cells = [a.hidden, a.hidden]
        critic.num_cells = [a.hidden, a.hidden]
    emit(kind="start", threads=torch.get_num_threads(), task=dict(task.config),
         batch=cfg.train_batch_size(on_policy), minibatch=cfg.train_minibatch_size(on_policy),
         frames_per_batch=cfg.collected_frames_per_batch(on_policy), hidden=list(model.num_cells),
         gamma=cfg.gamma, lr=cfg.lr, continuous=bool(cfg.prefer_continuous_actions), continuous_forced=forced,
         algorithm={k: str(v) for k, v in vars(algo).items()}, activation=str(model.activation_class),
         eps_init=cfg.exploration_eps_init, eps_end=cfg.exploration_eps_end,
         eps_anneal_frames=cfg.get_exploration_anneal_frames(on_policy) if cfg.max_n_frames else None,
         polyak_tau=cfg.polyak_tau, soft_target_update=cfg.soft_target_update, clip_grad_val=cfg.clip_grad_val,
         n_optimizer_steps=cfg.off_policy_n_optimizer_steps, max_n_frames=cfg.max_n_frames)
    if a.flops:  # one optimiser step under torch's FLOP formulas (matrix products), then stop
        # torch.utils.flop_counter's own formulas; not its FlopCounterMode, whose module tracker cannot hash a
        # TensorDictModule ("Converting a tensordict to boolean value is not permitted")
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry
        inner, calls = Experiment._optimizer_loop, [0]

        class Count(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.by_op = {}

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    key = str(func._overloadpacket)
                    self.by_op[key] = self.by_op.get(key, 0) + formula(*args, **kwargs, out_val=out)
                return out

        def counted_loop(self, group):
            calls[0] += 1
            if calls[0] < a.flops:
                return inner(self, group)
            with Count() as fc:
                td = inner(self, group)
            emit(kind="flops", total=sum(fc.by_op.values()), step=calls[0], batch=cfg.off_policy_train_batch_size,
                 by_op=fc.by_op)
            out.close()
            import os
            os._exit(0)

        Experiment._optimizer_loop = counted_loop
    exp = Experiment(task=task, algorithm_config=algo, model_config=model, critic_model_config=critic,
                     seed=a.seed, config=cfg, callbacks=[Recorder()])
    emit(kind="setup_done")
    exp.run()
    emit(kind="end")
''')


# ----------------------------------------------------------------------------------------------- running


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End the subprocess we started (its own process group), politely first."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _ipgnn_train() -> list[str]:
    exe = shutil.which("ipgnn-train") or str(Path(sys.executable).with_name("ipgnn-train"))
    return [exe]


def run_ours(seed: int, budget: float, run_dir: Path, config: str, overrides: list[str], threads: int = 0) -> dict:
    """ipgnn-train for ``budget`` seconds; the evaluation rows of metrics.jsonl are stamped as they appear."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    metrics = run_dir / "metrics.jsonl"
    cmd = _ipgnn_train() + [
        "--config",
        config,
        "--run-dir",
        str(run_dir),
        "--logger.mode=disabled",
        "--logger.progress=false",
        f"--seed={seed}",
        "--train.checkpoint_every=0",
        "--train.save_replay=false",
        *([f"--threads={threads}"] if threads else []),
        *overrides,
    ]
    resolved = {}
    try:  # the resolved config, for the record (batch size, width)
        import yaml

        conf = yaml.safe_load(
            subprocess.run(cmd + ["--print-config"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        )
        (run_dir / "resolved.yaml").write_text(yaml.safe_dump(conf))
        resolved = {
            "batch_size": conf["replay"]["batch_size"],
            "hidden": conf["model"]["hidden"],
            "eval_every": conf["train"]["eval_every"],
        }
    except Exception as exc:  # noqa: BLE001 - the record is a nicety
        print(f"could not resolve the config: {exc}", flush=True)
    load0 = os.getloadavg()
    t0 = time.time()
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=thread_env(threads)
        )
    rows, state = [], {"pos": 0, "partial": ""}

    def read_new(now: float) -> None:
        if not metrics.exists():
            return
        with open(metrics) as f:
            f.seek(state["pos"])
            chunk = f.read()
            state["pos"] = f.tell()
        *lines, state["partial"] = (state["partial"] + chunk).split("\n")
        for line in lines:
            if line.strip():
                rows.append(json.loads(line) | {"wall_s": now})

    while True:
        now = time.time() - t0
        exited = proc.poll() is not None
        read_new(now)
        if now >= budget or exited:
            break
        time.sleep(0.2)
    _stop(proc)
    read_new(time.time() - t0)  # rows written after the budget are kept but stamped late (curves drop them)
    return {
        "cmd": cmd,
        "t_budget": budget,
        "rows": rows,
        "returncode": proc.returncode,
        "resolved": resolved,
        "load_before": load0,
        "load_after": os.getloadavg(),
    }


def run_benchmarl(
    algo: str, seed: int, budget: float, run_dir: Path, python: str, extra: list[str], threads: int = 0
) -> dict:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    runner = run_dir / "benchmarl_runner.py"
    runner.write_text(BENCHMARL_RUNNER)
    rows_path = run_dir / "rows.jsonl"
    load0 = os.getloadavg()
    t0 = time.time()
    cmd = [
        python,
        str(runner),
        "--algo",
        algo,
        "--seed",
        str(seed),
        "--t0",
        repr(t0),
        "--rows",
        str(rows_path),
        "--save-folder",
        str(run_dir),
        "--threads",
        str(threads),
        *extra,
    ]
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=thread_env(threads)
        )
    while time.time() - t0 < budget and proc.poll() is None:
        time.sleep(0.2)
    _stop(proc)
    rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()] if rows_path.exists() else []
    return {
        "cmd": cmd,
        "t_budget": budget,
        "rows": rows,
        "returncode": proc.returncode,
        "load_before": load0,
        "load_after": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------------------- analysis


def curve(method: str, run: dict) -> list[dict]:
    """[{wall_s, env_step, team_return, per_agent_return}] of the evaluations inside the budget."""
    out = []
    for r in run["rows"]:
        if r["wall_s"] > run["t_budget"]:
            continue
        ours = method == "ours" or method.startswith("ours-")
        if ours and "eval/episode_return" in r:
            ret = r["eval/episode_return"]
            per = r.get("eval/episode_return_per_agent", ret / 3)
            out.append({"wall_s": r["wall_s"], "env_step": r["env_step"], "team_return": ret, "per_agent_return": per})
        elif not ours and r.get("kind") == "eval":
            out.append(
                {
                    "wall_s": r["wall_s"],
                    "env_step": r["frames"],
                    "team_return": r["team_return"],
                    "per_agent_return": r["per_agent_return"],
                }
            )
    return out


def time_to(points: list[dict], threshold: float) -> tuple[dict | None, dict | None]:
    """(first evaluation >= threshold, first evaluation from which every later one in the budget is >= it)."""
    first = next((p for p in points if p["team_return"] >= threshold), None)
    held = None
    for p in reversed(points):
        if p["team_return"] < threshold:
            break
        held = p
    return first, held


def throughput(method: str, run: dict) -> dict:
    """env steps per wall-clock second over the budget, and gradient updates per second of update time."""
    rows = [r for r in run["rows"] if r["wall_s"] <= run["t_budget"]]
    if method == "ours":
        steps = max((r["env_step"] for r in rows), default=0)
        n, secs, prev = 0.0, 0.0, None
        for r in rows:
            if "charts/updates" not in r:
                continue
            if prev and r["charts/updates_per_s"] > 0:  # skips the first window with updates (warm-up)
                d = r["charts/updates"] - prev
                n, secs = n + d, secs + d / r["charts/updates_per_s"]
            prev = r["charts/updates"]
        ups = n / secs if secs else None
        batch = run.get("resolved", {}).get("batch_size")
    else:
        steps = max((r.get("frames", 0) for r in rows), default=0)
        tr = [r for r in rows if r.get("kind") == "train" and r.get("span_s")]
        later = tr[1:] or tr  # the first iteration pays one-time costs
        n = sum(r["steps"] - 1 for r in later)
        secs = sum(r["span_s"] for r in later)
        ups = n / secs if secs else None
        batch = tr[-1]["batch"] if tr else None
    return {
        "env_steps": steps,
        "env_steps_per_s": steps / run["t_budget"],
        "updates_per_s": ups,
        "updates_counted": n,
        "update_batch": batch,
    }


def summarise(results: dict, threshold: float) -> list[dict]:
    table = []
    for run in results["runs"]:
        pts = curve(run["method"], run)
        first, held = time_to(pts, threshold)
        tp = throughput(run["method"], run)
        table.append(
            {
                "method": run["method"],
                "seed": run["seed"],
                "budget_s": run["t_budget"],
                "evals": len(pts),
                "first_s": first and first["wall_s"],
                "first_step": first and first["env_step"],
                "held_s": held and held["wall_s"],
                "held_step": held and held["env_step"],
                "best": max((p["team_return"] for p in pts), default=None),
                "final": pts[-1]["team_return"] if pts else None,
                **tp,
                "load_before": run["load_before"][0],
                "load_after": run["load_after"][0],
            }
        )
    return table


def _f(x, fmt="{:.1f}", none="—"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def markdown(results: dict, table: list[dict], threshold: float) -> str:
    lines = [
        f"Return = team return (sum over the 3 agents and 25 steps), greedy evaluation, mean of 10 episodes; "
        f"threshold {threshold:g}. Time from the subprocess's launch.",
        "",
        "| method | seed | budget (s) | first ≥ thr: s (env steps) | held ≥ thr from: s (env steps) | best | "
        "final | env steps/s | updates/s (batch) | load 1-min before→after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        first = f"{_f(t['first_s'], '{:.0f}')} ({_f(t['first_step'], '{:,}')})" if t["first_s"] else "not reached"
        held = f"{_f(t['held_s'], '{:.0f}')} ({_f(t['held_step'], '{:,}')})" if t["held_s"] else "not held"
        batch = t["update_batch"]
        lines.append(
            f"| {t['method']} | {t['seed']} | {t['budget_s']:.0f} | {first} | {held} | {_f(t['best'])} | "
            f"{_f(t['final'])} | {_f(t['env_steps_per_s'], '{:.0f}')} | "
            f"{_f(t['updates_per_s'])} ({batch}) | {t['load_before']:.2f}→{t['load_after']:.2f} |"
        )
    # ratio of time to quality (held, else first), per seed
    lines.append("")
    for key, word in (("held_s", "held"), ("first_s", "first reached")):
        for seed in sorted({t["seed"] for t in table}):
            ours = next((t[key] for t in table if t["method"] == "ours" and t["seed"] == seed), None)
            for peer in ("masac", "mappo"):
                other = next((t for t in table if t["method"] == peer and t["seed"] == seed), None)
                if other is None or ours is None:
                    continue
                if other[key] is None:
                    lines.append(
                        f"- seed {seed}: time to {threshold:g} ({word}): ours {ours:.0f} s, {peer} never within "
                        f"its {other['budget_s']:.0f} s: ratio > {other['budget_s'] / ours:.1f}x"
                    )
                else:
                    lines.append(
                        f"- seed {seed}: time to {threshold:g} ({word}): ours {ours:.0f} s, {peer} "
                        f"{other[key]:.0f} s: {other[key] / ours:.1f}x"
                    )
    return "\n".join(lines)


def speed_markdown(speed: list[dict]) -> str:
    lines = [
        "| batch | width | method | updates/s (each repeat) | mean | counted updates |",
        "|---|---|---|---|---|---|",
    ]
    for s in speed:
        lines.append(
            f"| {s['batch']} | {s['hidden']} | {s['method']} | "
            f"{', '.join(_f(u) for u in s['updates_per_s'])} | {_f(s['mean'])} | {s['counted']} |"
        )
    return "\n".join(lines)


def plot(results: dict, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ours": "tab:blue", "masac": "tab:orange", "mappo": "tab:green"}
    names = {"ours": "ipgnn IP-SAC", "masac": "BenchMARL MASAC", "mappo": "BenchMARL MAPPO"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labelled = set()
    for run in results["runs"]:
        pts = curve(run["method"], run)
        if not pts:
            continue
        lab = None if run["method"] in labelled else names[run["method"]]
        labelled.add(run["method"])
        for ax, key in zip(axes, ("wall_s", "env_step")):
            ax.plot(
                [p[key] for p in pts],
                [p["team_return"] for p in pts],
                "-o",
                ms=2.5,
                lw=1.2,
                color=colours[run["method"]],
                label=lab,
                alpha=0.9,
            )
    for ax, xl in zip(axes, ("wall-clock seconds (from launch)", "environment steps (joint)")):
        ax.axhline(threshold, color="grey", ls="--", lw=1)
        ax.set_xlabel(xl)
        ax.set_ylabel("evaluation team return (sum over agents)")
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[0].legend(loc="lower right")
    fig.suptitle("Cooperative navigation, 3 agents, 25 steps: return vs time and vs steps (2-core CPU)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_curves_csv(results: dict, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "wall_s", "env_step", "team_return", "per_agent_return"])
        for run in results["runs"]:
            for p in curve(run["method"], run):
                w.writerow(
                    [
                        run["method"],
                        run["seed"],
                        f"{p['wall_s']:.2f}",
                        p["env_step"],
                        f"{p['team_return']:.4f}",
                        f"{p['per_agent_return']:.4f}",
                    ]
                )


# ------------------------------------------------------------------------------------------------ versions


def versions(bm_python: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    ours = {k: v(k) for k in ("ipgnn", "torch", "torch_geometric", "mpe2", "pettingzoo")}
    try:
        git = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "src", "configs"], capture_output=True, text=True
        ).stdout.strip()
        ours["git"] = git + (" (+uncommitted changes in src/ or configs/)" if dirty else "")
    except OSError:
        pass
    code = (
        "import json; from importlib.metadata import version as v; import torch; "
        "print(json.dumps({k: v(k) for k in ('benchmarl','torchrl','tensordict','pettingzoo','torch')}"
        " | {'threads': torch.get_num_threads()}))"
    )
    try:
        theirs = json.loads(subprocess.run([bm_python, "-c", code], capture_output=True, text=True, check=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        theirs = {"error": str(exc)}
    return {
        "ipgnn_side": ours,
        "benchmarl_side": theirs,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "uname": " ".join(os.uname()),
    }


# -------------------------------------------------------------------------------------------------- speed


def measure_speed(args, out: Path) -> list[dict]:
    """Updates/s of IP-SAC and MASAC at equal batch and width, interleaved, ``--speed-repeats`` times."""
    res = []
    pairs = [tuple(int(x) for x in p.split("x")) for p in args.speed_pairs]
    for batch, hidden in pairs:
        per = {"ours": [], "masac": []}
        counted = {"ours": 0, "masac": 0}
        for rep in range(args.speed_repeats):
            for method in ("ours", "masac"):
                d = out / "speed" / f"{method}-b{batch}-h{hidden}-r{rep}"
                print(f"[speed] {method} batch {batch} width {hidden} repeat {rep}", flush=True)
                if method == "ours":
                    run = run_ours(
                        0,
                        args.speed_budget,
                        d,
                        args.ours_config,
                        [
                            f"--replay.batch_size={batch}",
                            f"--model.hidden={hidden}",
                            f"--train.total_steps={args.speed_ours_steps}",
                            "--train.eval_every=0",
                            "--train.eval_episodes=1",
                            *args.ours_override,
                        ],
                        args.threads,
                    )
                else:
                    run = run_benchmarl(
                        "masac",
                        0,
                        args.speed_budget,
                        d,
                        args.benchmarl_python,
                        ["--batch", str(batch), "--hidden", str(hidden), "--iters", "2", "--evaluate", "0"]
                        + (["--continuous", "1"] if args.benchmarl_continuous else []),
                        args.threads,
                    )
                tp = throughput(method, run)
                per[method].append(tp["updates_per_s"])
                counted[method] += int(tp["updates_counted"] or 0)
                (d / "speed_rows.json").write_text(json.dumps(run))
        for method in ("ours", "masac"):
            vals = [u for u in per[method] if u]
            res.append(
                {
                    "batch": batch,
                    "hidden": hidden,
                    "method": method,
                    "updates_per_s": per[method],
                    "mean": sum(vals) / len(vals) if vals else None,
                    "counted": counted[method],
                }
            )
    return res


# -------------------------------------------------------------------------------------------------- flops


def ours_update_flops(config: str, batch: int, hidden: int, overrides: list[str], steps: int = 300) -> dict:
    """FLOPs of one IP-SAC update (``algo.update``) at this batch and width, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (matrix products: ``mm``, ``addmm``, ``bmm``; gathers, scatters and
    element-wise work are not counted) on a minibatch of the task's own transitions (a ``steps``-step run fills
    the replay first)."""
    import tempfile

    from torch.utils.flop_counter import FlopCounterMode

    from ipgnn.config import load_config
    from ipgnn.trainer import Trainer

    cfg = load_config(
        ROOT / config,
        [
            f"--replay.batch_size={batch}",
            f"--model.hidden={hidden}",
            f"--train.total_steps={steps}",
            f"--train.learning_starts={steps - 100}",
            "--train.eval_every=0",
            "--train.checkpoint_every=0",
            "--train.save_replay=false",
            "--logger.mode=disabled",
            "--logger.progress=false",
            *overrides,
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.from_config(cfg, run_dir=Path(tmp) / "run")
        try:
            trainer.train()
            sample = trainer.replay.sample(batch, trainer.device)
            with FlopCounterMode(display=False) as fc:
                trainer.algo.update(sample)
        finally:
            trainer.close()
    return {
        "total": fc.get_total_flops(),
        "by_op": {str(k): v for k, v in fc.get_flop_counts()["Global"].items()},
        "batch": batch,
        "hidden": hidden,
        "agents": int(trainer.env.num_agents),
    }


def measure_flops(args, out: Path) -> list[dict]:
    """FLOPs per update of IP-SAC and MASAC at each ``--speed-pairs`` batch and width."""
    res = []
    for batch, hidden in (tuple(int(x) for x in p.split("x")) for p in args.speed_pairs):
        ours = ours_update_flops(args.ours_config, batch, hidden, args.ours_override)
        d = out / "flops" / f"masac-b{batch}-h{hidden}"
        run = run_benchmarl(
            "masac",
            0,
            args.speed_budget,
            d,
            args.benchmarl_python,
            ["--batch", str(batch), "--hidden", str(hidden), "--iters", "1", "--evaluate", "0", "--flops", "2"]
            + (["--continuous", "1"] if args.benchmarl_continuous else []),
            args.threads,
        )
        theirs = next((r for r in run["rows"] if r.get("kind") == "flops"), None)
        res.append({"batch": batch, "hidden": hidden, "ours": ours, "masac": theirs})
    return res


def flops_markdown(flops: list[dict]) -> str:
    rows = [
        "| batch (joint transitions) | width | IP-SAC GFLOP per update | MASAC GFLOP per update | IP-SAC / MASAC |",
        "|---|---|---|---|---|",
    ]
    for f in flops:
        ours, theirs = f["ours"]["total"] / 1e9, (f["masac"] or {}).get("total")
        ratio = f"{ours / (theirs / 1e9):.1f}" if theirs else "n/a"
        rows.append(
            f"| {f['batch']} | {f['hidden']} | {ours:.3f} | {theirs / 1e9 if theirs else float('nan'):.3f} | {ratio} |"
        )
    return "\n".join(rows)


# ------------------------------------------------------------------------- baselines: IQL, QMIX, MADDPG

BASELINES = ("iql", "qmix", "maddpg")


def random_reference(config: str, seeds: list[int], episodes: int = 10) -> list[dict]:
    """The uniformly random policy's team return on each seed's evaluation episodes (``ipgnn-eval``)."""
    exe = shutil.which("ipgnn-eval") or str(Path(sys.executable).with_name("ipgnn-eval"))
    res = []
    for seed in seeds:
        cmd = [exe, "--controller", "random", "--config", config, "--episodes", str(episodes), "--seed", str(seed)]
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, env=thread_env(1))
            text = done.stdout
            metrics = json.loads(text[text.index("{") :])
            res.append({"seed": seed, "team_return": metrics["eval/episode_return"], "cmd": cmd})
        except (OSError, subprocess.CalledProcessError, ValueError, KeyError) as exc:
            res.append({"seed": seed, "team_return": None, "error": str(exc), "cmd": cmd})
    return res


def run_baselines(args, out: Path, results: dict) -> None:
    """Each of ``--algos``: ours (``--algo.name=X``) and BenchMARL's X, the same ``--steps`` environment steps,
    seed by seed, interleaved (ours X, BenchMARL X, ours Y, BenchMARL Y, ...)."""
    cap = args.run_cap_minutes * 60
    results_path = out / "results.json"
    for seed in args.seeds:
        for algo in args.algos:
            for side in ("ours", "bm"):
                d = out / f"{side}-{algo}-s{seed}"
                print(f"[{time.strftime('%H:%M:%S')}] {side} {algo} seed {seed}: {args.steps} env steps", flush=True)
                t0 = time.time()
                if side == "ours":
                    run = run_ours(
                        seed,
                        cap,
                        d,
                        args.ours_config,
                        [
                            f"--algo.name={algo}",
                            f"--train.total_steps={args.steps}",
                            f"--train.eval_every={args.baseline_eval_every}",
                            "--train.eval_episodes=10",
                            *args.ours_override,
                        ],
                        args.threads,
                    )
                else:
                    run = run_benchmarl(
                        algo, seed, cap, d, args.benchmarl_python, ["--max-frames", str(args.steps)], args.threads
                    )
                run.update(method=f"{side}-{algo}", side=side, algo=algo, seed=seed, elapsed_s=time.time() - t0)
                results["runs"].append(run)
                pts = curve(run["method"], run)
                print(
                    f"    {run['elapsed_s']:.0f} s, rc {run['returncode']}, {len(pts)} evaluations, "
                    f"last {pts[-1] if pts else None}",
                    flush=True,
                )
                results_path.write_text(json.dumps(results))


def _mean_std(xs: list[float | None]) -> tuple[float | None, float | None]:
    """:func:`ipgnn.compare.mean_std` (sample std, as this race has always reported) over the values a run
    reached (``None``: a run that never evaluated); ``(None, None)`` when none did."""
    from ipgnn.compare import mean_std

    xs = [x for x in xs if x is not None]
    return mean_std(xs, ddof=1) if xs else (None, None)


def baseline_summary(results: dict) -> dict:
    """Per run: best and final evaluation, steps reached, time; per algorithm and side: mean ± std over seeds."""
    per_run = []
    for run in results["runs"]:
        pts = curve(run["method"], run)
        start = next((r for r in run["rows"] if r.get("kind") == "start"), {})
        per_run.append(
            {
                "algo": run["algo"],
                "side": run["side"],
                "seed": run["seed"],
                "evals": len(pts),
                "last_step": pts[-1]["env_step"] if pts else None,
                "best": max((p["team_return"] for p in pts), default=None),
                "final": pts[-1]["team_return"] if pts else None,
                "elapsed_s": run["elapsed_s"],
                "returncode": run["returncode"],
                "continuous": start.get("continuous", False),
            }
        )
    agg = {}
    for algo in dict.fromkeys(r["algo"] for r in per_run):
        for side in ("ours", "bm"):
            rs = [r for r in per_run if r["algo"] == algo and r["side"] == side]
            if rs:
                agg[f"{side}-{algo}"] = {
                    "best": _mean_std([r["best"] for r in rs]),
                    "final": _mean_std([r["final"] for r in rs]),
                    "seeds": [r["seed"] for r in rs],
                    "elapsed_s": [round(r["elapsed_s"]) for r in rs],
                }
    rnd = [r["team_return"] for r in results.get("random", []) if r.get("team_return") is not None]
    return {"runs": per_run, "agg": agg, "random": _mean_std(rnd)}


def _pm(ms: tuple) -> str:
    m, sd = ms
    return "—" if m is None else f"{m:.1f} ± {sd:.1f}"


def baseline_markdown(summary: dict, steps: int) -> str:
    """The table: ours against BenchMARL per algorithm; met = ours' mean + std reaches BenchMARL's mean - std."""
    lines = [
        f"Team return (Σ_t Σ_i r_i, greedy, 10 episodes), {steps:,} environment steps per run; mean ± std "
        f"over seeds. Random policy: {_pm(summary['random'])}.",
        "",
        "| algorithm | ours best | BenchMARL best | ours final | BenchMARL final | ours ≥ BenchMARL within spread "
        "(best / final) | time per run, s (ours; BenchMARL) |",
        "|---|---|---|---|---|---|---|",
    ]
    for algo in dict.fromkeys(r["algo"] for r in summary["runs"]):
        o, b = summary["agg"].get(f"ours-{algo}"), summary["agg"].get(f"bm-{algo}")
        if not o or not b:
            continue

        def met(key, o=o, b=b):  # this row's o and b (called in this iteration only)
            (om, osd), (bm, bsd) = o[key], b[key]
            if om is None or bm is None:
                return "—"
            return "yes" if om >= bm else ("within spread" if om + osd >= bm - bsd else "no")

        lines.append(
            f"| {algo} | {_pm(o['best'])} | {_pm(b['best'])} | {_pm(o['final'])} | {_pm(b['final'])} | "
            f"{met('best')} / {met('final')} | {', '.join(map(str, o['elapsed_s']))}; "
            f"{', '.join(map(str, b['elapsed_s']))} |"
        )
    lines += [
        "",
        "| algorithm | side | seed | best | final | evaluations (last step) | time (s) | return code |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        side = "ours" if r["side"] == "ours" else "BenchMARL" + (" (continuous)" if r["continuous"] else "")
        lines.append(
            f"| {r['algo']} | {side} | {r['seed']} | {_f(r['best'])} | {_f(r['final'])} | "
            f"{r['evals']} ({_f(r['last_step'], '{:,}')}) | {r['elapsed_s']:.0f} | {r['returncode']} |"
        )
    return "\n".join(lines)


def write_baseline_csv(results: dict, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "side", "seed", "env_step", "wall_s", "team_return", "per_agent_return"])
        for run in results["runs"]:
            for p in curve(run["method"], run):
                w.writerow(
                    [
                        run["algo"],
                        run["side"],
                        run["seed"],
                        p["env_step"],
                        f"{p['wall_s']:.2f}",
                        f"{p['team_return']:.4f}",
                        f"{p['per_agent_return']:.4f}",
                    ]
                )
        for r in results.get("random", []):
            if r.get("team_return") is not None:
                w.writerow(["random", "ours", r["seed"], 0, "", f"{r['team_return']:.4f}", ""])


def plot_baselines(results: dict, summary: dict, path: Path) -> None:
    """One panel per algorithm: mean over seeds against environment steps, band = min..max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = list(dict.fromkeys(r["algo"] for r in results["runs"]))
    fig, axes = plt.subplots(1, len(algos), figsize=(5 * len(algos), 4.2), squeeze=False)
    for ax, algo in zip(axes[0], algos):
        for side, colour, name in (("ours", "tab:blue", "ipgnn"), ("bm", "tab:orange", "BenchMARL")):
            by_step = {}
            runs = [r for r in results["runs"] if r["algo"] == algo and r["side"] == side]
            for run in runs:
                for p in curve(run["method"], run):
                    by_step.setdefault(p["env_step"], []).append(p["team_return"])
            steps = sorted(s for s, v in by_step.items() if len(v) == len(runs))
            if not steps:
                continue
            mean = [sum(by_step[s]) / len(by_step[s]) for s in steps]
            lo, hi = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
            cont = any(next((r for r in run["rows"] if r.get("kind") == "start"), {}).get("continuous") for run in runs)
            ax.plot(
                steps,
                mean,
                "-o",
                ms=3,
                color=colour,
                label=f"{name} {algo.upper()}{' (continuous actions)' if cont else ''} ({len(runs)} seeds)",
            )
            ax.fill_between(steps, lo, hi, color=colour, alpha=0.2, lw=0)
        if summary["random"][0] is not None:
            ax.axhline(summary["random"][0], color="grey", ls="--", lw=1, label="random policy")
        ax.set_title(algo.upper())
        ax.set_xlabel("environment steps (joint)")
        ax.set_ylabel("evaluation team return (sum over agents)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        "Cooperative navigation, 3 agents, 25 steps: ipgnn against BenchMARL, same algorithm "
        "(mean, band = min..max over seeds)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of each learning run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", default=["ours", "masac", "mappo"], choices=["ours", "masac", "mappo"])
    p.add_argument("--out", type=Path, default=Path("/tmp/peer/run"))
    p.add_argument("--benchmarl-python", default="/tmp/bm/bin/python")
    p.add_argument(
        "--benchmarl-continuous",
        action="store_true",
        help="BenchMARL with continuous actions (its default); ours stays discrete",
    )
    p.add_argument("--threshold", type=float, default=-60.0, help="team return (sum over agents) to reach and hold")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/OpenMP threads of every run, the same for both libraries (0: each library's default). "
        "1 by default: on the shared 2-core machine the same 2-thread ipgnn run measured 26 and "
        "1,300 env steps/s minutes apart under another user's load",
    )
    p.add_argument("--ours-config", default="configs/mpe_spread_small.yaml")
    p.add_argument("--ours-eval-every", type=int, default=5000)
    p.add_argument("--ours-override", action="append", default=[], help="extra --section.key=value for ipgnn-train")
    p.add_argument("--plot", type=Path, default=None, help="PNG path (default OUT/bench_peer.png)")
    p.add_argument("--no-speed", action="store_true", help="skip the equal batch/width updates/s measurement")
    p.add_argument("--speed-only", action="store_true", help="only the equal batch/width measurement")
    p.add_argument(
        "--flops",
        action="store_true",
        help="only the FLOPs of one update of each (matrix products) at each --speed-pairs batch and width",
    )
    p.add_argument("--speed-pairs", nargs="+", default=["128x256", "256x128"], help="BATCHxWIDTH pairs")
    p.add_argument("--speed-repeats", type=int, default=2)
    p.add_argument("--speed-budget", type=float, default=150.0, help="seconds cap per speed run")
    p.add_argument("--speed-ours-steps", type=int, default=8000)
    p.add_argument("--analyse", type=Path, default=None, help="recompute tables and plot from OUT/results.json")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="the same-algorithm mode: ours --algo.name=X against BenchMARL's X for each --algos, "
        "--steps environment steps each",
    )
    p.add_argument("--algos", nargs="+", default=list(BASELINES), choices=BASELINES)
    p.add_argument("--steps", type=int, default=60000, help="--baselines: environment steps of every run")
    p.add_argument(
        "--baseline-eval-every",
        type=int,
        default=6000,
        help="--baselines: ours' evaluation interval (BenchMARL evaluates after each 6000-frame iteration)",
    )
    p.add_argument("--run-cap-minutes", type=float, default=30.0, help="--baselines: wall-clock cap of one run")
    args = p.parse_args()

    out = (args.analyse or args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results: dict = {}
    if args.baselines and not args.analyse:
        results = {
            "mode": "baselines",
            "args": {k: str(v) for k, v in vars(args).items()},
            "versions": versions(args.benchmarl_python),
            "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "runs": [],
            "random": random_reference(args.ours_config, args.seeds),
        }
        print(json.dumps(results["versions"], indent=1), json.dumps(results["random"]), flush=True)
        run_baselines(args, out, results)
        results["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        results_path.write_text(json.dumps(results))
    if args.analyse or args.baselines:
        results = json.loads(results_path.read_text())
    if results.get("mode") == "baselines":
        summary = baseline_summary(results)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        write_baseline_csv(results, out / "baselines.csv")
        png = args.plot or out / "bench_peer_baselines.png"
        plot_baselines(results, summary, png)
        steps = int(results["args"].get("steps", 0))
        text = "\n".join(
            [
                f"versions: {json.dumps(results['versions'])}",
                f"uptime before: {results.get('uptime_before')}",
                f"uptime after: {results.get('uptime_after')}",
                "",
                baseline_markdown(summary, steps),
                "",
                f"plot: {png}",
                f"curves: {out / 'baselines.csv'}",
            ]
        )
        (out / "summary.md").write_text(text + "\n")
        print(text)
        return
    if not args.analyse:
        results = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "versions": versions(args.benchmarl_python),
            "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "runs": [],
            "speed": [],
        }
        print(json.dumps(results["versions"], indent=1), flush=True)
        extra = ["--continuous", "1"] if args.benchmarl_continuous else []
        if args.flops:
            results["flops"] = measure_flops(args, out)
        elif not args.speed_only:
            budget = args.minutes * 60
            for seed in args.seeds:
                for method in args.methods:
                    d = out / f"{method}-s{seed}"
                    print(f"[{time.strftime('%H:%M:%S')}] {method} seed {seed}: {budget:.0f} s", flush=True)
                    if method == "ours":
                        run = run_ours(
                            seed,
                            budget,
                            d,
                            args.ours_config,
                            [
                                "--train.total_steps=1000000000",
                                f"--train.eval_every={args.ours_eval_every}",
                                *args.ours_override,
                            ],
                            args.threads,
                        )
                    else:
                        run = run_benchmarl(method, seed, budget, d, args.benchmarl_python, extra, args.threads)
                    run.update(method=method, seed=seed)
                    results["runs"].append(run)
                    pts = curve(method, run)
                    print(f"    {len(pts)} evaluations, last {pts[-1] if pts else None}", flush=True)
                    results_path.write_text(json.dumps(results))
        if not args.no_speed and not args.flops:
            results["speed"] = measure_speed(args, out)
        results["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        results_path.write_text(json.dumps(results))

    md = [
        f"versions: {json.dumps(results['versions'])}",
        f"uptime before: {results.get('uptime_before')}",
        f"uptime after: {results.get('uptime_after')}",
        "",
    ]
    if results["runs"]:
        table = summarise(results, args.threshold)
        (out / "summary.json").write_text(json.dumps(table, indent=1))
        write_curves_csv(results, out / "curves.csv")
        png = args.plot or out / "bench_peer.png"
        plot(results, args.threshold, png)
        md += [markdown(results, table, args.threshold), "", f"plot: {png}", f"curves: {out / 'curves.csv'}"]
    if results.get("speed"):
        md += [
            "",
            "Gradient updates per second at equal batch (joint transitions) and width:",
            "",
            speed_markdown(results["speed"]),
        ]
    if results.get("flops"):
        md += [
            "",
            "FLOPs of one update (matrix products, torch.utils.flop_counter) at equal batch and width:",
            "",
            flops_markdown(results["flops"]),
        ]
    text = "\n".join(md)
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
