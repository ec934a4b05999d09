"""Hooks into :meth:`ipgnn.trainer.Trainer.train`, and the built-in callbacks that use them.

One iteration of the loop collects an environment step, stores it in the replay buffer, takes the update
phase that is due, logs, and calls the hooks below. Every hook receives the trainer first; a hook may read
anything on it and may call :meth:`~ipgnn.trainer.Trainer.request_stop`, which ends the run at the next safe
point with a checkpoint that resumes exactly. The hooks, in the order a run meets them:

* ``on_train_start(trainer)``: :meth:`train` begins (after a resumed run replayed the episode a stop cut).
* ``on_update(trainer, stats)``: after each gradient step; ``stats`` its losses (all finite).
* ``on_phase_end(trainer, phase_seconds, step_seconds)``: after each update phase that ran to its end.
* ``on_step(trainer, result)``: after each iteration: the step stored, the update phase done and the rows
  logged; ``result`` is the environment's :class:`~ipgnn.envs.StepResult` (``result.done``: an episode ended).
* ``on_episode_end(trainer, result)``: at each episode boundary, before the next reset. The built-ins
  evaluate here, then checkpoint, so that a resumed run restarts where the uninterrupted one went on.
* ``on_eval(trainer, metrics, seconds)``: after each periodic evaluation, logged (``metrics``: the
  ``eval/`` row); the final evaluation is handed to ``on_train_end``.
* ``on_stop(trainer, stop)``: a stop asked for was reached; its checkpoint is written (``stop.path``), and
  :meth:`train` raises ``stop`` (:class:`~ipgnn.training.stopping.StopRequested`) right after.
* ``on_train_end(trainer, final_eval)``: whenever :meth:`train` leaves; ``final_eval`` is the final
  evaluation of a finished run, ``None`` when it stopped or failed.

Callbacks run in the trainer's order: the built-ins (:class:`ProgressBar`, :class:`PeriodicEvaluation`,
:class:`PeriodicCheckpoint`, :class:`~ipgnn.training.eta.EtaEstimate`, :class:`PlotCurves`,
:class:`~ipgnn.training.verdict.FinalVerdict`), then the user's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger("ipgnn")

HOOKS = (
    "on_train_start",
    "on_update",
    "on_phase_end",
    "on_step",
    "on_episode_end",
    "on_eval",
    "on_stop",
    "on_train_end",
)


class Callback:
    """Base class: override the hooks you need (see the module docstring); each does nothing here."""

    def on_train_start(self, trainer) -> None:
        pass

    def on_update(self, trainer, stats: dict[str, float]) -> None:
        pass

    def on_phase_end(self, trainer, phase_seconds: float, step_seconds: list[float]) -> None:
        pass

    def on_step(self, trainer, result) -> None:
        pass

    def on_episode_end(self, trainer, result) -> None:
        pass

    def on_eval(self, trainer, metrics: dict[str, float], seconds: float) -> None:
        pass

    def on_stop(self, trainer, stop) -> None:
        pass

    def on_train_end(self, trainer, final_eval: dict[str, float] | None) -> None:
        pass


class CallbackList(Callback):
    """Calls each hook of its callbacks in order."""

    def __init__(self, callbacks: Iterable[Callback]):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks: got {type(cb).__name__}, expected an ipgnn.training.Callback; subclass it and "
                    "override the hooks you need (on_step, on_eval, ...)"
                )


def _fan_out(hook: str):
    def call(self, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    call.__name__ = hook
    return call


for _hook in HOOKS:  # one loop per hook, rather than eight copies of it
    setattr(CallbackList, _hook, _fan_out(_hook))


class ProgressBar(Callback):
    """The tqdm bar of environment steps (``logger.progress``), with the last episode's return and evaluation."""

    def on_train_start(self, trainer) -> None:
        cfg = trainer.cfg
        self.last_return = math.nan
        self.bar = tqdm(
            total=cfg.train.total_steps,
            initial=trainer.env_step,
            disable=not cfg.logger.progress,
            unit="step",
            dynamic_ncols=True,
            desc=cfg.name,
        )

    def on_step(self, trainer, result) -> None:
        self.bar.update(trainer.num_envs)
        if result.done:
            self.last_return = result.episode["episode_return"]
            self.bar.set_postfix(ret=f"{self.last_return:.2f}", refresh=False)

    def on_eval(self, trainer, metrics: dict[str, float], seconds: float) -> None:
        self.bar.set_postfix(ret=f"{self.last_return:.2f}", eval=f"{metrics['eval/episode_return']:.2f}", refresh=False)

    def on_train_end(self, trainer, final_eval) -> None:
        self.bar.close()


class PeriodicEvaluation(Callback):
    """The greedy evaluation every ``train.eval_every`` steps, at the first episode boundary after (a simulator
    that allows one instance per process, libsumo, is free there), logged, then the ``on_eval`` hooks;
    :meth:`final` evaluates at the end of a run."""

    def on_train_start(self, trainer) -> None:
        self.metrics: dict[str, float] = {}  # the last evaluation of this train()

    def on_episode_end(self, trainer, result) -> None:
        every = trainer.cfg.train.eval_every
        if every and trainer.env_step - trainer.last_eval_step >= every:
            self.metrics, seconds = self._evaluate(trainer)
            trainer.callbacks.on_eval(trainer, self.metrics, seconds)

    def _evaluate(self, trainer) -> tuple[dict[str, float], float]:
        t_eval = time.perf_counter()
        metrics = trainer.evaluate()
        seconds = time.perf_counter() - t_eval
        trainer.last_eval_step = trainer.env_step
        trainer.logger.log(metrics, trainer.env_step)
        return metrics, seconds

    def final(self, trainer) -> dict[str, float]:
        """The final evaluation: a new one unless the last step was just evaluated (a finished run resumed
        returns the one it logged)."""
        if trainer.last_eval_step != trainer.env_step:
            return self._evaluate(trainer)[0]
        if self.metrics:
            return self.metrics
        from ipgnn.logger import read_metrics

        logged = [
            r
            for r in read_metrics(trainer.logger.path)
            if r.get("env_step") == trainer.env_step and any(k.startswith("eval/") for k in r)
        ]
        return {k: v for k, v in (logged[-1] if logged else {}).items() if k.startswith("eval/")}


class PeriodicCheckpoint(Callback):
    """A checkpoint every ``train.checkpoint_every`` steps, at the first episode boundary after (after the
    evaluation there, so that a resumed run restarts exactly where the uninterrupted one went on)."""

    def on_episode_end(self, trainer, result) -> None:
        every = trainer.cfg.train.checkpoint_every
        if every and trainer.env_step - trainer.last_checkpoint_step >= every:
            trainer.save_checkpoint()


def plot_curves(run_dir: Path) -> Path | None:
    """Write ``curves.png`` in the run directory; a plotting failure never fails the run."""
    try:
        from ipgnn.plotting import plot_run

        return plot_run(run_dir)
    except Exception as exc:  # noqa: BLE001 - the run's results matter more than its picture
        log.warning("could not draw %s/curves.png: %s", run_dir, exc)
        return None


class PlotCurves(Callback):
    """Draw ``curves.png`` whenever :meth:`train` leaves, finished or not."""

    def on_train_end(self, trainer, final_eval) -> None:
        plot_curves(trainer.run_dir)
