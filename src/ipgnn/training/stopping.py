"""Stopping at a safe point: the signal handler, the stop request, the episode it cuts, and what a resume replays.

A stop asked for (the first Ctrl-C or SIGTERM of ``ipgnn-train``, or a callback calling
:meth:`ipgnn.trainer.Trainer.request_stop`) is honoured after the gradient step under way, or after the
environment step under way when no update phase is running. The checkpoint written there holds the actions of
the episode cut short and the gradient steps still owed, so that a resume replays that episode from its seed
and finishes the iteration: the resumed run is the uninterrupted one, bit for bit.

Signals of ``ipgnn-train`` (:func:`signal_handler`), whatever their number:

* the first asks for that safe-point stop;
* a further one stops at once, with a checkpoint of where the run stands, unless a checkpoint is being
  written: a write is never cut, the signal waits until it commits (:meth:`SafeStop.saving`), and the run
  then stops with that checkpoint;
* once the run is stopping (its last checkpoint written or being written, the files closing), one more
  signal is answered with a line, and the next exits at once (status 130, SIGTERM 143), keeping the last
  complete checkpoint, so no run can hang on exit.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


def signal_name(signum: int) -> str:
    return "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"


def exit_status(signum: int) -> int:
    """The shell's status for a run ended by ``signum``: 143 for SIGTERM, 130 for SIGINT (Ctrl-C)."""
    return 143 if signum == signal.SIGTERM else 130


def signal_handler(trainer):
    """SIGINT and SIGTERM during training (``ipgnn-train`` installs this): the first asks the trainer to stop at
    its next safe point (after the gradient step or environment step under way), whose checkpoint resumes bit
    for bit; a second one stops at once (the checkpoint then restarts the cut episode on resume), but never
    during a checkpoint's write, which commits first; see the module docstring for any further signal."""

    def handle(signum, frame):
        name, stopper = signal_name(signum), trainer.stopper
        if stopper.reason is None and not stopper.finishing:
            trainer.request_stop(name)
            again = "another SIGTERM" if name == "SIGTERM" else "Ctrl-C again"
            _say(
                f"{name}: stopping at the next safe point (after the gradient step or environment step under way) "
                f"with a checkpoint that resumes exactly; {again} stops at once"
            )
            return
        if stopper.in_save:  # a write is never cut: it commits, then the run stops with it
            if not stopper.finishing:
                stopper.pending = signum
            _say(f"{name}: a checkpoint is being written; the run stops as soon as it is complete")
            return
        if stopper.finishing:
            if not stopper.warned:
                stopper.warned = True
                _say(f"{name}: already stopping (closing the run's files); another signal exits at once")
                return
            _say(f"{name}: exiting now; the last complete checkpoint in {trainer.ckpt_dir} is kept")
            os._exit(exit_status(signum))
        stopper.finishing = True
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    return handle


def _say(line: str) -> None:
    print(f"\n{line}", file=sys.stderr, flush=True)


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
        self.in_save = False  # a checkpoint is being written (:meth:`saving`)
        self.pending: int | None = None  # a signal that waited for that write
        self.finishing = False  # the run is stopping or has ended: signals no longer cut it
        self.warned = False  # a signal was answered while finishing; the next one exits at once

    @contextmanager
    def saving(self) -> Iterator[None]:
        """The block writes a checkpoint: a signal that would stop the run at once waits until it commits
        (:func:`signal_handler`), then :meth:`after_commit` acts on it."""
        self.in_save = True
        try:
            yield
        finally:
            self.in_save = False

    def after_commit(self, path: Path) -> None:
        """A signal that waited for the checkpoint at ``path`` stops the run now, with that checkpoint (raises
        :class:`StopRequested`): it was written at an episode boundary or a safe point, so it resumes exactly. The
        safe-point stop's own checkpoint (:attr:`cut` set) raises its :class:`StopRequested` right after anyway."""
        signum, self.pending = self.pending, None
        if signum is not None and self.cut is None and not self.finishing:
            self.finishing = True
            raise StopRequested(signal_name(signum), path)

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
        self.finishing = self.warned = False  # a new train(): signals stop it again
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
