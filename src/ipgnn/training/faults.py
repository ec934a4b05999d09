"""File-system faults of a run, told in one line: the operation, the path, why it failed, and what to do.

A run writes its directory, ``config.yaml``, ``metrics.jsonl``, its checkpoints and the cache; any of these
may meet a full disk, a read-only or immutable file system, a directory deleted or replaced by a file while the
run trains. Such an :class:`OSError` reaches ``ipgnn-train``'s top level, which prints :func:`describe`'s line
and exits with status 1 (an environment fault; 2 is for bad input). :func:`writing` tags the error with the
operation where the trainer knows it (a checkpoint's write, whose ``fsync`` or ``write`` error names no file);
elsewhere :func:`operation_of` tells it from the path. Checkpoints are written to a temporary file renamed over
``latest.pt`` (:mod:`ipgnn.checkpoint`), so a failed write keeps the last complete checkpoint, which the line
names with the command that resumes from it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: why an operation failed, by errno
REASONS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (an immutable file or directory?)",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "a file is in the way of a directory",
    errno.EISDIR: "it is a directory",
    errno.EIO: "input/output error (a failing disk, or a network file system that went away)",
}
_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_IN_THE_WAY = {errno.ENOTDIR, errno.EEXIST, errno.EISDIR}
_MAX_PATH = 300  # characters of a path echoed in a message


def _short(path: object) -> str:
    text = str(path)
    return text if len(text) <= _MAX_PATH else text[: _MAX_PATH - 20] + "..." + text[-17:]


@contextmanager
def writing(operation: str, path: Path, run_dir: Path | None = None) -> Iterator[None]:
    """Tag an :class:`OSError` raised inside with ``operation`` and ``path`` (when it names no file).

    With ``run_dir``, first check that the run directory still exists: a write would otherwise recreate it,
    half empty, under a run that was deleted or moved (``FileNotFoundError`` naming it instead)."""
    try:
        if run_dir is not None and not run_dir.is_dir():
            raise FileNotFoundError(errno.ENOENT, "the run directory is gone", str(run_dir))
        yield
    except OSError as exc:
        if getattr(exc, "operation", None) is None:
            exc.operation = operation
        if not exc.filename:
            exc.filename = str(path)
        raise


def operation_of(exc: OSError, run_dir: Path | None) -> str:
    """What was being done when ``exc`` was raised: its tag (:func:`writing`), or told from its path."""
    tagged = getattr(exc, "operation", None)
    if tagged:
        return tagged
    if not exc.filename:  # a write's or a flush's error names no file
        return "writing the run's files"
    if run_dir is None:
        return "a file operation of the run"
    path, run_dir = Path(exc.filename).absolute(), run_dir.absolute()
    if path == run_dir or path in run_dir.parents:
        return "creating the run directory"
    try:
        first = path.relative_to(run_dir).parts[0]
    except ValueError:
        return "a file operation of the run"
    if first.startswith(".") and first.endswith(".tmp"):  # an atomic write's temporary file: .<name>.<random>.tmp
        first = first[1:].rsplit(".", 2)[0]
    return {
        "checkpoints": "writing a checkpoint",
        "metrics.jsonl": "writing the metrics (metrics.jsonl)",
        "metrics.jsonl.tmp": "rewriting the metrics (metrics.jsonl)",
        "config.yaml": "writing the run's config (config.yaml)",
        "wandb": "writing the W&B run",
    }.get(first, "writing the run's files")


def describe(exc: OSError, run_dir: Path | None, existing: bool = True) -> str:
    """One line (without ``error:``): ``<operation> failed: <path>: <why>; <what was kept>; <what to do>``.

    ``run_dir``: the run's directory, if known; ``existing``: it existed before the fault (a run training, or
    one being resumed), rather than being made by the command that failed (which then removed it)."""
    code = exc.errno
    why = REASONS.get(code) or exc.strerror or str(exc)
    line = f"{operation_of(exc, run_dir)} failed: {_short(exc.filename or run_dir or '?')}: {why}"
    if run_dir is None or not run_dir.is_dir():
        if existing and run_dir is not None:
            return f"{line}; the run directory {_short(run_dir)} is gone (deleted or moved): start a new run"
        return f"{line}; nothing was written; {_advice(code, None)}"
    latest = run_dir / "checkpoints" / "latest.pt"
    if latest.is_file():
        kept = f"the last complete checkpoint {_short(latest)} is kept"
        return f"{line}; {kept}; {_advice(code, run_dir)}, then continue with: ipgnn-train --resume {_short(run_dir)}"
    return f"{line}; there is no checkpoint to resume from; {_advice(code, None)}, then start the run again"


def _advice(code: int | None, run_dir: Path | None) -> str:
    """What to do about an error of ``code`` (``run_dir``: a run with a checkpoint to resume)."""
    if code in _FULL:
        return "free space on that disk (or write runs to another with --logger.run_root)"
    if code in _READ_ONLY:
        if run_dir is not None:
            return f"make {_short(run_dir)} writable (or copy it to a writable disk and resume the copy)"
        return "make it writable, or write the run elsewhere (--run-dir DIR or --logger.run_root=DIR)"
    if code in _IN_THE_WAY:
        return "move the file that is in the way (or write the run elsewhere with --run-dir DIR)"
    return "fix the file system (or write the run elsewhere with --run-dir DIR)"
