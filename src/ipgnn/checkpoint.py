"""Atomic checkpoints that load without unpickling arbitrary objects.

Files are written to a temporary name in the same directory, flushed to disk and renamed over the
target (``os.replace`` is atomic on POSIX), so a crash mid-write never leaves a truncated checkpoint.
Everything stored is tensors, numbers, strings, lists and dicts, so :func:`load` uses
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save(obj: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if path.stat().st_size == 0:
        raise ValueError(
            f"checkpoint '{path}' could not be read as an ipgnn checkpoint: the file is empty "
            "(0 bytes: a write that never finished, or a copy that failed)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupted or foreign file: say which, not a pickle traceback
        # torch's own advice is to re-run with weights_only=False, i.e. to unpickle an untrusted file: never
        # pass that on; keep its first line, which says what was wrong
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            reason = "it holds objects other than tensors, numbers, strings, lists and dicts (not written by ipgnn)"
        elif "weights" in text.lower() or not text.strip():
            reason = "it is damaged or not a PyTorch checkpoint"
        else:
            reason = text.strip().splitlines()[0]
        raise ValueError(f"checkpoint '{path}' could not be read as an ipgnn checkpoint: {reason}") from None
