"""Task registry: adding a task means adding one entry to :data:`TASKS`.

A task factory takes the ``env`` config section and returns a graph environment with ``spec``,
``graph``, ``reset(seed)``, ``step(action)``, ``random_action(obs)`` and ``close()``: a PettingZoo
environment wrapped by :class:`ipgnn.envs.pettingzoo.ParallelGraphEnv` (one environment, a step is a
``Data``), or a batched task wrapped by :class:`ipgnn.envs.vector.TensorGraphEnv` (``num_envs``
environments, a step is a ``Batch``).
"""

from __future__ import annotations

from collections.abc import Callable

from ipgnn.config import ConfigError, EnvConfig
from ipgnn.envs.mpe import make_mpe_spread
from ipgnn.envs.mpe_tensor.factory import TENSOR_MPE_TASKS
from ipgnn.envs.pettingzoo import Headline, ParallelGraphEnv, StepResult
from ipgnn.envs.traffic_graph import ATT, make_traffic_env
from ipgnn.envs.vector import TensorGraphEnv


def make_magent_jungle(cfg: EnvConfig) -> ParallelGraphEnv:
    try:
        import magent2  # noqa: F401  (an optional dependency)
    except ImportError:
        raise ConfigError("env.task 'magent_jungle' needs magent2: pip install -e '.[magent]'") from None
    from ipgnn.envs.magent import make_magent_jungle as make

    return make(cfg)


TASKS: dict[str, Callable[[EnvConfig], ParallelGraphEnv | TensorGraphEnv]] = {
    "mpe_spread": make_mpe_spread,  # mpe2's own simple_spread (global observations), for small N
    **TENSOR_MPE_TASKS,  # the paper's locally observed MPE scenarios, batched tensors, to N = 200 and beyond
    "magent_jungle": make_magent_jungle,
    "traffic": make_traffic_env,
}


# Headline metrics of the tasks that have one besides the return: plots and summaries find a run's by
# the ``eval/<metric>`` rows it logged.
HEADLINES: tuple[Headline, ...] = (ATT,)


def headline_of(rows: list[dict]) -> Headline | None:
    """The headline metric a run's metric rows carry, if any."""
    return next((h for h in HEADLINES if any(f"eval/{h.metric}" in r for r in rows)), None)


def resolve_env_config(cfg: EnvConfig) -> EnvConfig:
    """``cfg`` with its machine-dependent choices made concrete, so that a run's ``config.yaml``, its
    checkpoints and its W&B config record what ran: traffic's ``engine: auto`` becomes the engine this
    machine will use (CityFlow when importable, else SUMO). A resumed run then keeps its engine."""
    if cfg.task == "traffic" and cfg.options.get("engine", "auto") == "auto":
        from ipgnn.envs.traffic_graph import resolve_engine

        return cfg.model_copy(update={"options": {**cfg.options, "engine": resolve_engine("auto")}})
    return cfg


def make_env(cfg: EnvConfig) -> ParallelGraphEnv | TensorGraphEnv:
    """Build the task named by ``cfg.task``; unknown names list the known ones."""
    if cfg.task not in TASKS:
        raise ConfigError(f"env.task: unknown task '{cfg.task}'; known tasks: {', '.join(sorted(TASKS))}")
    env = TASKS[cfg.task](cfg)
    if int(getattr(env, "num_envs", 1)) != cfg.num_envs:
        env.close()
        raise ConfigError(
            f"env.num_envs: task '{cfg.task}' steps one environment at a time, got {cfg.num_envs}; "
            f"set env.num_envs to 1 (batched tasks: {', '.join(sorted(TENSOR_MPE_TASKS))})"
        )
    return env


__all__ = [
    "TASKS",
    "HEADLINES",
    "Headline",
    "headline_of",
    "make_env",
    "ParallelGraphEnv",
    "StepResult",
    "TensorGraphEnv",
]
