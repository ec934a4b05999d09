"""Task registry: adding a task means adding one entry to :data:`TASKS`.

A task factory takes the ``env`` config section and returns a graph environment with ``spec``,
``graph``, ``reset(seed)``, ``step(action)``, ``random_action(obs)`` and ``close()`` (see
:class:`ipgnn.envs.pettingzoo.ParallelGraphEnv`).
"""

from __future__ import annotations

from typing import Callable

from ipgnn.config import ConfigError, EnvConfig
from ipgnn.envs.mpe import make_mpe_spread
from ipgnn.envs.pettingzoo import ParallelGraphEnv, StepResult
from ipgnn.envs.traffic import make_traffic_env

TASKS: dict[str, Callable[[EnvConfig], ParallelGraphEnv]] = {
    "mpe_spread": make_mpe_spread,
    "traffic": make_traffic_env,
}


def make_env(cfg: EnvConfig) -> ParallelGraphEnv:
    """Build the task named by ``cfg.task``; unknown names list the known ones."""
    if cfg.task not in TASKS:
        raise ConfigError(f"env.task: unknown task '{cfg.task}'; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[cfg.task](cfg)


__all__ = ["TASKS", "make_env", "ParallelGraphEnv", "StepResult"]
