"""MPE cooperative navigation (``simple_spread_v3`` from ``mpe2``) as a graph task.

This is the stock ``mpe2`` scenario: every agent observes every other agent and the reward mixes a
local collision penalty with the shared coverage term (``local_ratio``). It is the small task that
proves the pipeline end to end; the paper's scaled, locally observed variants are separate tasks.
The communication graph is k-NN over agent positions (or fully connected).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ipgnn.config import EnvConfig, check_options

SPREAD_OPTIONS = {"local_ratio": float}


def _positions(env: Any) -> np.ndarray:
    return np.stack([a.state.p_pos for a in env.unwrapped.world.agents])


def _spread_metrics(env: Any) -> dict[str, float]:
    """Mean over landmarks of the distance to the nearest agent, and colliding agent pairs."""
    world = env.unwrapped.world
    agents = np.stack([a.state.p_pos for a in world.agents])
    marks = np.stack([lm.state.p_pos for lm in world.landmarks])
    d_lm = np.linalg.norm(marks[:, None, :] - agents[None, :, :], axis=-1).min(1)
    d_ag = np.linalg.norm(agents[:, None, :] - agents[None, :, :], axis=-1)
    size = world.agents[0].size
    collisions = (np.triu(d_ag < 2 * size, k=1)).sum()
    return {"landmark_distance": float(d_lm.mean()), "collisions": float(collisions)}


def make_mpe_spread(cfg: EnvConfig):
    from mpe2 import simple_spread_v3

    from ipgnn.envs.pettingzoo import ParallelGraphEnv

    opts = check_options(dict(cfg.options), SPREAD_OPTIONS, "mpe_spread")
    env = simple_spread_v3.parallel_env(
        N=cfg.num_agents,
        max_cycles=cfg.max_steps,
        continuous_actions=cfg.continuous_actions,
        local_ratio=float(opts.get("local_ratio", 0.5)),
    )
    return ParallelGraphEnv(env, cfg.graph, position_fn=_positions, metrics_fn=_spread_metrics)
