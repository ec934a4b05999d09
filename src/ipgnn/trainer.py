"""The training loop of Algorithm 1: collect with the intention propagation policy, learn from replay.

Run directory ``<logger.run_root>/<name>-<YYYYmmdd-HHMMSS>/``::

    config.yaml          the resolved config (what the run really used)
    metrics.jsonl        one JSON row per logged point (see ipgnn.logger for the names)
    curves.png           learning curves, drawn at the end of the run (ipgnn.plotting)
    checkpoints/latest.pt   networks, optimisers, RNG states, counters, W&B id, config, and the name and
                            size of the replay file that belongs to it
    checkpoints/replay-<step>.pt   the replay buffer at that step (train.save_replay), for an exact resume

A checkpoint is one unit: the replay file of step ``s`` is written first under its own name, then
``latest.pt``, which names it, replaces the previous one by an atomic rename (the commit), and only then
are older replay files and stray temporary files removed. A crash at any point leaves either the old
pair or the new pair, never a mixture; resume checks that the replay file is the one ``latest.pt`` names
and holds the number of transitions it recorded, and refuses with what to do otherwise
(``--no-replay`` continues without the buffer).
    wandb/               the W&B run (offline runs can be synced with ``wandb sync``)

Evaluations and checkpoints are taken at the first episode boundary after each ``train.eval_every``
/ ``train.checkpoint_every`` steps, so a resumed run restarts the simulator exactly where the uninterrupted
run would have (each episode is reset with :func:`ipgnn.seeding.episode_seed` of the run seed and its
index): on CPU, resuming reproduces the uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ipgnn import checkpoint
from ipgnn.algos import make_algo
from ipgnn.config import ConfigError, ExperimentConfig, deep_merge, parse_bytes, parse_overrides, save_config, validate
from ipgnn.envs import make_env, resolve_env_config
from ipgnn.logger import RunLogger
from ipgnn.replay import GraphReplayBuffer
from ipgnn.runs import evaluate, greedy_policy, resolve_device
from ipgnn.seeding import REPLAY, episode_seed, rng_state, seed_everything, set_rng_state, stream_seed

log = logging.getLogger("ipgnn")

CPU_SLOW_NODES = 16 * 1024  # nodes per minibatch above which a CPU run warns (about 1 s per update here)


def _duration(seconds: float) -> str:
    """``3725`` -> ``'1 h 02 min'``; ``95`` -> ``'1.6 min'``; ``12`` -> ``'12 s'``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _warn(msg: str) -> None:
    """A warning on standard error through tqdm, so that the progress bar is not broken (and in the log).
    Never on standard output: the commands that print JSON there (``ipgnn-eval``, ``ipgnn-interpret``) build
    the learner first, and a warning about the machine's load would make their output unparseable."""
    log.debug(msg)
    tqdm.write(f"WARNING: {msg}", file=sys.stderr)


class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN or infinite; the message names it, the step and the last finite
    values. Nothing was written after it: the last checkpoint is the last good model."""


class StopRequested(KeyboardInterrupt):
    """:meth:`Trainer.train` stopped at a safe point after :meth:`Trainer.request_stop`, with a checkpoint that
    resumes bit for bit (``reason``: what asked, e.g. ``SIGTERM``; ``path``: the checkpoint)."""

    def __init__(self, reason: str, path: Path):
        super().__init__(reason)
        self.reason, self.path = reason, path


class _CutInUpdate(Exception):
    """An update phase ended early by a stop request: ``remaining`` gradient steps are still owed."""

    def __init__(self, remaining: int, update_time: float, n_updates: int):
        super().__init__(remaining)
        self.remaining, self.update_time, self.n_updates = remaining, update_time, n_updates


class ResumeError(RuntimeError):
    """A run cannot be resumed as saved; the message says why and what to do."""


class Trainer:
    """Owns the environment, the learner, the replay buffer, the logger and the checkpoints.

    Use :meth:`Trainer.from_config` for a new run and :meth:`Trainer.resume` to continue one.
    """

    def __init__(
        self, cfg: ExperimentConfig, run_dir: Path, resume_state: dict[str, Any] | None = None, with_replay: bool = True
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self._set_threads()
        self._memory_checked = False
        self.env = self._make_rollout_env()
        self.eval_env = make_env(cfg.env)
        self.num_envs = int(getattr(self.env, "num_envs", 1))
        self.spec = self.env.spec
        self.algo = make_algo(
            self.spec,
            cfg.model,
            cfg.algo,
            self.env.num_agents,
            cfg.replay.batch_size,
            self.device,
            cfg.train.schedule_scale,
        ).to(self.device)
        self.env.reset(seed=episode_seed(cfg.seed, 0))  # one reset tells whether the task has action masks
        self.replay = self._make_replay()
        self.env_step = 0
        self.episode = 0
        self.last_checkpoint_step = 0
        self.last_eval_step = 0
        self._eta_checked = False
        self.eta_seconds: float | None = None  # the ETA printed after the first update phase
        # timing for the ETA; train() restarts the clock, so set-up (references, replay) is not counted
        self._t0, self._t_step0, self._update_total, self._eval_total = time.perf_counter(), 0, 0.0, 0.0
        wandb_id = None
        self._loss_window: dict[str, float] = {}  # losses summed since the last logged row, and their count
        self._n_window = 0
        self.diverged = False  # a non-finite loss or parameter was seen: nothing is checkpointed after it
        self._last_finite: dict[str, float] = {}  # the last update's losses, all finite (for the diagnosis)
        self.stop_reason: str | None = None  # set by request_stop(): stop at the next safe point
        self._cut: dict[str, Any] | None = None  # the safe point being checkpointed (see _stop_here)
        self._cut_to_resume: dict[str, Any] | None = None  # the one a resumed run starts from
        self._episode_actions: list[torch.Tensor] = []  # the current episode's actions, for a stop inside it
        self._clean_checkpoint_dir()  # temporary files of a write that was interrupted
        if resume_state is not None:
            self._load_state(resume_state, with_replay)
            wandb_id = resume_state.get("wandb_id") or None
        self.logger = RunLogger(
            self.run_dir,
            cfg.to_dict(),
            cfg.logger.mode,
            cfg.logger.project,
            cfg.logger.entity,
            cfg.logger.group,
            cfg.logger.tags,
            name=self.run_dir.name,
            wandb_id=wandb_id,
        )
        if resume_state is not None:
            self.logger.truncate_after(self.env_step)
        self.references = self._reference_results(log_rows=resume_state is None)
        self.verdict: str | None = None
        self._warn_if_slow()
        if cfg.train.learning_starts >= cfg.train.total_steps and cfg.train.gradient_steps > 0 and resume_state is None:
            msg = (
                f"train.learning_starts ({cfg.train.learning_starts}) >= train.total_steps "
                f"({cfg.train.total_steps}): this run takes random actions only and never updates the networks"
            )
            _warn(msg)

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: ExperimentConfig, run_dir: Path | None = None) -> Trainer:
        if run_dir is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = Path(cfg.logger.run_root) / f"{cfg.name}-{stamp}"
            suffix = 1
            while run_dir.exists():
                run_dir = Path(cfg.logger.run_root) / f"{cfg.name}-{stamp}-{suffix}"
                suffix += 1
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = cfg.model_copy(update={"env": resolve_env_config(cfg.env)})  # e.g. traffic's engine: auto
        save_config(cfg, run_dir / "config.yaml")
        return cls(cfg, run_dir)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | None = None, with_replay: bool = True) -> Trainer:
        """Continue the run in ``run_dir`` from ``checkpoints/latest.pt`` with the config it saved.

        ``overrides`` (e.g. ``["--train.total_steps=20000"]`` to extend a run) are applied to the saved
        config; the resolved config in the run directory is rewritten to match."""
        run_dir = Path(run_dir)
        path = run_dir / "checkpoints" / "latest.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"cannot resume '{run_dir}': no checkpoint at {path} (the run stopped before its first checkpoint)"
            )
        state = checkpoint.load(path)
        cfg = validate(state["config"], str(path))
        if overrides:
            old_total = cfg.train.total_steps
            cfg = validate(deep_merge(cfg.to_dict(), parse_overrides(overrides)), "command-line override")
            if cfg.train.total_steps < old_total:
                raise ResumeError(
                    f"--train.total_steps={cfg.train.total_steps} is smaller than the run's "
                    f"{old_total}: resuming would cut its saved replay buffer and rewrite its config. "
                    "Resume without it, or start a new run"
                )
            save_config(cfg, run_dir / "config.yaml")
        return cls(cfg, run_dir, resume_state=state, with_replay=with_replay)

    def _set_threads(self) -> None:
        """The learner's torch threads (:func:`ipgnn.cpu.plan_threads`): the workers' simulators take cores
        of their own, and more threads than free cores make every op wait (an update measured 18x slower
        oversubscribed on 2 cores); warns when the load says the cores are taken."""
        from ipgnn.cpu import plan_threads

        ro = self.cfg.rollout
        workers = ro.workers if ro.backend == "process" and ro.workers > 1 else 0
        plan = plan_threads(self.cfg.threads, workers)
        self._threads_before = torch.get_num_threads()  # restored by close()
        if plan.threads != self._threads_before:
            torch.set_num_threads(plan.threads)
        log.info("learner: %d torch thread(s) (%s)", plan.threads, plan.why)
        if plan.warning:
            _warn(plan.warning)

    def _keep_freed_memory(self) -> None:
        """After the first gradient step: keep freed memory in the process when there is room
        (:func:`ipgnn.cpu.keep_freed_memory_if_room`; 1.75x faster updates measured at B = 1024)."""
        from ipgnn.cpu import keep_freed_memory_if_room

        self._memory_checked = True
        kept, why = keep_freed_memory_if_room()
        self._kept_memory = kept and why != "already in effect"  # close() undoes what this run turned on
        huge = "glibc.malloc.hugetlb=1" in os.environ.get("GLIBC_TUNABLES", "")
        log.info(
            "allocator: %s (%s)%s",
            "freed memory kept for the next update" if kept else "unchanged",
            why,
            "; huge pages on (GLIBC_TUNABLES)" if huge else "",
        )

    def _make_rollout_env(self):
        """The training environment: in this process, or ``rollout.workers`` workers (:mod:`ipgnn.rollout`)."""
        ro = self.cfg.rollout
        if ro.workers == 1 and ro.backend == "process":
            return make_env(self.cfg.env)
        if self.cfg.env.num_envs > 1:
            raise ConfigError(
                "rollout.workers: parallel workers are for tasks that step one environment; a batched "
                "task already steps env.num_envs environments in one process (set rollout.workers: 1)"
            )
        from ipgnn.rollout import WorkerPoolEnv

        log.info("rollouts: %d %s worker(s)", ro.workers, ro.backend)
        return WorkerPoolEnv(self.cfg.env, ro.workers, ro.backend, ro.address)

    def _make_replay(self) -> GraphReplayBuffer:
        """Size the buffer from ``replay.capacity`` (transitions, or a memory budget such as ``8GiB``),
        say what it will use before allocating, and refuse early, with the figure, when it cannot fit."""
        spec, cfg, env = self.spec, self.cfg, self.env
        has_mask = env.has_action_mask
        integer_obs = bool(getattr(env, "integer_observations", False))
        obs_dtype = torch.int16 if integer_obs else torch.float32  # exact for counts and one-hot phases
        sizing = dict(
            num_agents=env.num_agents,
            obs_dim=spec.obs_dim,
            action_dim=spec.action_dim,
            discrete=spec.discrete,
            max_edges=env.graph.max_edges,
            static_graph=env.graph.is_static,
            has_action_mask=has_mask,
            obs_dtype=obs_dtype,
            episode_length=cfg.env.max_steps,
            step_width=self.num_envs,
        )
        per = max(1, (GraphReplayBuffer.bytes_for(10_000, **sizing) + 9_999) // 10_000)
        if isinstance(cfg.replay.capacity, str):
            budget = parse_bytes(cfg.replay.capacity)
            capacity = max(1, budget // per)
            while capacity > 1 and GraphReplayBuffer.bytes_for(capacity, **sizing) > budget:
                capacity = int(capacity * 0.99)
        else:
            capacity = cfg.replay.capacity
        capacity = max(self.num_envs, min(capacity, cfg.train.total_steps))  # never more than the run can fill
        need = GraphReplayBuffer.bytes_for(capacity, **sizing)
        from ipgnn.cpu import available_memory

        avail = available_memory()
        log.info(
            "replay buffer: %d transitions of %d agents (observations as %s, stored once per step) = %.2f GiB",
            capacity,
            env.num_agents,
            str(obs_dtype).replace("torch.", ""),
            need / 2**30,
        )
        if avail is not None and need > 0.8 * avail:
            raise ConfigError(
                f"replay.capacity: {capacity} transitions of {env.num_agents} agents need "
                f"{need / 2**30:.1f} GiB (about {per} B each) but only {avail / 2**30:.1f} GiB of "
                f"memory is available; set replay.capacity to at most {int(0.8 * avail / per)} "
                f"transitions, or to a budget such as '{max(1, int(0.5 * avail / 2**30))}GiB'"
            )
        device = self._replay_device(need)
        static = env.graph(None) if env.graph.is_static else None
        return GraphReplayBuffer(
            capacity,
            env.num_agents,
            spec.obs_dim,
            spec.action_dim,
            spec.discrete,
            env.graph.max_edges,
            static_edges=static,
            has_action_mask=has_mask,
            agent_type=env.agent_type,
            seed=stream_seed(cfg.seed, REPLAY),
            device=device,
            obs_dtype=obs_dtype,
            episode_length=cfg.env.max_steps,
            step_width=self.num_envs,
        )

    def _replay_device(self, need: int) -> torch.device:
        """The replay buffer on the learner's GPU when asked (``learner``) or when it fits in half of the
        GPU's free memory (``auto``): minibatches are then assembled where the networks run."""
        choice = self.cfg.replay.device
        if choice == "cpu" or self.device.type == "cpu":
            return torch.device("cpu")
        if choice == "auto":
            free, _ = torch.cuda.mem_get_info(self.device)
            if need > 0.5 * free:
                log.info(
                    "replay buffer on the CPU: %.1f GiB is more than half of the GPU's %.1f GiB free",
                    need / 2**30,
                    free / 2**30,
                )
                return torch.device("cpu")
        log.info("replay buffer on %s: minibatches are assembled on the learner's device", self.device)
        return self.device

    def _reference_results(self, log_rows: bool) -> dict[str, dict[str, float]]:
        """The task's reference controllers (traffic: FixedTime, MaxPressure) on the evaluation episodes,
        cached per task (:mod:`ipgnn.references`); logged at step 0 of a new run."""
        from ipgnn import references

        results = references.reference_results(
            self.eval_env, self.cfg.env.model_dump(mode="json"), self.cfg.train.eval_episodes, self.cfg.seed, evaluate
        )
        if results and log_rows:
            self.logger.log(references.as_rows(results), 0)
        return results

    def _final_verdict(self, final_eval: dict[str, float]) -> str | None:
        """One line comparing the final greedy evaluation's headline metric with the references."""
        from ipgnn import references

        head = getattr(self.eval_env, "headline", None)
        key = f"eval/{head.metric}" if head else None
        if head is None or not self.references or key not in final_eval:
            return None
        engine = getattr(self.eval_env, "reference_key", "").split(":")[0]
        context = (
            f"{engine + ', ' if engine else ''}{self.cfg.env.max_steps}-step episodes, "
            f"{self.cfg.train.eval_episodes} evaluation episode(s) of seed {self.cfg.seed}"
        )
        return references.verdict(
            head.metric, final_eval[key], self.references, head.label, head.unit, head.lower_is_better, context
        )

    def _warn_if_slow(self) -> None:
        from ipgnn.cpu import native_bf16

        nodes = self.cfg.replay.batch_size * self.env.num_agents
        bf16 = self.cfg.algo.precision == "bf16"
        if bf16 and self.device.type == "cpu" and not native_bf16():
            _warn(
                "algo.precision is bf16 but this CPU has no native bfloat16 (AVX512-BF16 or AMX): torch emulates "
                "it, which is slower than fp32 here; set --algo.precision=fp32"
            )
        if bf16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            _warn("algo.precision is bf16 but this GPU does not support bfloat16; set --algo.precision=fp32")
        if self.device.type == "cpu" and nodes > CPU_SLOW_NODES and self.cfg.train.gradient_steps > 0:
            msg = (
                f"this config updates on {self.cfg.replay.batch_size} x {self.env.num_agents} = {nodes} agent-nodes "
                f"per gradient step, {self.cfg.train.gradient_steps} steps every {self.cfg.train.update_every} "
                "environment step(s), on the CPU: expect about a second or more per gradient step. The paper's "
                "defaults are for GPUs; for a CPU run lower --replay.batch_size or --train.gradient_steps, "
                "or raise --train.update_every."
            )
            if not bf16 and native_bf16() and getattr(self.algo, "mixed_precision", False):
                msg += (
                    " This CPU computes bfloat16 natively: --algo.precision=bf16 makes each update about 2x "
                    "faster (1.8-3.7x measured, by size; float32 outputs and losses; see the README)."
                )
            _warn(msg)

    def _warn_eta(self, phase_seconds: float) -> None:
        """After the first update phase, print how long the rest of the run will take: the environment
        steps at the rate measured so far, the update phases at the first one's cost, and the
        evaluations at the environment's rate (each ``eval_episodes`` episodes of ``max_steps``)."""
        tc = self.cfg.train
        now = time.perf_counter()
        done_steps = max(1, self.env_step - self._t_step0)
        env_s = max(0.0, now - self._t0 - self._update_total - self._eval_total) / done_steps
        left = max(0, tc.total_steps - self.env_step)
        phases = left // tc.update_every
        evals = (left // tc.eval_every + 1) if tc.eval_every else 1
        eval_s = self.cfg.train.eval_episodes * self.cfg.env.max_steps * env_s / max(1, self.num_envs)
        eta = left * env_s + phases * phase_seconds + evals * eval_s
        self.eta_seconds = eta
        msg = (
            f"ETA about {_duration(eta)} for the {left} remaining environment steps on {self.device}: "
            f"environment {_duration(left * env_s)} ({1e3 * env_s:.1f} ms a step), updates "
            f"{_duration(phases * phase_seconds)} ({phase_seconds:.2f} s per phase of {tc.gradient_steps} gradient "
            f"steps, {phases} phases), evaluations {_duration(evals * eval_s)}"
        )
        log.debug(msg)
        tqdm.write(msg)  # through tqdm, so the progress bar is not broken
        if phases * phase_seconds > 3600:
            warn = f"updates alone will take about {phases * phase_seconds / 3600:.1f} h on {self.device}"
            if self.device.type == "cpu":
                warn += "; a GPU, a smaller --replay.batch_size or fewer --train.gradient_steps would shorten it"
            _warn(warn)

    # ----------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = {
            "format": 1,
            "config": self.cfg.to_dict(),
            "algo": self.algo.full_state_dict(),
            "env_step": self.env_step,
            "episode": self.episode,
            "last_eval_step": self.last_eval_step,
            "rng": rng_state(),
            "log_window": {"loss_sums": dict(self._loss_window), "n_updates": self._n_window},
            "wandb_id": self.logger.wandb_id or "",
        }
        if self._cut is not None:  # a stop inside an episode: what resume replays and still owes
            state["cut"] = {
                "actions": self._cut["actions"],
                "remaining_grad": -1 if self._cut["remaining_grad"] is None else self._cut["remaining_grad"],
                "prev_step": -1 if self._cut["prev_step"] is None else self._cut["prev_step"],
            }
        return state

    def _load_state(self, state: dict[str, Any], with_replay: bool = True) -> None:
        self.algo.load_full_state_dict(state["algo"])
        self.env_step = int(state["env_step"])
        self.episode = int(state["episode"])
        self.last_eval_step = int(state.get("last_eval_step", 0))
        self.last_checkpoint_step = self.env_step
        cut = state.get("cut")
        if cut is not None and cut["actions"]:
            owed = int(cut["remaining_grad"])
            self._cut_to_resume = {
                "actions": list(cut["actions"]),
                "remaining_grad": None if owed < 0 else owed,
                "prev_step": int(cut["prev_step"]),
            }
        window = state.get("log_window") or {}
        self._loss_window = {k: float(v) for k, v in (window.get("loss_sums") or {}).items()}
        self._n_window = int(window.get("n_updates", 0))
        if with_replay:
            self._load_replay(state)
        elif self.env_step > 0:
            log.warning(
                "resuming at step %d with an empty replay buffer (--no-replay): it refills from here, so "
                "the run will not reproduce the uninterrupted one",
                self.env_step,
            )
        set_rng_state(state["rng"])

    def _load_replay(self, state: dict[str, Any]) -> None:
        """Load the replay file ``latest.pt`` names and check it is the one saved with it."""
        info = state.get("replay")
        latest = self.ckpt_dir / "latest.pt"
        if info is None:  # a checkpoint of an earlier version, or train.save_replay: false
            legacy = self.ckpt_dir / "replay.pt"
            if legacy.is_file():
                log.warning("%s names no replay file (an earlier ipgnn wrote it): loading replay.pt unchecked", latest)
                self.replay.load_state_dict(checkpoint.load(legacy))
            elif self.env_step > 0:
                log.warning(
                    "no replay buffer saved with %s (train.save_replay: false): resuming with an empty one", latest
                )
            return
        path = self.ckpt_dir / info["file"]
        advice = (
            f"resume without it: ipgnn-train --resume {self.run_dir} --no-replay (the buffer refills; the "
            "run no longer reproduces the uninterrupted one)"
        )
        if not path.is_file():
            raise ResumeError(f"{latest} was saved with the replay buffer {path.name}, which is missing; {advice}")
        try:
            saved = checkpoint.load(path)
        except ValueError as exc:
            raise ResumeError(f"{exc}; {advice}") from None
        if int(saved.get("added", -1)) != int(info["added"]):
            raise ResumeError(
                f"{path} holds {saved.get('added')} transitions but {latest} was saved with "
                f"{info['added']}: they are not one checkpoint; {advice}"
            )
        self.replay.load_state_dict(saved)

    def _clean_checkpoint_dir(self, keep: str | None = None) -> None:
        """Remove temporary files of interrupted writes and replay files no checkpoint names (all but
        ``keep``; with ``keep=None``, those other than the one ``latest.pt`` names are left alone)."""
        if not self.ckpt_dir.is_dir():
            return
        for tmp in self.ckpt_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if keep is not None:
            for old in self.ckpt_dir.glob("replay*.pt"):
                if old.name != keep:
                    old.unlink(missing_ok=True)

    def save_checkpoint(self, name: str = "latest.pt") -> Path:
        """Write one consistent checkpoint: the replay file under its own name, then ``latest.pt`` naming it
        (the atomic commit), then remove what the previous checkpoint left (see the module docstring)."""
        self._check_finite()
        state = self._state()
        if self.cfg.train.save_replay:
            replay_name = f"replay-{self.env_step}.pt"
            checkpoint.save(self.replay.state_dict(), self.ckpt_dir / replay_name)
            state["replay"] = {"file": replay_name, "added": int(self.replay.added)}
        path = checkpoint.save(state, self.ckpt_dir / name)
        if name == "latest.pt":
            self._clean_checkpoint_dir(keep=state.get("replay", {}).get("file", ""))
        self.last_checkpoint_step = self.env_step
        return path

    # ----------------------------------------------------------------------------------------------
    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        self.algo.eval()
        try:
            return evaluate(
                greedy_policy(self.algo, self.device),
                self.eval_env,
                episodes or self.cfg.train.eval_episodes,
                self.cfg.seed,
            )
        finally:
            self.algo.train()

    def request_stop(self, reason: str) -> None:
        """Stop at the next safe point and checkpoint there (``ipgnn-train`` calls this on the first Ctrl-C or
        SIGTERM): after the gradient step under way, or after the environment step under way when no update
        phase is running. :meth:`train` then raises :class:`StopRequested`. The checkpoint holds the actions
        of the episode cut short and the gradient steps still owed, so that :meth:`resume` replays that
        episode from its seed and finishes the iteration: the resumed run is the uninterrupted one, bit for bit."""
        self.stop_reason = reason

    def _replay_cut_episode(self, cut: dict[str, Any]):
        """Restart the episode a stop cut short: reset it with its seed and step it through the actions it had
        taken (the simulators are deterministic given both), with the RNG states of the cut restored after."""
        rng = rng_state()
        obs, res = self.env.reset(seed=episode_seed(self.cfg.seed, self.episode)), None
        for action in cut["actions"]:
            res = self.env.step(action)
            obs = res.obs
        set_rng_state(rng)
        self._episode_actions = list(cut["actions"])
        return obs, res

    def _stop_here(self, remaining_grad: int | None = None, prev_step: int | None = None) -> None:
        """Checkpoint at a safe point, with what a resume needs to continue exactly, and stop."""
        self._cut = {"actions": list(self._episode_actions), "remaining_grad": remaining_grad, "prev_step": prev_step}
        path = self.save_checkpoint()
        self._cut = None
        raise StopRequested(self.stop_reason or "stop", path)

    def train(self) -> dict[str, float]:
        """Run until ``train.total_steps`` environment steps; return the final evaluation metrics."""
        cfg, tc = self.cfg, self.cfg.train
        cut, self._cut_to_resume = self._cut_to_resume, None
        if cut is None:
            obs, res = self.env.reset(seed=episode_seed(cfg.seed, self.episode)), None
            self._episode_actions = []
        else:  # a run stopped at a safe point inside an episode
            obs, res = self._replay_cut_episode(cut)
        # the loss-averaging window since the last logged row: saved with checkpoints, so the first row after
        # a resume averages the same gradient steps as the uninterrupted run's
        loss_sums: dict[str, float] = self._loss_window
        n_updates_window = self._n_window
        t_window, steps_window = time.perf_counter(), 0
        update_time = 0.0
        last_return = math.nan
        final_eval: dict[str, float] = {}
        overlap = hasattr(self.env, "step_async")
        self._t0, self._t_step0 = time.perf_counter(), self.env_step  # for the ETA
        self._update_total = self._eval_total = 0.0
        bar = tqdm(
            total=tc.total_steps,
            initial=self.env_step,
            disable=not cfg.logger.progress,
            unit="step",
            dynamic_ncols=True,
            desc=cfg.name,
        )

        def update(n_grad: int, prev_step: int) -> None:
            """The update phase; a stop requested during it cuts it after the gradient step under way."""
            nonlocal update_time, n_updates_window
            try:
                update_time, n_updates_window = self._update_phase(
                    n_grad, loss_sums, update_time, n_updates_window, stoppable=not overlap
                )
            except _CutInUpdate as cut_short:
                update_time, n_updates_window = cut_short.update_time, cut_short.n_updates
                self._n_window = n_updates_window
                self._stop_here(cut_short.remaining, prev_step)
            self._n_window = n_updates_window

        def finish(res, prev_step: int):
            """Everything after the update phase: the log row, and at an episode's end its row, evaluation,
            checkpoint and the next reset. Returns the next observation (``None``: keep the current one)."""
            nonlocal loss_sums, n_updates_window, update_time, t_window, steps_window, last_return, final_eval
            steps_window += self.num_envs
            bar.update(self.num_envs)
            if res.done:
                self.episode += self.num_envs
                last_return = res.episode["episode_return"]
                self.logger.log(
                    {f"train/{k}": v for k, v in res.episode.items()} | {"train/episode": self.episode}, self.env_step
                )
                bar.set_postfix(ret=f"{last_return:.2f}", refresh=False)

            if self.env_step // tc.log_every > prev_step // tc.log_every:
                elapsed = time.perf_counter() - t_window
                row = {
                    "charts/env_steps_per_s": steps_window / max(elapsed, 1e-9),
                    "charts/updates_per_s": n_updates_window / max(update_time, 1e-9) if n_updates_window else 0.0,
                    "charts/updates": float(self.algo.num_updates),
                }
                row.update({f"losses/{k}": v / n_updates_window for k, v in loss_sums.items()})
                self.logger.log(row, self.env_step)
                loss_sums, n_updates_window, update_time = {}, 0, 0.0
                self._loss_window, self._n_window = loss_sums, 0
                t_window, steps_window = time.perf_counter(), 0

            # evaluation and checkpoints happen at episode boundaries, before the next reset: a
            # simulator that allows one instance per process (libsumo) is free for evaluation
            # there, and a resumed run restarts exactly where the uninterrupted one went on
            if not res.done:
                return None
            if tc.eval_every and self.env_step - self.last_eval_step >= tc.eval_every:
                t_eval = time.perf_counter()
                final_eval = self.evaluate()
                self._eval_total += time.perf_counter() - t_eval
                self.last_eval_step = self.env_step
                self.logger.log(final_eval, self.env_step)
                bar.set_postfix(
                    ret=f"{last_return:.2f}", eval=f"{final_eval['eval/episode_return']:.2f}", refresh=False
                )
            if tc.checkpoint_every and self.env_step - self.last_checkpoint_step >= tc.checkpoint_every:
                self.save_checkpoint()
            self._episode_actions = []
            return self.env.reset(seed=episode_seed(cfg.seed, self.episode))

        try:
            if cut is not None and cut.get("remaining_grad") is not None:  # finish the iteration the stop cut
                update(int(cut["remaining_grad"]), int(cut["prev_step"]))
                obs = finish(res, int(cut["prev_step"])) or obs
            while self.env_step < tc.total_steps:
                if self.stop_reason is not None:  # a safe point: between two iterations
                    self._stop_here()
                if self.env_step < tc.learning_starts:
                    action = self.env.random_action(obs)
                else:
                    action = self.algo.act(obs.to(self.device)).cpu()
                self._episode_actions.append(action)
                prev_step = self.env_step
                self.env_step += self.num_envs  # every environment of a batched task (or worker) counts
                # one update phase per update_every environment steps crossed, so the ratio of gradient
                # steps to collected transitions does not depend on how many environments step together
                phases = self.env_step // tc.update_every - prev_step // tc.update_every
                n_grad = phases * tc.gradient_steps if self.env_step >= tc.learning_starts else 0
                if overlap:  # workers simulate while the learner takes its gradient steps
                    self.env.step_async(action)
                    update(n_grad, prev_step)  # not cut: the workers' step is in flight (stops after it)
                    res = self.env.step_wait()
                    self.replay.add(obs, action, self._scaled(res.reward), res.terminated, res.obs)
                else:
                    res = self.env.step(action)
                    self.replay.add(obs, action, self._scaled(res.reward), res.terminated, res.obs)
                    update(n_grad, prev_step)
                obs = finish(res, prev_step) or res.obs
            if self.last_eval_step != self.env_step:
                final_eval = self.evaluate()
                self.last_eval_step = self.env_step
                self.logger.log(final_eval, self.env_step)
            elif not final_eval:  # a finished run resumed: its final evaluation is the one it logged
                from ipgnn.logger import read_metrics

                logged = [
                    r
                    for r in read_metrics(self.logger.path)
                    if r.get("env_step") == self.env_step and any(k.startswith("eval/") for k in r)
                ]
                final_eval = {k: v for k, v in (logged[-1] if logged else {}).items() if k.startswith("eval/")}
            self._episode_actions = []
            self.save_checkpoint()
            self.verdict = self._final_verdict(final_eval)
        finally:
            bar.close()
            self.plot()
        if self.verdict:
            log.debug(self.verdict)
            tqdm.write(self.verdict)
        return final_eval

    def _scaled(self, reward: torch.Tensor) -> torch.Tensor:
        """The reward the learner sees: ``r_i * algo.reward_scale`` (1: the environment's own)."""
        scale = self.cfg.algo.reward_scale
        return reward if scale == 1.0 else reward * scale

    def _update_phase(
        self, n_grad: int, loss_sums: dict[str, float], update_time: float, n_updates: int, stoppable: bool = False
    ) -> tuple[float, int]:
        """``n_grad`` gradient steps on minibatches from the replay buffer; losses summed into ``loss_sums``.
        ``stoppable``: a stop requested meanwhile (:meth:`request_stop`) ends the phase after the gradient step
        under way, raising :class:`_CutInUpdate` with the steps still owed."""
        if n_grad == 0 or len(self.replay) == 0:
            return update_time, n_updates
        t0 = time.perf_counter()
        step_seconds = []
        for done in range(n_grad):
            if stoppable and done and self.stop_reason is not None:
                raise _CutInUpdate(n_grad - done, update_time + time.perf_counter() - t0, n_updates)
            t_step = time.perf_counter()
            stats = self.algo.update(self.replay.sample(self.cfg.replay.batch_size, self.device))
            bad = [k for k, v in stats.items() if not math.isfinite(v)]
            if bad:
                self._diverged(bad, stats)
            self._last_finite = stats
            for k, v in stats.items():
                loss_sums[k] = loss_sums.get(k, 0.0) + v
            n_updates += 1
            step_seconds.append(time.perf_counter() - t_step)
            if not self._memory_checked and self.device.type == "cpu":
                self._keep_freed_memory()
        phase = time.perf_counter() - t0
        self._update_total += phase
        if not self._eta_checked:
            self._eta_checked = True
            # the median gradient step: the first one can also pay one-time costs (allocations, lazy
            # initialisation) that later steps do not
            median = sorted(step_seconds)[len(step_seconds) // 2]
            self._warn_eta(median * self.cfg.train.gradient_steps)
        return update_time + phase, n_updates

    def _diverged(self, bad: list[str], stats: dict[str, float]) -> None:
        last = self._last_finite
        shown = ", ".join(f"{k} {last[k]:.4g}" for k in bad if k in last) or "none yet (the first update)"
        ckpt = self.ckpt_dir / "latest.pt"
        where = (
            f"the last good checkpoint, step {self.last_checkpoint_step}, is {ckpt} and was not overwritten"
            if ckpt.is_file()
            else "no checkpoint had been written"
        )
        self.diverged = True
        raise TrainingDiverged(
            f"training diverged at environment step {self.env_step} (gradient step {self.algo.num_updates}): "
            f"{', '.join(f'{k} = {stats[k]}' for k in bad)}; last finite values: {shown}. {where}. Lower "
            f"algo.lr (now {self.cfg.algo.lr:g}) or algo.reward_scale, or set algo.max_grad_norm, and start again"
        )

    def _check_finite(self) -> None:
        """Refuse to checkpoint a model with a non-finite parameter (a diverged model never overwrites the last
        good one)."""
        if self.diverged:
            raise TrainingDiverged("training diverged: not writing a checkpoint of the diverged model")
        for name, p in self.algo.named_parameters():
            if not bool(torch.isfinite(p).all()):
                self.diverged = True
                raise TrainingDiverged(
                    f"parameter {name} is not finite at environment step {self.env_step}: not "
                    f"writing a checkpoint; the last good one is step {self.last_checkpoint_step}"
                )

    def plot(self) -> Path | None:
        """Write ``curves.png`` in the run directory; a plotting failure never fails the run."""
        try:
            from ipgnn.plotting import plot_run

            return plot_run(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - the run's results matter more than its picture
            log.warning("could not draw %s/curves.png: %s", self.run_dir, exc)
            return None

    def close(self) -> None:
        self.logger.close()
        self.env.close()
        self.eval_env.close()
        if getattr(self, "_threads_before", None):
            torch.set_num_threads(self._threads_before)
        if getattr(self, "_kept_memory", False):
            from ipgnn.cpu import release_freed_memory

            release_freed_memory()  # a later run in this process (a notebook, a sweep) decides for itself
