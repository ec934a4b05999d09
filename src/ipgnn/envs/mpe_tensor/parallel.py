"""A PettingZoo ``ParallelEnv`` over one world (``B = 1``) of a tensor MPE scenario.

For tools that expect PettingZoo (``parallel_api_test``, the generic
:class:`~ipgnn.envs.pettingzoo.ParallelGraphEnv`, baselines written against PettingZoo). Training at
scale should use the scenario directly, with ``num_envs`` worlds batched.

What differs from ``mpe2``'s parallel environments: continuous actions are ``Box(-1, 1, (2,))`` (a
force direction; ``mpe2`` uses ``Box(0, 1, (5,))``), observations are the scenario's local ones, and
there is no rendering (``render_mode`` must be None).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo.utils.env import ParallelEnv

from ipgnn.envs.mpe_tensor.scenarios import SCENARIOS, TensorMPEScenario, make_scenario


class TensorMPEParallelEnv(ParallelEnv):
    """PettingZoo view of ``make_scenario(scenario_name, num_agents, num_envs=1, ...)``.

    Agents are named ``agent_0 .. agent_{N-1}`` (the scenario's learning agents, in order). Observations
    are float32 ``Box(-inf, inf, (obs_dim,))``; actions ``Discrete(5)`` (no-op, left, right, down, up) or
    ``Box(-1, 1, (2,), float32)``. Infos carry the scenario's metrics (the same for every agent).
    All agents are truncated together after ``max_steps`` steps and ``agents`` is emptied. A missing
    agent in the action dict does nothing that step (no-op / zero force).

    Args:
        scenario_name: a key of :data:`~ipgnn.envs.mpe_tensor.scenarios.SCENARIOS`.
        num_agents: ``N``.
        max_steps, continuous, device, options: passed to the scenario.
        render_mode: must be None (no rendering).
    """

    metadata = {"render_modes": [], "is_parallelizable": True, "name": "ipgnn_tensor_mpe"}

    def __init__(
        self,
        scenario_name: str,
        num_agents: int,
        max_steps: int = 25,
        continuous: bool = False,
        render_mode: str | None = None,
        device: str = "cpu",
        **options: Any,
    ):
        if render_mode is not None:
            raise ValueError(
                f"TensorMPEParallelEnv does not render (render_mode={render_mode!r}); "
                "use mpe2's own environments for pictures"
            )
        if scenario_name not in SCENARIOS:
            raise ValueError(f"unknown tensor MPE scenario '{scenario_name}'; known: {', '.join(SCENARIOS)}")
        self.render_mode = render_mode
        self.scenario: TensorMPEScenario = make_scenario(
            scenario_name, num_agents, num_envs=1, max_steps=max_steps, continuous=continuous, device=device, **options
        )
        self.metadata = {**self.metadata, "name": f"ipgnn_tensor_mpe_{scenario_name}"}
        self.possible_agents = [f"agent_{i}" for i in range(num_agents)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        obs_space = spaces.Box(-np.inf, np.inf, (self.scenario.obs_dim,), dtype=np.float32)
        self._obs_spaces = {a: obs_space for a in self.possible_agents}
        if self.scenario.discrete:
            self._act_spaces = {a: spaces.Discrete(self.scenario.action_dim) for a in self.possible_agents}
        else:
            self._act_spaces = {a: spaces.Box(-1.0, 1.0, (2,), dtype=np.float32) for a in self.possible_agents}

    # PettingZoo's idiom (its parallel_api_test asks for it): the same space object on every call. B019: the
    # class-level cache keeps each instance alive for the process's lifetime.
    @functools.cache  # noqa: B019
    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    # ----------------------------------------------------------------------------------------------
    def _obs_dict(self, obs: torch.Tensor) -> dict[str, np.ndarray]:
        x = obs[0].detach().cpu().numpy().astype(np.float32)
        return {a: x[self._index[a]] for a in self.agents}

    def _infos(self) -> dict[str, dict[str, Any]]:
        m = {k: float(v[0]) for k, v in self.scenario.metrics().items()}
        return {a: dict(m) for a in self.agents}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        obs = self.scenario.reset(seed=seed)
        if seed is not None:
            for i, a in enumerate(self.possible_agents):
                self._act_spaces[a].seed(seed + i)
        self.agents = self.possible_agents[:]
        return self._obs_dict(obs), self._infos()

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset()")
        n, sc = self.scenario.num_agents, self.scenario
        unknown = set(actions) - set(self.possible_agents)
        if unknown:
            raise ValueError(f"actions for unknown agents {sorted(unknown)}; agents are {self.possible_agents}")
        if sc.discrete:
            act = torch.zeros(1, n, dtype=torch.long)
            for a, v in actions.items():
                act[0, self._index[a]] = int(v)
        else:
            act = torch.zeros(1, n, 2, dtype=sc.dtype)
            for a, v in actions.items():
                act[0, self._index[a]] = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(2), dtype=sc.dtype)
        obs, rew, term, trunc = sc.step(act)
        agents = self.agents
        obs_d = self._obs_dict(obs)
        rew_d = {a: float(rew[0, self._index[a]]) for a in agents}
        term_d = {a: bool(term[0, self._index[a]]) for a in agents}
        trunc_d = {a: bool(trunc[0, self._index[a]]) for a in agents}
        infos = self._infos()
        self.agents = [a for a in agents if not (term_d[a] or trunc_d[a])]
        return obs_d, rew_d, term_d, trunc_d, infos

    def state(self) -> np.ndarray:
        """Positions and velocities of every entity, flattened (float32)."""
        s = self.scenario.get_state()
        return torch.cat([s["p_pos"][0].flatten(), s["p_vel"][0].flatten()]).cpu().numpy().astype(np.float32)

    def render(self) -> None:
        raise NotImplementedError("TensorMPEParallelEnv does not render")

    def close(self) -> None:
        pass
