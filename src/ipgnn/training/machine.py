"""The machine a run trains on: learner threads, the allocator, and warnings about a config this machine will
find slow. Warnings go to standard error through tqdm (:func:`warn`)."""

from __future__ import annotations

import logging
import os
import sys

import torch
from tqdm.auto import tqdm

log = logging.getLogger("ipgnn")

CPU_SLOW_NODES = 16 * 1024  # nodes per minibatch above which a CPU run warns (about 1 s per update here)


def warn(msg: str) -> None:
    """A warning on standard error through tqdm, so that the progress bar is not broken (and in the log).
    Never on standard output: the commands that print JSON there (``ipgnn-eval``, ``ipgnn-interpret``) build
    the learner first, and a warning about the machine's load would make their output unparseable."""
    log.debug(msg)
    tqdm.write(f"WARNING: {msg}", file=sys.stderr)


class Machine:
    """Sets the learner's threads for a run and tunes the allocator after its first gradient step;
    :meth:`restore` undoes both (``Trainer.close``)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self._memory_checked = False
        self._set_threads()

    def _set_threads(self) -> None:
        """The learner's torch threads (:func:`ipgnn.cpu.plan_threads`): the workers' simulators take cores
        of their own, and more threads than free cores make every op wait (an update measured 18x slower
        oversubscribed on 2 cores); warns when the load says the cores are taken."""
        from ipgnn.cpu import plan_threads, set_threads

        ro = self.cfg.rollout
        workers = ro.workers if ro.backend == "process" and ro.workers > 1 else 0
        plan = plan_threads(self.cfg.threads, workers)
        self._threads_before = set_threads(plan.threads)  # restored by restore()
        log.info("learner: %d torch thread(s) (%s)", plan.threads, plan.why)
        if plan.warning:
            warn(plan.warning)

    def after_gradient_step(self, device: torch.device) -> None:
        """Called after each gradient step: the allocator is tuned once, after the first one, on a CPU."""
        if not self._memory_checked and device.type == "cpu":
            self._keep_freed_memory()

    def _keep_freed_memory(self) -> None:
        """After the first gradient step: keep freed memory in the process when there is room
        (:func:`ipgnn.cpu.keep_freed_memory_if_room`; 1.75x faster updates measured at B = 1024)."""
        from ipgnn.cpu import keep_freed_memory_if_room

        self._memory_checked = True
        kept, why = keep_freed_memory_if_room()
        self._kept_memory = kept and why != "already in effect"  # close() undoes what this run turned on
        huge = "glibc.malloc.hugetlb=1" in os.environ.get("GLIBC_TUNABLES", "")
        log.info(
            "allocator: %s (%s)%s",
            "freed memory kept for the next update" if kept else "unchanged",
            why,
            "; huge pages on (GLIBC_TUNABLES)" if huge else "",
        )

    def restore(self) -> None:
        if getattr(self, "_threads_before", None):
            from ipgnn.cpu import set_threads

            set_threads(self._threads_before)
        if getattr(self, "_kept_memory", False):
            from ipgnn.cpu import release_freed_memory

            release_freed_memory()  # a later run in this process (a notebook, a sweep) decides for itself


def warn_if_slow(cfg, env, algo, device: torch.device) -> None:
    """Warn about bf16 where it is emulated or missing, and about minibatches a CPU takes seconds to update on."""
    from ipgnn.precision import bf16_advice, precision_warnings

    nodes = cfg.replay.batch_size * env.num_agents
    for msg in precision_warnings(cfg.algo.precision, device.type):
        warn(msg)
    if device.type == "cpu" and nodes > CPU_SLOW_NODES and cfg.train.gradient_steps > 0:
        msg = (
            f"this config updates on {cfg.replay.batch_size} x {env.num_agents} = {nodes} agent-nodes "
            f"per gradient step, {cfg.train.gradient_steps} steps every {cfg.train.update_every} "
            "environment step(s), on the CPU: expect about a second or more per gradient step. The paper's "
            "defaults are for GPUs; for a CPU run lower --replay.batch_size or --train.gradient_steps, "
            "or raise --train.update_every."
        )
        warn(msg + bf16_advice(cfg.algo.precision, getattr(algo, "mixed_precision", False)))


def warn_if_never_updates(cfg) -> None:
    """A new run whose random-action phase covers all of it."""
    tc = cfg.train
    if tc.learning_starts >= tc.total_steps and tc.gradient_steps > 0:
        msg = (
            f"train.learning_starts ({tc.learning_starts}) >= train.total_steps "
            f"({tc.total_steps}): this run takes random actions only and never updates the networks"
        )
        warn(msg)
