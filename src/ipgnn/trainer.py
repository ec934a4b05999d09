"""The training loop of Algorithm 1: collect with the intention propagation policy, learn from replay.

Run directory ``<logger.run_root>/<name>-<YYYYmmdd-HHMMSS>/``::

    config.yaml          the resolved config (what the run really used)
    metrics.jsonl        one JSON row per logged point (see ipgnn.logger for the names)
    curves.png           learning curves, drawn at the end of the run (ipgnn.plotting)
    checkpoints/latest.pt   networks, optimisers, RNG states, counters, W&B id, config, and the name and
                            size of the replay file that belongs to it
    checkpoints/replay-<step>.pt   the replay buffer at that step (train.save_replay), for an exact resume
    wandb/               the W&B run (offline runs can be synced with ``wandb sync``)

A checkpoint is one unit: the replay file of step ``s`` is written first under its own name, then
``latest.pt``, which names it, replaces the previous one by an atomic rename (the commit), and only then
are older replay files and stray temporary files removed. A crash at any point leaves either the old
pair or the new pair, never a mixture; resume checks that the replay file is the one ``latest.pt`` names
and holds the number of transitions it recorded, and refuses with what to do otherwise
(``--no-replay`` continues without the buffer) (:mod:`ipgnn.training.checkpointing`).

Evaluations and checkpoints are taken at the first episode boundary after each ``train.eval_every``
/ ``train.checkpoint_every`` steps, so a resumed run restarts the simulator exactly where the uninterrupted
run would have (each episode is reset with :func:`ipgnn.seeding.episode_seed` of the run seed and its
index): on CPU, resuming reproduces the uninterrupted run.

:meth:`Trainer.train` is the loop alone: act, step, store, update, log, then the hooks of
:mod:`ipgnn.training.callbacks` (``on_step``, ``on_phase_end``, ``on_eval``, ``on_stop``, ...). Evaluation,
checkpoints, the ETA, the verdict line and the plot are built-in callbacks; the divergence guard, the safe stop
and the checkpoint format are collaborators in :mod:`ipgnn.training`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ipgnn.algos import make_algo
from ipgnn.config import ExperimentConfig, save_config
from ipgnn.envs import make_env, resolve_env_config
from ipgnn.references import as_rows
from ipgnn.runs import evaluate, greedy_policy, resolve_device
from ipgnn.seeding import episode_seed, seed_everything
from ipgnn.training.builders import fresh_run_dir, make_logger, make_replay, make_rollout_env
from ipgnn.training.callbacks import (
    Callback,
    CallbackList,
    PeriodicCheckpoint,
    PeriodicEvaluation,
    PlotCurves,
    ProgressBar,
)
from ipgnn.training.checkpointing import Checkpointer, ResumeError, read_latest
from ipgnn.training.divergence import DivergenceGuard, TrainingDiverged
from ipgnn.training.eta import EtaEstimate
from ipgnn.training.faults import writing
from ipgnn.training.machine import Machine, warn_if_never_updates, warn_if_slow
from ipgnn.training.stopping import CutInUpdate, SafeStop, StopRequested
from ipgnn.training.verdict import FinalVerdict, reference_results
from ipgnn.training.window import LogWindow

__all__ = [
    "ResumeError",
    "StopRequested",
    "Trainer",
    "TrainingDiverged",
]

log = logging.getLogger("ipgnn")


class Trainer:
    """Owns the environment, the learner, the replay buffer and the logger, and runs Algorithm 1's loop:
    collect with the intention propagation policy, store, update from replay, then call the hooks.

    Use :meth:`Trainer.from_config` for a new run and :meth:`Trainer.resume` to continue one. Evaluation,
    checkpoints, the ETA, the plot and the verdict line are callbacks (:mod:`ipgnn.training.callbacks`, whose
    docstring lists the hooks: ``on_train_start``, ``on_update``, ``on_phase_end``, ``on_step``,
    ``on_episode_end``, ``on_eval``, ``on_stop``, ``on_train_end``); pass your own after them::

        from ipgnn.training import Callback

        class StopAtReturn(Callback):
            def on_eval(self, trainer, metrics, seconds):
                if metrics["eval/episode_return"] > -5.0:
                    trainer.request_stop("good enough")  # a checkpoint that resumes exactly, then StopRequested

        trainer = Trainer.from_config(cfg, callbacks=[StopAtReturn()])
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        resume_state: dict[str, Any] | None = None,
        with_replay: bool = True,
        callbacks: Iterable[Callback] = (),
    ):
        self.evaluation, self.eta, self.final_verdict = PeriodicEvaluation(), EtaEstimate(), FinalVerdict()
        # a wrong callback fails before anything is built; at an episode boundary the evaluation comes before the
        # checkpoint, and at the end the bar is closed before the plot and the verdict line
        self.callbacks = CallbackList(
            [ProgressBar(), self.evaluation, PeriodicCheckpoint(), self.eta, PlotCurves(), self.final_verdict]
            + list(callbacks)
        )
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.machine = Machine(cfg)  # the learner's threads, set before anything is built
        self.env, self.eval_env = make_rollout_env(cfg), make_env(cfg.env)
        self.num_envs = int(getattr(self.env, "num_envs", 1))
        self.spec = self.env.spec
        self.algo = make_algo(
            self.spec, cfg.model, cfg.algo, self.env.num_agents, cfg.replay.batch_size, self.device,
            cfg.train.schedule_scale,
        ).to(self.device)  # fmt: skip
        self.env.reset(seed=episode_seed(cfg.seed, 0))  # one reset tells whether the task has action masks
        self.replay = make_replay(cfg, self.env, self.num_envs, self.device)
        self.env_step = self.episode = self.last_checkpoint_step = self.last_eval_step = 0
        self.window, self.stopper, self.guard = LogWindow(), SafeStop(), DivergenceGuard()
        self.checkpointer = Checkpointer(self)
        self.checkpointer.clean()  # temporary files of a write that was interrupted
        if resume_state is not None:
            self.checkpointer.load(resume_state, with_replay)
        self.logger = make_logger(cfg, self.run_dir, wandb_id=(resume_state or {}).get("wandb_id") or None)
        if resume_state is not None:
            self.logger.truncate_after(self.env_step)
        self.references = reference_results(self.eval_env, cfg)
        if self.references and resume_state is None:
            self.logger.log(as_rows(self.references), 0)  # logged at step 0 of a new run
        warn_if_slow(cfg, self.env, self.algo, self.device)
        if resume_state is None:
            warn_if_never_updates(cfg)

    @classmethod
    def from_config(
        cls, cfg: ExperimentConfig, run_dir: Path | None = None, callbacks: Iterable[Callback] = ()
    ) -> Trainer:
        """A new run in ``run_dir`` (default ``<logger.run_root>/<name>-<time>``), with extra ``callbacks``; a
        run directory it made is removed again when the trainer cannot be built."""
        with fresh_run_dir(cfg, run_dir) as run_dir:
            cfg = cfg.model_copy(update={"env": resolve_env_config(cfg.env)})  # e.g. traffic's engine: auto
            save_config(cfg, run_dir / "config.yaml")
            return cls(cfg, run_dir, callbacks=callbacks)

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        overrides: list[str] | None = None,
        with_replay: bool = True,
        callbacks: Iterable[Callback] = (),
    ) -> Trainer:
        """Continue the run in ``run_dir`` from ``checkpoints/latest.pt`` with the config it saved, and
        ``overrides`` (e.g. ``["--train.total_steps=20000"]``; :func:`~ipgnn.training.checkpointing.read_latest`)."""
        cfg, state = read_latest(Path(run_dir), overrides)  # checks W&B credentials before config.yaml changes
        return cls(cfg, run_dir, resume_state=state, with_replay=with_replay, callbacks=callbacks)

    def train(self) -> dict[str, float]:
        """Run until ``train.total_steps`` environment steps; return the final evaluation metrics."""
        tc = self.cfg.train
        cut = self.stopper.take_resume()  # a run stopped at a safe point inside an episode
        obs, res = self.stopper.start_episode(self.env, episode_seed(self.cfg.seed, self.episode), cut)
        overlap = hasattr(self.env, "step_async")  # workers simulate while the learner takes its gradient steps
        self.window.restart_clock()
        self.callbacks.on_train_start(self)
        final_eval = None
        try:
            if cut is not None and cut["remaining_grad"] is not None:  # finish the iteration the stop cut
                self._update(cut["remaining_grad"], cut["prev_step"], stoppable=not overlap)
                obs = self._after_step(res, cut["prev_step"]) or obs
            while self.env_step < tc.total_steps:
                if self.stopper.reason is not None:  # a safe point: between two iterations
                    self._stop_here()
                action = self._act(obs)
                prev_step, self.env_step = self.env_step, self.env_step + self.num_envs  # every env counts
                n_grad = self._gradient_steps_due(prev_step)
                if overlap:
                    self.env.step_async(action)
                    self._update(n_grad, prev_step, stoppable=False)  # the workers' step is in flight
                    res = self.env.step_wait()
                    self._store(obs, action, res)
                else:
                    res = self.env.step(action)
                    self._store(obs, action, res)
                    self._update(n_grad, prev_step, stoppable=True)
                obs = self._after_step(res, prev_step) or res.obs
            final_eval = self.evaluation.final(self)
            self.stopper.actions = []
            self.save_checkpoint()
        finally:
            self.stopper.finishing = True  # signals no longer cut the run (ipgnn.training.stopping)
            self.callbacks.on_train_end(self, final_eval)  # the bar closed, curves.png, the verdict line
        return final_eval

    def _act(self, obs) -> torch.Tensor:
        """Random valid actions before ``train.learning_starts``, then a sample of the policy (Algorithm 1)."""
        if self.env_step < self.cfg.train.learning_starts:
            action = self.env.random_action(obs)
        else:
            action = self.algo.act(obs.to(self.device)).cpu()
        self.stopper.actions.append(action)
        return action

    def _gradient_steps_due(self, prev_step: int) -> int:
        """One update phase per ``update_every`` environment steps crossed, so the ratio of gradient steps to
        collected transitions does not depend on how many environments step together."""
        tc = self.cfg.train
        phases = self.env_step // tc.update_every - prev_step // tc.update_every
        return phases * tc.gradient_steps if self.env_step >= tc.learning_starts else 0

    def _store(self, obs, action: torch.Tensor, res) -> None:
        """The transition in the replay buffer, with the reward the learner sees: ``r_i * algo.reward_scale``."""
        scale = self.cfg.algo.reward_scale
        reward = res.reward if scale == 1.0 else res.reward * scale
        self.replay.add(obs, action, reward, res.terminated, res.obs)

    def _update(self, n_grad: int, prev_step: int, stoppable: bool) -> None:
        """The update phase; a stop requested during it (``stoppable``) cuts it after the gradient step under
        way, at a safe point whose checkpoint owes the remaining steps."""
        try:
            self._update_phase(n_grad, stoppable)
        except CutInUpdate as cut:
            self.window.update_time, self.window.n_updates = cut.update_time, cut.n_updates
            self._stop_here(cut.remaining, prev_step)

    def _update_phase(self, n_grad: int, stoppable: bool) -> None:
        """``n_grad`` gradient steps on minibatches from the replay buffer (Algorithm 1's inner loop), their losses
        summed into the logging window; raises :class:`CutInUpdate` for a stop requested meanwhile."""
        if n_grad == 0 or len(self.replay) == 0:
            return
        window, step_seconds, n_updates = self.window, [], self.window.n_updates
        t0 = time.perf_counter()
        for done in range(n_grad):
            if stoppable and done and self.stopper.reason is not None:
                raise CutInUpdate(n_grad - done, window.update_time + time.perf_counter() - t0, n_updates)
            t_step = time.perf_counter()
            stats = self.algo.update(self.replay.sample(self.cfg.replay.batch_size, self.device))
            self.guard.check_losses(self, stats)
            for k, v in stats.items():
                window.loss_sums[k] = window.loss_sums.get(k, 0.0) + v
            n_updates += 1
            step_seconds.append(time.perf_counter() - t_step)
            self.machine.after_gradient_step(self.device)
            self.callbacks.on_update(self, stats)
        phase = time.perf_counter() - t0
        window.update_time, window.n_updates = window.update_time + phase, n_updates
        self.callbacks.on_phase_end(self, phase, step_seconds)

    def _after_step(self, res, prev_step: int):
        """The iteration's rows and ``on_step``; at an episode's end ``on_episode_end`` (evaluation, checkpoint)
        and the next reset, whose observation it returns (``None``: keep the current one)."""
        self.window.steps += self.num_envs
        if res.done:
            self.episode += self.num_envs
            row = {f"train/{k}": v for k, v in res.episode.items()} | {"train/episode": self.episode}
            self.logger.log(row, self.env_step)
        if self.env_step // self.cfg.train.log_every > prev_step // self.cfg.train.log_every:
            self.logger.log(self.window.row(self.algo.num_updates), self.env_step)
        self.callbacks.on_step(self, res)
        if not res.done:
            return None
        self.callbacks.on_episode_end(self, res)
        self.stopper.actions = []
        return self.env.reset(seed=episode_seed(self.cfg.seed, self.episode))

    def _stop_here(self, remaining_grad: int | None = None, prev_step: int | None = None) -> None:
        """Checkpoint at a safe point, with what a resume needs to continue exactly, and stop."""
        self.stopper.mark_cut(remaining_grad, prev_step)
        path = self.save_checkpoint()
        self.stopper.cut = None
        stop = StopRequested(self.stopper.reason or "stop", path)
        self.callbacks.on_stop(self, stop)
        raise stop

    def request_stop(self, reason: str) -> None:
        """Stop at the next safe point with a checkpoint that resumes bit for bit, then raise
        :class:`StopRequested` (:mod:`ipgnn.training.stopping`); ``ipgnn-train`` calls this on the first Ctrl-C
        or SIGTERM, and a callback may too."""
        self.stopper.reason = reason

    @property
    def stop_reason(self) -> str | None:
        """What asked to stop (:meth:`request_stop`), or ``None``."""
        return self.stopper.reason

    @property
    def eta_seconds(self) -> float | None:
        """The ETA printed after the first update phase."""
        return self.eta.seconds

    @property
    def verdict(self) -> str | None:
        """The line comparing a finished run's final evaluation with the reference controllers."""
        return self.final_verdict.line

    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        """The greedy policy on ``episodes`` (default ``train.eval_episodes``) evaluation episodes."""
        self.algo.eval()
        try:
            act, n = greedy_policy(self.algo, self.device), episodes or self.cfg.train.eval_episodes
            return evaluate(act, self.eval_env, n, self.cfg.seed)
        finally:
            self.algo.train()

    def save_checkpoint(self, name: str = "latest.pt") -> Path:
        """One consistent checkpoint (:meth:`.Checkpointer.save`); signals wait until it commits (``SafeStop.saving``);
        a fault raises an ``OSError`` naming it (:mod:`ipgnn.training.faults`), the previous checkpoint kept."""
        with self.stopper.saving(), writing("writing a checkpoint", self.ckpt_dir / name, self.run_dir):
            path = self.checkpointer.save(name)
        self.stopper.after_commit(path)
        return path

    def close(self) -> None:
        self.logger.close()
        self.env.close()
        self.eval_env.close()
        self.machine.restore()
