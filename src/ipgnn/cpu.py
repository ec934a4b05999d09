"""The machine a run finds: how many torch threads to use (with a warning when they would oversubscribe the
cores), how much memory is available, and an allocator that keeps freed memory for the next update. This is
the one place that sets torch's threads (:func:`set_threads`, :func:`thread_env` for child processes) and
reads the available memory (:func:`available_memory`); bfloat16 lives in :mod:`ipgnn.precision`.

**Threads.** More intra-op threads than free cores makes every op wait on the slowest thread: one IP-SAC update measured
18x slower with two threads on two busy cores, and the learning tests 21-22 min instead of 1-2 min in a
suite run at load 4-6 (``benchmarks/README.md``). Two figures decide:

- **usable cores**: the CPUs this process may run on (``os.sched_getaffinity``: a ``taskset``, a cgroup
  cpuset or a scheduler's allocation), which can be fewer than ``os.cpu_count()``;
- **busy cores**: the 1-minute load average, read before the run starts (other processes' runnable
  threads; it is machine-wide, so inside a container it can count work on CPUs this process cannot use).

``threads: auto`` (the default) takes ``min(torch's default, usable cores - rollout workers)``: it depends on
how the process was launched, never on the load at that moment, so the same seed gives the same run on the
same machine (the number of threads can change the last digits of a reduction). When the load says fewer
cores are free than that, :func:`plan_threads` returns a warning with the number to pass instead
(``--threads=K``). ``OMP_NUM_THREADS`` in the environment, or an explicit ``threads: K``, is used as given.

**Memory reuse.** An update allocates and frees edge-sized tensors (``E x d`` floats: 25 MB at N = 96,
B = 64; 400 MB at B = 1024) dozens of times. glibc serves blocks above its mmap threshold (at most 32 MB)
with a fresh ``mmap`` and returns them with ``munmap``, so every such tensor is page-faulted and zeroed by
the kernel again, and the heap's top is trimmed back to the OS as soon as it is free.
:func:`keep_freed_memory` turns both off (``mallopt(M_MMAP_MAX, 0)``, and ``M_TRIM_THRESHOLD`` -1, which
mallopt(3) documents as "disables trimming completely"), so freed blocks stay in the process and the next
update reuses them. The numbers computed are unchanged (allocation does not touch them). Measured on the
2-core CPU (``benchmarks/README.md``): an IP-SAC update 1.75x faster at N = 16, B = 1024.

The cost is memory: the heap keeps its peak, and blocks freed between differently sized tensors fragment
it. At N = 225, B = 1024 the process outgrew the 24 GiB machine (killed by the kernel) where it peaked at
16.9 GiB without. So the trainer applies it only after its first gradient step, and only when twice the
peak resident memory so far fits in what the process holds plus what the machine has available
(:func:`keep_freed_memory_if_room`). glibc only (Linux); elsewhere nothing changes.

**Huge pages.** Where the kernel offers transparent huge pages on request (``madvise`` mode) and glibc is
2.35 or newer, ``ipgnn-train`` (and ``python -m ipgnn.cli_entry``) re-executes itself once with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (:func:`huge_page_env`): glibc then asks for 2 MiB pages for the
blocks it maps, one fault per 2 MiB instead of per 4 KiB, and memory is still returned to the OS when freed.
It needs the process's start (glibc reads its tunables once), hence the re-exec; the process keeps its PID,
arguments and exit code. Measured on the 2-core CPU: N = 225, B = 1024 went from 52.0 to 20.8 s per update
with the same peak memory (16.0 GiB), where keeping freed memory had no room. ``IPGNN_HUGE_PAGES=0`` turns
it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from typing import Any


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_cores() -> float:
    """The machine's 1-minute load average (0 where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


@dataclass(frozen=True)
class ThreadPlan:
    threads: int  # torch intra-op threads for the learner
    why: str  # how the number was chosen, for the log
    free: int  # the cores that look free (usable - workers - whole units of load, at least 1)
    warning: str | None = None  # set when the cores look oversubscribed


def plan_threads(
    requested: int | str = "auto",
    workers: int = 0,
    load: float | None = None,
    usable: int | None = None,
    default: int | None = None,
) -> ThreadPlan:
    """The learner's torch threads: ``requested`` (an int, or ``auto``), with ``workers`` cores left to
    simulator processes; ``load``/``usable``/``default`` (the load average, usable cores and torch's default)
    are read from the machine unless given (tests pass them)."""
    usable = usable_cores() if usable is None else usable
    load = busy_cores() if load is None else load
    if default is None:
        import torch  # here, not at import: the CLI reads this module before it decides to re-exec

        default = torch.get_num_threads()
    env = os.environ.get("OMP_NUM_THREADS")
    if requested != "auto":
        threads, why = int(requested), "threads in the config"
    elif env:
        threads, why = default, f"OMP_NUM_THREADS={env}"
    else:
        threads = max(1, min(default, usable - workers))
        why = f"{usable} usable core(s)" + (f", {workers} left to rollout workers" if workers else "")
    free = max(1, usable - workers - int(load))  # whole runnable threads: a load of 0.6 is a process finishing
    warning = None
    if threads > free:
        warning = (
            f"{threads} torch thread(s) on {usable} usable core(s) with a load average of {load:.1f}"
            + (f" and {workers} rollout worker(s)" if workers else "")
            + f": about {free} core(s) look free, and ops on busy cores wait on each other (an update "
            f"measured 18x slower with 2 threads on 2 busy cores). Pass --threads={free} (or set "
            "OMP_NUM_THREADS) to fit; a run's last digits can depend on its number of threads"
        )
    return ThreadPlan(threads, why, free, warning)


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads to ``threads`` (no call when it already has that many) and return the
    number it had, so that a caller can put it back: the learner (:func:`plan_threads`' number), a simulator
    or agent worker process (1: it needs no intra-op threads of its own), a benchmark's ``--threads``."""
    import torch  # here, not at import: see plan_threads

    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    return before


def thread_env(threads: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: this process's environment) for a child process that should run
    ``threads`` torch/OpenMP threads (``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``); unchanged when ``threads``
    is 0. Processes run side by side share the cores, and more threads than cores makes every op wait."""
    env = dict(os.environ if environ is None else environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h
_KEPT = False


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return libc
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (see the module docstring): no ``mmap`` per large block,
    no trimming of the heap. Process-wide and idempotent; returns whether it is in effect (False where the
    C library is not glibc)."""
    global _KEPT
    libc = _libc()
    if not _KEPT and libc is not None:
        _KEPT = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))  # -1: never trim
    return _KEPT


def release_freed_memory() -> None:
    """Undo :func:`keep_freed_memory`: glibc's defaults again (mmap for large blocks, a 128 KiB trim threshold)
    and the free memory returned to the OS now (``malloc_trim``)."""
    global _KEPT
    libc = _libc()
    if _KEPT and libc is not None:
        libc.mallopt(_M_MMAP_MAX, 65536)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
        _KEPT = False


def _proc_kib(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory(device: Any = "cpu") -> int | None:
    """Free memory in bytes where ``device`` keeps its tensors, or None when unknown: the machine's
    ``MemAvailable`` (``/proc/meminfo``) for the CPU (the default: the replay buffer's room), CUDA's free
    memory (``torch.cuda.mem_get_info``) for a CUDA device (the networks' room). :func:`memory_source` says
    which was read, for a message."""
    if str(device).startswith("cuda"):
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
        except Exception:  # noqa: BLE001 - no driver: unknown
            return None
    kib = _proc_kib("/proc/meminfo", "MemAvailable:")
    return None if kib is None else kib * 1024


def memory_source(device: Any = "cpu") -> str:
    """What :func:`available_memory` reads for ``device``, for a message."""
    return f"free memory on {device}" if str(device).startswith("cuda") else "MemAvailable (/proc/meminfo)"


def keep_freed_memory_if_room(headroom: float = 2.0) -> tuple[bool, str]:
    """:func:`keep_freed_memory` when ``headroom`` x this process's peak resident memory (after a gradient
    step, so the peak includes one) fits in its resident memory plus the machine's available memory.
    Returns whether it is in effect and why, for the log."""
    if _KEPT:
        return True, "already in effect"
    peak = _proc_kib("/proc/self/status", "VmHWM:")
    rss = _proc_kib("/proc/self/status", "VmRSS:")
    avail = _proc_kib("/proc/meminfo", "MemAvailable:")
    if peak is None or rss is None or avail is None:
        return False, "no /proc to read the peak memory from"
    room = rss + avail
    if headroom * peak > room:
        return False, (
            f"{headroom:g} x the peak resident memory ({peak / 2**20:.1f} GiB) does not fit in "
            f"{room / 2**20:.1f} GiB; freed memory is returned to the OS"
        )
    if not keep_freed_memory():
        return False, "not glibc"
    return True, f"peak {peak / 2**20:.1f} GiB; {room / 2**20:.1f} GiB within reach"


def _thp_mode() -> str | None:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else None


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except (AttributeError, ValueError, OSError):
        return None


def huge_page_env(environ: dict, thp_mode: str | None = "read", glibc: tuple[int, int] | None = (0, 0)) -> dict | None:
    """The environment to re-execute with so that glibc maps its large blocks on transparent huge pages
    (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``), or None when that would change nothing: not Linux, the
    kernel's mode is not ``madvise`` (``always`` already does it, ``never`` cannot), glibc older than 2.35
    (no such tunable), the tunable already set, or ``IPGNN_HUGE_PAGES=0``. ``thp_mode``/``glibc`` are read
    from the machine unless given (tests pass them)."""
    thp_mode = _thp_mode() if thp_mode == "read" else thp_mode
    glibc = _glibc_version() if glibc == (0, 0) else glibc
    tunables = environ.get("GLIBC_TUNABLES", "")
    if (
        not sys.platform.startswith("linux")
        or thp_mode != "madvise"
        or glibc is None
        or glibc < (2, 35)
        or "glibc.malloc.hugetlb" in tunables
        or environ.get("IPGNN_HUGE_PAGES") == "0"
    ):
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:glibc.malloc.hugetlb=1" if tunables else "glibc.malloc.hugetlb=1"
    return env


def reexec_with_huge_pages() -> None:
    """Re-execute this process (same arguments, same PID) with :func:`huge_page_env`'s environment, when
    it would change anything; call it first thing in a command's main."""
    env = huge_page_env(dict(os.environ))
    if env is not None and getattr(sys, "orig_argv", None):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
