"""The traffic environment every benchmark script builds: one scenario, one engine, one episode of ``decisions``
decisions, on the scenario's own road graph (``graph.kind = env``)."""

from __future__ import annotations

from typing import Any

from ipgnn.config import EnvConfig, GraphConfig
from ipgnn.envs import make_env


def traffic_env(scenario: str | dict[str, Any], num_agents: int | None, engine: str, decisions: int):
    """``make_env`` for the traffic task; ``scenario`` as ``env.options.scenario`` takes it (a scenario directory
    or a generator spec)."""
    return make_env(
        EnvConfig(
            task="traffic",
            num_agents=num_agents,
            max_steps=decisions,
            graph=GraphConfig(kind="env"),
            options={"scenario": scenario, "engine": engine},
        )
    )
