"""Run logging: ``metrics.jsonl`` in the run directory, W&B, and a console progress bar.

Metric names are namespaced (CleanRL style):

- ``train/…``: training episodes, with the exploring (sampling) policy: ``train/episode_return`` is
  :math:`\\sum_t \\sum_i r_i^t` of one episode;
- ``eval/…``: evaluation episodes with the greedy policy, means over ``train.eval_episodes`` episodes;
- ``losses/…``: every loss term and diagnostic of the last update phase (means over its gradient steps);
- ``charts/…``: throughput (``env_steps_per_s``, ``updates_per_s``).

Every row carries ``env_step``, the x-axis. W&B plots against ``env_step`` (``define_metric``), so a
resumed run never logs "below the last step" and loses nothing.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def wandb_credentials_configured() -> bool:
    """True when W&B would find credentials: ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE`` in the
    environment, or an entry for the W&B host (``WANDB_BASE_URL``, default ``api.wandb.ai``) in the netrc
    file wandb reads (``NETRC``, else ``~/.netrc`` or ``~/_netrc``). Reads files only; never the network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    hosts = {url.hostname or "api.wandb.ai", url.netloc or "api.wandb.ai"}
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for name in candidates:
        try:
            entries = netrc.netrc(os.path.expanduser(name))
        except (netrc.NetrcParseError, OSError):  # missing, unreadable, HOME not a directory
            continue
        if any(entries.authenticators(h) is not None for h in hosts):
            return True
    return False


class WandbLoginRequired(ValueError):
    """``logger.mode: online`` without W&B credentials (see :func:`resolve_wandb_mode`)."""


def resolve_wandb_mode(mode: str) -> str:
    """The W&B mode a run logs with: ``auto`` is ``online`` with credentials
    (:func:`wandb_credentials_configured`) and ``offline`` without; the other modes are themselves.

    Raises:
        WandbLoginRequired: ``online`` without credentials, with how to log in or log offline. The trainer
            resolves the mode before it creates or touches a run directory, so nothing is written then.
    """
    if mode == "auto":
        return "online" if wandb_credentials_configured() else "offline"
    if mode == "online" and not wandb_credentials_configured():
        raise WandbLoginRequired(
            "logger.mode is online but no W&B credentials were found (WANDB_API_KEY, or ~/.netrc from "
            "`wandb login`): run `wandb login` or set WANDB_API_KEY, or log locally with --logger.mode=offline "
            "(upload later with `wandb sync`) or turn W&B off with --logger.mode=disabled"
        )
    return mode


class RunLogger:
    """Writes metric rows to ``<run_dir>/metrics.jsonl`` and to W&B.

    Args:
        run_dir: the run directory.
        config: the resolved config as a nested dict (W&B gets it nested, not dotted).
        mode: W&B mode (``auto`` resolved by :func:`resolve_wandb_mode`).
        project, entity, group, tags, name: passed to ``wandb.init``.
        wandb_id: the id of the run to resume, if any.
    """

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        mode: str = "auto",
        project: str = "ipgnn",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        wandb_id: str | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.mode = resolve_wandb_mode(mode)
        self.run = None
        if self.mode != "disabled":
            import wandb

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.run = wandb.init(
                    project=project,
                    entity=entity,
                    group=group,
                    tags=tags or None,
                    name=name,
                    dir=str(self.run_dir),
                    mode=self.mode,
                    config=config,
                    id=wandb_id,
                    resume="allow" if wandb_id else None,
                    reinit="finish_previous",
                )
            self.run.define_metric("env_step")
            self.run.define_metric("*", step_metric="env_step")

    @property
    def wandb_id(self) -> str | None:
        return None if self.run is None else self.run.id

    @property
    def wandb_dir(self) -> str | None:
        return None if self.run is None else self.run.dir

    def log(self, metrics: dict[str, float], env_step: int) -> None:
        row = {"env_step": int(env_step), **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(json_safe(row), allow_nan=False) + "\n")  # NaN/inf as null: valid JSON
        if self.run is not None:
            self.run.log(row)

    def truncate_after(self, env_step: int) -> None:
        """Drop rows logged after ``env_step`` (work lost since the checkpoint a run resumes from)."""
        if not self.path.exists():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        if lines:
            try:
                json.loads(lines[-1])
            except ValueError:  # a write cut by a kill: drop the partial last row, it is rewritten on resume
                warnings.warn(f"{self.path}: dropping a partial last line (a write that was interrupted)", stacklevel=2)
                lines.pop()
        try:
            rows = [line for line in lines if json.loads(line)["env_step"] <= env_step]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{self.path}: a line before the last is damaged ({exc}); remove it, or move the file "
                "aside to resume with a fresh log"
            ) from None
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(r + "\n" for r in rows))
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def json_safe(obj):
    """``obj`` with every NaN or infinite float replaced by ``None`` (JSON's ``null``): Python's ``json``
    otherwise writes a bare ``NaN``, which is not JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.jsonl`` file (``null`` values, non-finite when logged, are left out)."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:  # a partial last line (a write cut by a kill): the rows before it stand
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON; the metrics log is damaged") from None
    return [{k: v for k, v in r.items() if v is not None} for r in rows]
