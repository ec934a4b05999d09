"""What the networks need to know about a task's agents: a neutral home shared by the environments, the
algorithms and the networks (environments never import algorithms)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AgentSpec:
    """What the networks need to know about a task's agents."""

    obs_dim: int
    action_dim: int
    discrete: bool
    num_agent_types: int = 1
