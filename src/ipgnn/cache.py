"""The one home of ipgnn's cache directory: ``$IPGNN_CACHE``, or ``~/.cache/ipgnn`` when it is unset.

What lives there, by sub-directory:

* ``scenarios``: generated scenarios (:func:`ipgnn.traffic.generate.materialise`); derived, made again from
  their spec.
* ``sumo``: SUMO conversions (:func:`ipgnn.traffic.sumo_convert.convert`); derived, converted again.
* ``references``: the reference controllers' results (:mod:`ipgnn.references`); derived, evaluated again.
* ``datasets``: downloaded data sets (``ipgnn-data fetch``); not derived: what the user keeps.

Guarantees of :func:`cache_dir`:

* ``IPGNN_CACHE`` set but empty is refused with :class:`CacheDirError` (never a cache in the working
  directory): unset it or give it a directory.
* With ``write=True`` the directory is created if needed and proven writable (a file is created in it and
  removed). When it cannot be, a derived cache (``temporary_ok=True``: everything in it can be made again,
  only time is lost) falls back to a fresh temporary directory of this process, removed when it exits,
  with one logged warning that names both paths; any other use raises :class:`CacheDirError` naming the
  path, why, and what to do.
* ``write=False`` only resolves the path (for reading, or for a help text); nothing is created.

:class:`CacheDirError` is a :class:`ValueError`: the command-line tools print it as one ``error:`` line and
exit with status 2 (a setting to fix, like a bad config), before any run directory is written.
This module imports nothing from ipgnn, so every layer may use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("ipgnn")

ENV = "IPGNN_CACHE"
_fallbacks: dict[Path, Path] = {}  # an unusable cache root -> this process's temporary stand-in


class CacheDirError(ValueError):
    """The cache directory cannot be used; the message names the path, why, and what to do."""


def cache_root() -> Path:
    """``$IPGNN_CACHE`` or ``~/.cache/ipgnn`` (``~``: ``$HOME``), resolved without touching the file system.

    Raises :class:`CacheDirError` when ``IPGNN_CACHE`` is set but empty, or when it is unset and the home
    directory cannot be determined."""
    value = os.environ.get(ENV)
    if value is not None:
        if not value.strip():
            raise CacheDirError(
                f"{ENV} is set but empty: unset it (the cache then goes to ~/.cache/ipgnn) or set it to a "
                f"directory, e.g. {ENV}=$HOME/.cache/ipgnn"
            )
        return Path(value).expanduser()
    try:
        return Path.home() / ".cache" / "ipgnn"
    except RuntimeError as exc:  # no HOME and no passwd entry
        raise CacheDirError(f"no cache directory: {exc}; set {ENV} to a writable directory") from None


def cache_dir(sub: str | None = None, *, write: bool = True, temporary_ok: bool = False) -> Path:
    """``<cache root>/<sub>`` (see the module docstring for the guarantees).

    Args:
        sub: the sub-directory (``scenarios``, ``sumo``, ``references``, ``datasets``), or the root itself.
        write: create it and check that files can be written in it.
        temporary_ok: the caller's files are derived and can be made again, so an unusable directory falls
            back to a temporary one, with a warning, instead of raising.

    Raises:
        CacheDirError: ``IPGNN_CACHE`` set but empty; or (with ``write``, without ``temporary_ok``) a cache
            directory that cannot be created or written.
    """
    root = cache_root()
    path = root / sub if sub else root
    if not write:
        return path
    problem = _unwritable(path)
    if problem is None:
        return path
    source = f"${ENV}" if os.environ.get(ENV) is not None else "the default under $HOME"
    if not temporary_ok:
        raise CacheDirError(
            f"cache directory {path} ({source}) cannot be written: {problem}; set {ENV} to a writable "
            f"directory{' (or unset it)' if source.startswith('$') else ''}"
        )
    stand_in = _fallback(root, f"{path} ({source}) cannot be written: {problem}")
    out = stand_in / sub if sub else stand_in
    out.mkdir(parents=True, exist_ok=True)
    return out


def _unwritable(path: Path) -> str | None:
    """Why files cannot be written in ``path`` (created if missing), or ``None`` when they can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".ipgnn-write-probe.")
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        return "it exists and is not a directory"
    except OSError as exc:
        return f"{exc.strerror or exc} ({exc.filename or path})"
    return None


def _fallback(root: Path, why: str) -> Path:
    """This process's temporary stand-in for the cache ``root`` (made, and warned about, once)."""
    if root not in _fallbacks:
        tmp = Path(tempfile.mkdtemp(prefix="ipgnn-cache-"))
        _fallbacks[root] = tmp
        owner = os.getpid()
        # removed when this process exits; never by a forked child (whose atexit would otherwise run it)
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(tmp, ignore_errors=True))
        log.warning(
            "cache directory %s; using the temporary cache %s for this process instead (removed at exit: "
            "generated scenarios, conversions and reference results are made again next time). Set %s to a "
            "writable directory to keep them",
            why,
            tmp,
            ENV,
        )
    return _fallbacks[root]
