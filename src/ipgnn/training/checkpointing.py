"""The checkpoint format and exact resume of a run (see :mod:`ipgnn.trainer` for the files).

``latest.pt`` holds ``format`` (1), ``config``, ``algo`` (networks and optimisers), ``env_step``, ``episode``,
``last_eval_step``, ``rng`` (all RNG states), ``log_window`` (the losses summed since the last logged row, and
their count), ``wandb_id``, and when saved with it ``replay`` (the name and size of its replay file) and
``cut`` (a stop inside an episode: its actions and the gradient steps still owed, :mod:`.stopping`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ipgnn import checkpoint
from ipgnn.config import ExperimentConfig, save_config, validate
from ipgnn.logger import resolve_wandb_mode
from ipgnn.runs import LATEST, with_overrides
from ipgnn.seeding import rng_state, set_rng_state

log = logging.getLogger("ipgnn")


class ResumeError(RuntimeError):
    """A run cannot be resumed as saved; the message says why and what to do."""


def read_latest(run_dir: Path, overrides: list[str] | None = None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and state of ``run_dir/checkpoints/latest.pt``, for a resume.

    ``overrides`` (e.g. ``["--train.total_steps=20000"]`` to extend a run) are applied to the saved
    config; the resolved config in the run directory is rewritten to match."""
    path = run_dir / LATEST
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume '{run_dir}': no checkpoint at {path} (the run stopped before its first checkpoint)"
        )
    state = checkpoint.load(path)
    cfg = validate(state["config"], str(path))
    if overrides:
        old_total = cfg.train.total_steps
        cfg = with_overrides(cfg, overrides, str(path))
        if cfg.train.total_steps < old_total:
            raise ResumeError(
                f"--train.total_steps={cfg.train.total_steps} is smaller than the run's "
                f"{old_total}: resuming would cut its saved replay buffer and rewrite its config. "
                "Resume without it, or start a new run"
            )
        resolve_wandb_mode(cfg.logger.mode)  # --logger.mode=online without credentials: before config.yaml changes
        save_config(cfg, run_dir / "config.yaml")
    return cfg, state


class Checkpointer:
    """Writes and reads the checkpoints of one trainer's run directory (``trainer.ckpt_dir``).

    A checkpoint is one unit: the replay file of step ``s`` is written first under its own name, then
    ``latest.pt``, which names it, replaces the previous one by an atomic rename (the commit), and only then
    are older replay files and stray temporary files removed."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.ckpt_dir: Path = trainer.ckpt_dir

    def state(self) -> dict[str, Any]:
        t = self.trainer
        state = {
            "format": 1,
            "config": t.cfg.to_dict(),
            "algo": t.algo.full_state_dict(),
            "env_step": t.env_step,
            "episode": t.episode,
            "last_eval_step": t.last_eval_step,
            "rng": rng_state(),
            "log_window": t.window.state_dict(),
            "wandb_id": t.logger.wandb_id or "",
        }
        cut = t.stopper.state()
        if cut is not None:  # a stop inside an episode: what resume replays and still owes
            state["cut"] = cut
        return state

    def load(self, state: dict[str, Any], with_replay: bool = True) -> None:
        t = self.trainer
        t.algo.load_full_state_dict(state["algo"])
        t.env_step = int(state["env_step"])
        t.episode = int(state["episode"])
        t.last_eval_step = int(state.get("last_eval_step", 0))
        t.last_checkpoint_step = t.env_step
        t.stopper.load(state.get("cut"))
        t.window.load_state_dict(state.get("log_window") or {})
        if with_replay:
            self.load_replay(state)
        elif t.env_step > 0:
            log.warning(
                "resuming at step %d with an empty replay buffer (--no-replay): it refills from here, so "
                "the run will not reproduce the uninterrupted one",
                t.env_step,
            )
        set_rng_state(state["rng"])

    def load_replay(self, state: dict[str, Any]) -> None:
        """Load the replay file ``latest.pt`` names and check it is the one saved with it."""
        t = self.trainer
        info = state.get("replay")
        latest = self.ckpt_dir / "latest.pt"
        if info is None:  # a checkpoint of an earlier version, or train.save_replay: false
            legacy = self.ckpt_dir / "replay.pt"
            if legacy.is_file():
                log.warning("%s names no replay file (an earlier ipgnn wrote it): loading replay.pt unchecked", latest)
                t.replay.load_state_dict(checkpoint.load(legacy))
            elif t.env_step > 0:
                log.warning(
                    "no replay buffer saved with %s (train.save_replay: false): resuming with an empty one", latest
                )
            return
        path = self.ckpt_dir / info["file"]
        advice = (
            f"resume without it: ipgnn-train --resume {t.run_dir} --no-replay (the buffer refills; the "
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
        t.replay.load_state_dict(saved)

    def clean(self, keep: str | None = None) -> None:
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

    def save(self, name: str = "latest.pt") -> Path:
        """Write one consistent checkpoint: the replay file under its own name, then ``latest.pt`` naming it
        (the atomic commit), then remove what the previous checkpoint left."""
        t = self.trainer
        t.guard.check_parameters(t)
        state = self.state()
        if t.cfg.train.save_replay:
            replay_name = f"replay-{t.env_step}.pt"
            checkpoint.save(t.replay.state_dict(), self.ckpt_dir / replay_name)
            state["replay"] = {"file": replay_name, "added": int(t.replay.added)}
        path = checkpoint.save(state, self.ckpt_dir / name)
        if name == "latest.pt":
            self.clean(keep=state.get("replay", {}).get("file", ""))
        t.last_checkpoint_step = t.env_step
        return path
