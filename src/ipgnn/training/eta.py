"""How long the rest of a run will take, said once after its first update phase."""

from __future__ import annotations

import logging
import time

from tqdm.auto import tqdm

from ipgnn.training.callbacks import Callback
from ipgnn.training.machine import warn

log = logging.getLogger("ipgnn")


def duration(seconds: float) -> str:
    """``3725`` -> ``'1 h 02 min'``; ``95`` -> ``'1.6 min'``; ``12`` -> ``'12 s'``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class EtaEstimate(Callback):
    """After the first update phase, print the ETA (``seconds``), and warn when the updates alone take hours.

    The environment's rate is measured on the wall clock of this :meth:`train` less its update phases and
    evaluations; an update phase costs ``train.gradient_steps`` times the first phase's median gradient step
    (the first step can also pay one-time costs: allocations, lazy initialisation)."""

    def __init__(self) -> None:
        self.seconds: float | None = None  # the ETA printed after the first update phase
        self._done = False
        self._t0, self._step0, self._update_total, self._eval_total = time.perf_counter(), 0, 0.0, 0.0

    def on_train_start(self, trainer) -> None:
        # set-up (references, replay) is not counted
        self._t0, self._step0 = time.perf_counter(), trainer.env_step
        self._update_total = self._eval_total = 0.0

    def on_eval(self, trainer, metrics: dict[str, float], seconds: float) -> None:
        self._eval_total += seconds

    def on_phase_end(self, trainer, phase_seconds: float, step_seconds: list[float]) -> None:
        self._update_total += phase_seconds
        if not self._done:
            self._done = True
            median = sorted(step_seconds)[len(step_seconds) // 2]
            self.report(trainer, median * trainer.cfg.train.gradient_steps)

    def report(self, trainer, phase_seconds: float) -> None:
        """Print how long the rest of the run will take: the environment steps at the rate measured so far,
        the update phases at ``phase_seconds`` each, and the evaluations at the environment's rate (each
        ``eval_episodes`` episodes of ``max_steps``)."""
        tc, device = trainer.cfg.train, trainer.device
        now = time.perf_counter()
        done_steps = max(1, trainer.env_step - self._step0)
        env_s = max(0.0, now - self._t0 - self._update_total - self._eval_total) / done_steps
        left = max(0, tc.total_steps - trainer.env_step)
        phases = left // tc.update_every
        evals = (left // tc.eval_every + 1) if tc.eval_every else 1
        eval_s = tc.eval_episodes * trainer.cfg.env.max_steps * env_s / max(1, trainer.num_envs)
        eta = left * env_s + phases * phase_seconds + evals * eval_s
        self.seconds = eta
        msg = (
            f"ETA about {duration(eta)} for the {left} remaining environment steps on {device}: "
            f"environment {duration(left * env_s)} ({1e3 * env_s:.1f} ms a step), updates "
            f"{duration(phases * phase_seconds)} ({phase_seconds:.2f} s per phase of {tc.gradient_steps} gradient "
            f"steps, {phases} phases), evaluations {duration(evals * eval_s)}"
        )
        log.debug(msg)
        tqdm.write(msg)  # through tqdm, so the progress bar is not broken
        if phases * phase_seconds > 3600:
            long = f"updates alone will take about {phases * phase_seconds / 3600:.1f} h on {device}"
            if device.type == "cpu":
                long += "; a GPU, a smaller --replay.batch_size or fewer --train.gradient_steps would shorten it"
            warn(long)
