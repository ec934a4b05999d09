"""How many torch threads a learner should use on the machine it finds, and a warning when it would
oversubscribe the cores.

More intra-op threads than free cores makes every op wait on the slowest thread: one IP-SAC update measured
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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch


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
    free: int  # the cores that look free (usable - workers - load, at least 1)
    warning: Optional[str] = None  # set when the cores look oversubscribed


def plan_threads(requested: Union[int, str] = "auto", workers: int = 0, load: Optional[float] = None,
                 usable: Optional[int] = None, default: Optional[int] = None) -> ThreadPlan:
    """The learner's torch threads: ``requested`` (an int, or ``auto``), with ``workers`` cores left to
    simulator processes; ``load``/``usable``/``default`` (the load average, usable cores and torch's default)
    are read from the machine unless given (tests pass them)."""
    usable = usable_cores() if usable is None else usable
    load = busy_cores() if load is None else load
    default = torch.get_num_threads() if default is None else default
    env = os.environ.get("OMP_NUM_THREADS")
    if requested != "auto":
        threads, why = int(requested), "threads in the config"
    elif env:
        threads, why = default, f"OMP_NUM_THREADS={env}"
    else:
        threads = max(1, min(default, usable - workers))
        why = f"{usable} usable core(s)" + (f", {workers} left to rollout workers" if workers else "")
    free = max(1, int(usable - workers - load + 0.5))
    warning = None
    if threads > free:
        warning = (f"{threads} torch thread(s) on {usable} usable core(s) with a load average of {load:.1f}"
                   + (f" and {workers} rollout worker(s)" if workers else "")
                   + f": about {free} core(s) look free, and ops on busy cores wait on each other (an update "
                   f"measured 18x slower with 2 threads on 2 busy cores). Pass --threads={free} (or set "
                   "OMP_NUM_THREADS) to fit; a run's last digits can depend on its number of threads")
    return ThreadPlan(threads, why, free, warning)
