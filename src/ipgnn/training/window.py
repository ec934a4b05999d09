"""The logging window: what happened since the last logged row (losses summed, gradient steps, timings)."""

from __future__ import annotations

import time
from typing import Any


class LogWindow:
    """Losses summed since the last logged row and their count (saved with checkpoints, so the first row after
    a resume averages the same gradient steps as the uninterrupted run's), and the window's wall clock.

    ``n_updates`` and ``update_time`` count the update phases that finished (or were cut); ``loss_sums`` is
    summed into step by step (:meth:`ipgnn.trainer.Trainer._update_phase`)."""

    def __init__(self) -> None:
        self.loss_sums: dict[str, float] = {}
        self.n_updates = 0
        self.update_time = 0.0
        self.steps = 0
        self.t_start = time.perf_counter()

    def restart_clock(self) -> None:
        """Start timing anew (each :meth:`Trainer.train`): set-up and previous sessions are not counted."""
        self.update_time, self.steps, self.t_start = 0.0, 0, time.perf_counter()

    def row(self, num_updates: int) -> dict[str, float]:
        """The ``charts/`` and ``losses/`` row of the window (``losses/<k>`` the mean over its gradient steps),
        and a new window."""
        elapsed = time.perf_counter() - self.t_start
        n = self.n_updates
        row = {
            "charts/env_steps_per_s": self.steps / max(elapsed, 1e-9),
            "charts/updates_per_s": n / max(self.update_time, 1e-9) if n else 0.0,
            "charts/updates": float(num_updates),
        }
        row.update({f"losses/{k}": v / n for k, v in self.loss_sums.items()})
        self.loss_sums, self.n_updates = {}, 0
        self.restart_clock()
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sums": dict(self.loss_sums), "n_updates": self.n_updates}

    def load_state_dict(self, window: dict[str, Any]) -> None:
        self.loss_sums = {k: float(v) for k, v in (window.get("loss_sums") or {}).items()}
        self.n_updates = int(window.get("n_updates", 0))
