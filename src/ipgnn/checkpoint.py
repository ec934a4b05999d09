"""Atomic, self-verifying checkpoints that load without unpickling arbitrary objects.

Files are written to a temporary name in the same directory, flushed to disk and renamed over the
target (``os.replace`` is atomic on POSIX), so a crash mid-write never leaves a truncated checkpoint; a
failed write removes its temporary file and leaves the previous checkpoint untouched, and a full disk is
reported as such (:class:`OSError` ``ENOSPC`` naming the file, the space needed and the space free).

**Integrity.** A file is torch's zip archive followed by a 48-byte trailer: :data:`MAGIC` and the SHA-256 of
every byte before it, hashed while the archive is written (no second pass over a large replay buffer).
:func:`read` hashes the archive again and refuses a file whose bytes do not match
(:class:`CheckpointDamaged`, which names the file): one flipped bit anywhere, in the payload, the digest
or the marker, is caught. A file that ends in a bare zip archive (written before digests, or by plain
``torch.save``) still loads, unverified (:func:`load` warns once per file). The digest is
``"sha256:<hex>"`` (:func:`stored_digest`), so a checkpoint can record the digest of a file it refers to
(``latest.pt`` records its replay file's) and tell a damaged file from a foreign one.

Everything stored is tensors, numbers, strings, lists and dicts, so loading uses
``torch.load(weights_only=True)``; plain ``torch.load`` reads these files too (the trailer is ignored).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("ipgnn")

MAGIC = b"IPGNN-SHA256-v1\n"  # 16 bytes, then the 32-byte digest of everything before MAGIC
TRAILER = len(MAGIC) + 32
_ZIP_END = b"PK\x05\x06"  # a zip's end-of-central-directory record: the last 22 bytes of a bare torch.save file
_CHUNK = 1 << 22
_MiB = 1 << 20
_warned: set[str] = set()  # files warned about as unverified in this process


class CheckpointDamaged(ValueError):
    """A checkpoint whose bytes do not match the digest saved with it (or that ends in neither a digest nor a
    complete archive); the message names the file."""


class _HashingWriter:
    """A write-only file that hashes what passes through it (``torch.save`` only calls ``write``)."""

    def __init__(self, f) -> None:
        self.f, self.hash, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.hash.update(data)
        n = self.f.write(data)
        self.size += n
        return n

    def flush(self) -> None:
        self.f.flush()


def _tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts, lists, tuples): a lower bound on its file size."""
    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _no_space(path: Path, needed: int, free: int | None) -> OSError:
    have = "unknown" if free is None else f"{free / _MiB:.1f} MiB"
    return OSError(
        errno.ENOSPC,
        f"no space left on device writing {path} ({needed / _MiB:.1f} MiB needed, {have} free): "
        "free space or move the run",
    )


def _io_cause(exc: BaseException) -> OSError | None:
    """The :class:`OSError` behind a failed write: ``exc`` itself, or what torch's writer wrapped in its
    ``RuntimeError`` (``[enforce fail at inline_container.cc...] unexpected pos``)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _write_error(exc: BaseException, path: Path, operation: str, needed: int) -> OSError | None:
    """The :class:`OSError` that says what went wrong writing ``path``, or None when ``exc`` is no I/O fault
    (an object that cannot be saved keeps its own error)."""
    cause = _io_cause(exc)
    torch_io = isinstance(exc, RuntimeError) and ("inline_container" in str(exc) or "unexpected pos" in str(exc))
    if cause is None and not torch_io:
        return None
    code = getattr(cause, "errno", None)
    free = _free_bytes(path.parent)
    if code in (errno.ENOSPC, errno.EDQUOT) or (code is None and free is not None and free < needed + _MiB):
        return _no_space(path, needed, free)
    reason = (cause.strerror or str(cause)) if cause is not None else str(exc).strip().splitlines()[0][:200]
    return OSError(code or errno.EIO, f"cannot {operation} {path}: {reason}; check that its directory is writable")


def save(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` to ``path`` atomically, with its digest (see the module docstring); return ``path``.

    Raises:
        OSError: the directory cannot be made or written (the message names the path and the operation), or
            the disk is full (``errno.ENOSPC``: the MiB needed and free; refused before writing when the
            tensors alone do not fit). The temporary file is removed and a previous file at ``path`` is left
            as it was.
    """
    path = Path(path)
    needed = _tensor_bytes(obj)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(exc, path, f"create the directory {path.parent} for", needed) from exc
    free = _free_bytes(path.parent)
    if free is not None and free < needed:  # cannot fit: refuse before filling the disk
        raise _no_space(path, needed, free)
    operation, tmp = "create a temporary file for", None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        operation = "write"
        with os.fdopen(fd, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(obj, writer)
            f.write(MAGIC + writer.hash.digest())
            f.flush()
            os.fsync(f.fileno())
        operation = "rename the finished file onto"
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        error = _write_error(exc, path, operation, needed) if isinstance(exc, (OSError, RuntimeError)) else None
        if error is None:
            raise
        raise error from exc
    return path


def stored_digest(path: str | Path) -> str | None:
    """The digest ``path`` was saved with (``"sha256:<hex>"``, read from its trailer, not checked), or None
    for a file without one."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < TRAILER:
            return None
        f.seek(-TRAILER, os.SEEK_END)
        tail = f.read(TRAILER)
    return "sha256:" + tail[len(MAGIC) :].hex() if tail.startswith(MAGIC) else None


def _verify(path: Path) -> str | None:
    """Check ``path`` against its trailer: its digest, or None for a bare archive (no digest)."""
    size = path.stat().st_size
    recorded = stored_digest(path)
    if recorded is None:
        with open(path, "rb") as f:
            f.seek(max(0, size - 22))
            if f.read(4) == _ZIP_END:
                return None  # a bare zip archive: written before digests
        raise CheckpointDamaged(
            f"checkpoint '{path}' is damaged: it ends in neither an ipgnn digest nor a complete archive (a "
            "truncated, overwritten or foreign file); restore it from a copy"
        )
    h, left = hashlib.sha256(), size - TRAILER
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    if "sha256:" + h.hexdigest() != recorded:
        raise CheckpointDamaged(
            f"checkpoint '{path}' is damaged: its bytes do not match the digest it was saved with (digest "
            "mismatch: a flipped bit on the disk, or an edited or partly copied file); restore it from a copy"
        )
    return recorded


def read(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], str | None]:
    """``(contents, digest)`` of a checkpoint, its digest checked first; ``digest`` is None for a file written
    without one (unverified: the caller decides whether to warn, :func:`warn_unverified`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an empty, damaged (:class:`CheckpointDamaged`) or foreign file; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if path.stat().st_size == 0:
        raise ValueError(
            f"checkpoint '{path}' could not be read as an ipgnn checkpoint: the file is empty "
            "(0 bytes: a write that never finished, or a copy that failed)"
        )
    digest = _verify(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True), digest
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


def warn_unverified(path: str | Path) -> None:
    """Warn, once per file and process, that ``path`` was loaded without a digest to check it against."""
    key = str(Path(path).resolve())
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "%s has no digest (written before ipgnn checked checkpoints): loaded unverified; the next "
            "checkpoint of the run will carry one",
            path,
        )


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The contents of a checkpoint, checked against its digest (:func:`read`; a file without one loads with
    a warning)."""
    state, digest = read(path, map_location)
    if digest is None:
        warn_unverified(path)
    return state
