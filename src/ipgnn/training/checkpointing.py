"""The checkpoint format and exact resume of a run (see :mod:`ipgnn.trainer` for the files).

``latest.pt`` holds ``format`` (1), ``config``, ``algo`` (networks and optimisers), ``env_step``, ``episode``,
``last_eval_step``, ``rng`` (all RNG states), ``log_window`` (the losses summed since the last logged row, and
their count), ``wandb_id``, and when saved with it ``replay`` (the name, size and digest of its replay file) and
``cut`` (a stop inside an episode: its actions and the gradient steps still owed, :mod:`.stopping`).

Every file carries the digest of its own bytes (:mod:`ipgnn.checkpoint`), and ``latest.pt`` records its
replay file's, so a resume refuses a damaged ``latest.pt``, a damaged replay file, and a replay file that is
not the one saved with it (another run's, seed's or step's, even of the same size), each with what to do.

A resume also compares the run's ``config.yaml`` with the config in ``latest.pt``: edits of the keys that
:data:`RESUME_OVERRIDABLE` names are applied (and logged), any other edit is refused with the diff, and
``config.yaml`` is rewritten to the config the run continues with (:func:`read_latest`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ipgnn import checkpoint
from ipgnn.config import ConfigError, ExperimentConfig, echo, read_yaml, save_config, validate
from ipgnn.logger import resolve_wandb_mode
from ipgnn.runs import LATEST, read_checkpoint, with_overrides
from ipgnn.seeding import rng_state, set_rng_state

log = logging.getLogger("ipgnn")

#: The config keys a resume may change (dotted prefixes), by a ``--key=value`` override of ``ipgnn-train
#: --resume`` or an edit of the run's ``config.yaml``: the run length (never shorter) and how it runs and logs.
RESUME_OVERRIDABLE = ("train.total_steps", "logger.", "threads")
_DIFF_LINES = 12  # lines of a refused config.yaml diff before "... and N more"


class ResumeError(RuntimeError):
    """A run cannot be resumed as saved; the message says why and what to do."""


def resume_safe(key: str) -> bool:
    """Whether a resume may change the dotted config ``key`` (:data:`RESUME_OVERRIDABLE`)."""
    return key.startswith(RESUME_OVERRIDABLE)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):  # an empty one adds no key: {} -> {a: 1} is the one change a: <absent> -> 1
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: ExperimentConfig, new: ExperimentConfig) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every key whose value differs (``"<absent>"`` for a key only
    one of them has, e.g. in ``env.options``)."""
    a, b = _flat(old.to_dict()), _flat(new.to_dict())
    keys = list(a) + [k for k in b if k not in a]
    return [
        (k, a.get(k, "<absent>"), b.get(k, "<absent>")) for k in keys if a.get(k, "<absent>") != b.get(k, "<absent>")
    ]


def _short(value: Any, limit: int = 60) -> str:
    return echo(value, limit)


def _diff_lines(changes: list[tuple[str, Any, Any]]) -> str:
    lines = [f"  {k}: {_short(a)} -> {_short(b)}" for k, a, b in changes[:_DIFF_LINES]]
    if len(changes) > _DIFF_LINES:
        lines.append(f"  ... and {len(changes) - _DIFF_LINES} more")
    return "\n".join(lines)


def _read_run_config(path: Path, run_dir: Path) -> ExperimentConfig | None:
    """The run's ``config.yaml``, validated; None when it is missing."""
    if not path.exists():
        return None
    try:
        return validate(read_yaml(path), str(path))
    except (ConfigError, OSError) as exc:
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        raise ConfigError(
            f"cannot resume {run_dir}: its config.yaml cannot be used ({reason}); fix {path}, or delete it to "
            "resume with the config saved in the checkpoint"
        ) from None


def _config_on_resume(run_dir: Path, saved: ExperimentConfig, overrides: list[str] | None) -> ExperimentConfig:
    """The config a resume continues with: the checkpoint's, with the safe edits of ``config.yaml`` and then
    ``overrides`` applied; ``config.yaml`` is rewritten to it when they differ. Raises :class:`ResumeError`
    for an edit a resume cannot apply (with the diff) or a shorter run."""
    path = run_dir / "config.yaml"
    edited = _read_run_config(path, run_dir)
    cfg = saved
    if edited is None:
        log.warning("%s is missing: resuming with the config saved in the checkpoint, and writing it there", path)
    elif changes := config_diff(saved, edited):
        unsafe = [c for c in changes if not resume_safe(c[0])]
        if unsafe:
            raise ResumeError(
                f"cannot resume {run_dir}: {path} was edited after its checkpoint, in keys a resume cannot "
                f"change (checkpoint value -> config.yaml value):\n{_diff_lines(unsafe)}\nrevert the edit to "
                f"resume this run, or start a new run with it: ipgnn-train --config {path}"
            )
        if edited.train.total_steps < saved.train.total_steps:
            raise ResumeError(
                f"{path} sets train.total_steps: {edited.train.total_steps}, smaller than the run's "
                f"{saved.train.total_steps}: resuming would cut its saved replay buffer. Revert the edit, or "
                f"start a new run with it: ipgnn-train --config {path}"
            )
        applied = ", ".join(f"{k}: {_short(a, 40)} -> {_short(b, 40)}" for k, a, b in changes)
        log.info("resuming with the edits of %s: %s", path, applied[:500])
        cfg = edited
    if overrides:
        cfg = with_overrides(cfg, overrides, str(run_dir / LATEST))
        if cfg.train.total_steps < saved.train.total_steps:
            raise ResumeError(
                f"--train.total_steps={cfg.train.total_steps} is smaller than the run's "
                f"{saved.train.total_steps}: resuming would cut its saved replay buffer and rewrite its config. "
                "Resume without it, or start a new run"
            )
    resolve_wandb_mode(cfg.logger.mode)  # logger.mode online without W&B credentials: before config.yaml changes
    if edited is None or config_diff(cfg, edited):
        save_config(cfg, path)  # config.yaml describes the run as it continues
    return cfg


def read_latest(run_dir: Path, overrides: list[str] | None = None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and state of ``run_dir/checkpoints/latest.pt``, for a resume.

    The file is checked against its digest (:func:`ipgnn.runs.read_checkpoint`). The config is the saved one
    with the edits of ``run_dir/config.yaml`` to keys a resume may change (:data:`RESUME_OVERRIDABLE`; logged)
    and then ``overrides`` (e.g. ``["--train.total_steps=20000"]`` to extend a run) applied; ``config.yaml``
    is rewritten to match.

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: a damaged or unreadable ``latest.pt``, or a saved config that no longer validates.
        ConfigError: an unreadable or invalid ``config.yaml``, or a bad override.
        ResumeError: ``config.yaml`` edited in a key a resume cannot change (the message holds the diff), or
            a shorter run (``train.total_steps`` below the saved one).
    """
    path = run_dir / LATEST
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume '{run_dir}': no checkpoint at {path} (the run stopped before its first checkpoint)"
        )
    saved = read_checkpoint(path)
    return _config_on_resume(run_dir, saved.cfg, overrides), saved.state


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
        """Load the replay file ``latest.pt`` names and check it is the one saved with it: undamaged (its own
        digest), of the recorded size, and of the digest ``latest.pt`` recorded (not a foreign file)."""
        t = self.trainer
        info = state.get("replay")
        latest = self.ckpt_dir / "latest.pt"
        if info is None:  # a checkpoint of an earlier version, or train.save_replay: false
            legacy = self.ckpt_dir / "replay.pt"
            if legacy.is_file():
                log.warning("%s names no replay file (an earlier ipgnn wrote it): loading replay.pt unchecked", latest)
                t.replay.load_state_dict(checkpoint.read(legacy)[0])
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
            saved, digest = checkpoint.read(path)
        except ValueError as exc:
            raise ResumeError(f"{exc}; {advice}") from None
        if int(saved.get("added", -1)) != int(info["added"]):
            raise ResumeError(
                f"{path} holds {saved.get('added')} transitions but {latest} was saved with "
                f"{info['added']}: they are not one checkpoint; {advice}"
            )
        expected = info.get("digest")  # absent in a checkpoint written before digests
        if expected is not None and digest != expected:
            raise ResumeError(
                f"{path} is foreign: it is not the replay buffer {latest} was saved with (its digest "
                f"{(digest or 'none')[:19]}..., expected {expected[:19]}...: a file of another run, seed or step "
                f"copied in place); {advice}"
            )
        if digest is None:  # a replay file written before digests, named by a checkpoint without one
            checkpoint.warn_unverified(path)
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
        orphan = None  # a replay file this call adds, removed again when the commit below fails (a full disk)
        if t.cfg.train.save_replay:
            replay_name = f"replay-{t.env_step}.pt"
            orphan = None if (self.ckpt_dir / replay_name).exists() else self.ckpt_dir / replay_name
            written = checkpoint.save(t.replay.state_dict(), self.ckpt_dir / replay_name)
            digest = checkpoint.stored_digest(written)  # hashed while it was written
            state["replay"] = {"file": replay_name, "added": int(t.replay.added), "digest": digest}
        try:
            path = checkpoint.save(state, self.ckpt_dir / name)
        except BaseException:
            if orphan is not None:
                orphan.unlink(missing_ok=True)
            raise
        if name == "latest.pt":
            self.clean(keep=state.get("replay", {}).get("file", ""))
        t.last_checkpoint_step = t.env_step
        return path
