"""Stopping at a safe point: the signal handler, the stop request, the episode it cuts, and what a resume replays.

A stop asked for (the first Ctrl-C or SIGTERM of ``ipgnn-train``, or a callback calling
:meth:`ipgnn.trainer.Trainer.request_stop`) is honoured after the gradient step under way, or after the
environment step under way when no update phase is running. The checkpoint written there holds the actions of
the episode cut short and the gradient steps still owed, so that a resume replays that episode from its seed
and finishes the iteration: the resumed run is the uninterrupted one, bit for bit.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import torch

from ipgnn.seeding import rng_state, set_rng_state


class StopRequested(KeyboardInterrupt):
    """:meth:`Trainer.train` stopped at a safe point after :meth:`Trainer.request_stop`, with a checkpoint that
    resumes bit for bit (``reason``: what asked, e.g. ``SIGTERM``; ``path``: the checkpoint)."""

    def __init__(self, reason: str, path: Path):
        super().__init__(reason)
        self.reason, self.path = reason, path


class Terminated(KeyboardInterrupt):
    """A second SIGTERM (or one during set-up), handled as a second Ctrl-C: checkpoint where the run is, now."""


def signal_handler(trainer):
    """SIGINT and SIGTERM during training (``ipgnn-train`` installs this): the first asks the trainer to stop at
    its next safe point (after the gradient step or environment step under way), whose checkpoint resumes bit
    for bit; a second one stops at once (the checkpoint then restarts the cut episode on resume)."""

    def handle(signum, frame):
        sigterm = signum == signal.SIGTERM
        if trainer.stop_reason is None:
            trainer.request_stop("SIGTERM" if sigterm else "Ctrl-C")
            print(
                f"\n{'SIGTERM' if sigterm else 'Ctrl-C'}: stopping at the next safe point (after the gradient step "
                "or environment step under way) with a checkpoint that resumes exactly; "
                f"{'another SIGTERM' if sigterm else 'Ctrl-C again'} stops at once",
                file=sys.stderr,
                flush=True,
            )
            return
        raise Terminated() if sigterm else KeyboardInterrupt()

    return handle


class CutInUpdate(Exception):
    """An update phase ended early by a stop request: ``remaining`` gradient steps are still owed."""

    def __init__(self, remaining: int, update_time: float, n_updates: int):
        super().__init__(remaining)
        self.remaining, self.update_time, self.n_updates = remaining, update_time, n_updates


class SafeStop:
    """The stop request and the current episode's actions (``actions``), for a stop inside an episode.

    ``cut`` is the safe point being checkpointed (set only while :meth:`Trainer._stop_here` writes it);
    ``to_resume`` the one a resumed run starts from (taken by :meth:`take_resume`)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.actions: list[torch.Tensor] = []
        self.cut: dict[str, Any] | None = None
        self.to_resume: dict[str, Any] | None = None

    def mark_cut(self, remaining_grad: int | None, prev_step: int | None) -> None:
        """The safe point about to be checkpointed: the episode's actions so far and the gradient steps owed."""
        self.cut = {"actions": list(self.actions), "remaining_grad": remaining_grad, "prev_step": prev_step}

    def state(self) -> dict[str, Any] | None:
        """The checkpoint's ``cut`` entry (``-1`` for "none"), or ``None`` outside a safe-point stop."""
        if self.cut is None:
            return None
        return {
            "actions": self.cut["actions"],
            "remaining_grad": -1 if self.cut["remaining_grad"] is None else self.cut["remaining_grad"],
            "prev_step": -1 if self.cut["prev_step"] is None else self.cut["prev_step"],
        }

    def load(self, cut: dict[str, Any] | None) -> None:
        """Read a checkpoint's ``cut`` entry: an episode with actions is replayed by the next :meth:`Trainer.train`."""
        if cut is not None and cut["actions"]:
            owed = int(cut["remaining_grad"])
            self.to_resume = {
                "actions": list(cut["actions"]),
                "remaining_grad": None if owed < 0 else owed,
                "prev_step": int(cut["prev_step"]),
            }

    def take_resume(self) -> dict[str, Any] | None:
        cut, self.to_resume = self.to_resume, None
        return cut

    def start_episode(self, env, seed: int, cut: dict[str, Any] | None):
        """The first observation of a :meth:`Trainer.train` (and ``None``, or the last step's result): a reset
        with ``seed``, or the replay of the episode a stop cut."""
        if cut is not None:
            return self.replay_episode(env, seed, cut)
        obs = env.reset(seed=seed)
        self.actions = []
        return obs, None

    def replay_episode(self, env, seed: int, cut: dict[str, Any]):
        """Restart the episode a stop cut short: reset it with its seed and step it through the actions it had
        taken (the simulators are deterministic given both), with the RNG states of the cut restored after."""
        rng = rng_state()
        obs, res = env.reset(seed=seed), None
        for action in cut["actions"]:
            res = env.step(action)
            obs = res.obs
        set_rng_state(rng)
        self.actions = list(cut["actions"])
        return obs, res
