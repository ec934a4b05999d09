"""A generic adapter from any PettingZoo ``ParallelEnv`` to the graph data model.

One environment step becomes one PyG :class:`~torch_geometric.data.Data`:

- ``x``: ``[N, obs_dim]`` per-agent observations (padded with zeros to the largest space);
- ``edge_index``: ``[2, E]`` communication links from the :class:`~ipgnn.graphs.GraphBuilder`;
- ``pos``: ``[N, d]`` positions, when the task provides them (k-NN needs them);
- ``action_mask``: ``[N, A]`` bool, when agents' valid actions differ (PettingZoo's
  ``info[agent]["action_mask"]`` or a dict observation's ``"action_mask"``);
- ``agent_type``: ``[N]`` long, for heterogeneous agents.

Agent order is ``env.possible_agents`` throughout; an agent that has left the episode keeps its row
with zero observation and is reported done.

Reward and metric definitions (kept apart on purpose):

- **training reward** ``r_i``: the environment's own per-agent reward, unscaled;
- **episode return** (``episode_return``): :math:`\\sum_t \\sum_i r_i^t`, the team's undiscounted
  return, the quantity the paper's curves report as "average episode reward";
  ``episode_return_per_agent`` divides it by ``N``;
- **task metrics**: whatever the task's ``metrics_fn`` reports, averaged over the steps of an episode
  (e.g. distance to landmarks for cooperative navigation), under their own names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo.utils.env import ParallelEnv
from torch import Tensor
from torch_geometric.data import Data

from ipgnn.config import GraphConfig
from ipgnn.graphs import GraphBuilder
from ipgnn.spec import AgentSpec


@dataclass(frozen=True)
class Headline:
    """A task's headline metric, the one its results are judged by (traffic: average travel time).

    ``metric`` is an episode metric's name (``eval/<metric>`` in the logs), ``label`` what plots and
    tables call it, and ``paper_sign`` the sign under which the paper plots it (traffic: -1, "average
    episode reward = negative average travel time")."""

    metric: str
    label: str
    unit: str = ""
    lower_is_better: bool = True
    paper_sign: float = -1.0


@dataclass
class StepResult:
    obs: Data
    reward: Tensor  # [N] float
    terminated: Tensor  # [N] bool
    truncated: Tensor  # [N] bool
    done: bool  # the episode is over (every agent terminated or truncated)
    episode: dict[str, float] | None = None  # set on the last step: episode return, length, metrics
    infos: dict[str, Any] = field(default_factory=dict)


def uniform_random_action(num: int, spec: AgentSpec, mask: Tensor | None = None) -> Tensor:
    """Uniformly random valid actions for ``num`` agents, from torch's RNG: ``[num]`` indices among the
    actions ``mask`` (``[num, A]``) allows, or ``[num, D]`` in ``[-1, 1]`` for continuous actions."""
    if spec.discrete:
        weights = torch.ones(num, spec.action_dim) if mask is None else mask.float()
        return torch.multinomial(weights, 1).squeeze(-1)
    return torch.rand(num, spec.action_dim) * 2.0 - 1.0


class ParallelGraphEnv:
    """Wrap a PettingZoo ``ParallelEnv`` (plus a graph builder) as a graph environment.

    Args:
        env: the PettingZoo environment.
        graph: the ``env.graph`` config section.
        position_fn: ``env -> array [N, d]`` of agent positions (needed for k-NN graphs).
        env_edges: the task's own static graph, ``[2, E]`` (for ``graph.kind: env``).
        agent_types: ``[N]`` types of the agents, for per-type encoders.
        metrics_fn: ``env -> dict`` of task metrics at the current step (averaged over the episode).
        episode_metrics_fn: ``env -> dict`` of task metrics read once, at the end of an episode
            (e.g. average travel time so far).
        integer_observations: every observation is an integer (counts, one-hot): the replay buffer
            may store them as int16, exactly.
        headline: the task's headline metric (:class:`Headline`), if it has one besides the return.
        reference_policies_fn: ``env -> {name: obs -> action}``, the task's classical reference
            controllers (traffic: FixedTime and MaxPressure), evaluated exactly like a learned policy.
        reference_key: what the reference controllers' results depend on besides the config (the engine
            and a digest of the scenario's files), so that they can be cached.
        static_positions: ``position_fn`` gives the same positions at every step (a road network's
            intersections): they are converted to a tensor once, not at every step.
    """

    def __init__(
        self,
        env: ParallelEnv,
        graph: GraphConfig,
        position_fn: Callable[[Any], np.ndarray] | None = None,
        env_edges: Tensor | None = None,
        agent_types: Tensor | None = None,
        metrics_fn: Callable[[Any], dict[str, float]] | None = None,
        episode_metrics_fn: Callable[[Any], dict[str, float]] | None = None,
        integer_observations: bool = False,
        headline: Headline | None = None,
        reference_policies_fn: Callable[[Any], dict[str, Callable]] | None = None,
        reference_key: str = "",
        static_positions: bool = False,
    ):
        self.env = env
        self.headline = headline
        self._reference_policies_fn = reference_policies_fn
        self.reference_key = reference_key
        self.agents = list(env.possible_agents)
        self.num_agents = len(self.agents)
        self.position_fn = position_fn
        self._static, self._static_pos = static_positions, None
        self.metrics_fn = metrics_fn
        self.episode_metrics_fn = episode_metrics_fn
        self.agent_type = agent_types
        self.spec = self._check_spaces()
        self.graph = GraphBuilder(graph, self.num_agents, env_edges)
        if not self.graph.is_static and position_fn is None:
            raise ValueError(
                f"env.graph.kind '{graph.kind}' needs agent positions; this task gives none: use kind 'full' or 'env'"
            )
        self.has_action_mask = False
        self.integer_observations = integer_observations
        # the optional array protocol (an environment that also offers reset_arrays/step_arrays, agents in
        # possible_agents order; see ipgnn.array_env.ArrayParallelEnv): the same steps without PettingZoo's
        # per-agent dicts
        self._arrays = callable(getattr(env, "step_arrays", None)) and callable(getattr(env, "reset_arrays", None))
        self._ep: dict[str, float] = {}

    # ----------------------------------------------------------------------------------------------
    def _check_spaces(self) -> AgentSpec:
        obs_spaces = [self.env.observation_space(a) for a in self.agents]
        act_spaces = [self.env.action_space(a) for a in self.agents]
        obs_spaces = [s["observation"] if isinstance(s, spaces.Dict) else s for s in obs_spaces]
        for a, s in zip(self.agents, obs_spaces):
            if not isinstance(s, spaces.Box) or len(s.shape) != 1:
                raise TypeError(
                    f"agent '{a}': observation space must be a flat Box, got {s}; "
                    "flatten it with gymnasium.spaces.flatten_space / a PettingZoo wrapper"
                )
        kinds = {type(s) for s in act_spaces}
        if kinds == {spaces.Discrete}:
            self._act_low = self._act_high = None
            n = max(int(s.n) for s in act_spaces)
            act_n = np.array([int(s.n) for s in act_spaces])
            # agents with fewer actions than the largest space: the extra ones are always invalid
            self._space_mask = (np.arange(n)[None, :] < act_n[:, None]) if (act_n < n).any() else None
            spec = AgentSpec(max(s.shape[0] for s in obs_spaces), n, True, self._num_types())
        elif kinds == {spaces.Box}:
            self._space_mask = None
            shapes = {s.shape for s in act_spaces}
            if len(shapes) != 1 or len(next(iter(shapes))) != 1:
                raise TypeError(f"continuous agents must share one flat action shape, got {shapes}")
            self._act_low = torch.as_tensor(np.stack([s.low for s in act_spaces]), dtype=torch.float32)
            self._act_high = torch.as_tensor(np.stack([s.high for s in act_spaces]), dtype=torch.float32)
            if not (torch.isfinite(self._act_low).all() and torch.isfinite(self._act_high).all()):
                raise TypeError("continuous action spaces must be bounded (the policy is tanh-squashed)")
            spec = AgentSpec(max(s.shape[0] for s in obs_spaces), next(iter(shapes))[0], False, self._num_types())
        else:
            raise TypeError(
                f"all agents need Discrete or all need Box action spaces, got {sorted(k.__name__ for k in kinds)}"
            )
        return spec

    def _num_types(self) -> int:
        return 1 if self.agent_type is None else int(self.agent_type.max()) + 1

    def _to_data(self, obs: dict[str, Any], infos: dict[str, Any]) -> Data:
        n, d = self.num_agents, self.spec.obs_dim
        x = np.zeros((n, d), dtype=np.float32)
        mask = self._space_mask.copy() if self._space_mask is not None else None
        for i, a in enumerate(self.agents):
            o = obs.get(a)
            if o is None:
                continue
            m = None
            if isinstance(o, dict):
                m, o = o.get("action_mask"), o["observation"]
            m = infos.get(a, {}).get("action_mask", m)
            o = np.asarray(o, dtype=np.float32).ravel()
            x[i, : o.shape[0]] = o
            if m is not None:
                if mask is None:
                    mask = np.ones((n, self.spec.action_dim), dtype=bool)
                m = np.asarray(m, dtype=bool)
                mask[i, : len(m)] &= m
        return self._data(x, mask)

    def _data(self, x: np.ndarray, mask: np.ndarray | None) -> Data:
        """The step's ``Data`` from ``x`` (``[N, obs_dim]`` float32) and the action mask (``[N, A]`` bool, or
        ``None``: every action of the agent's space is valid)."""
        n = self.num_agents
        if mask is None and self.has_action_mask:  # a step without masks after steps with them: all valid
            mask = np.ones((n, self.spec.action_dim), dtype=bool)
        if mask is not None and not mask.any(1).all():
            bad = [self.agents[i] for i in np.flatnonzero(~mask.any(1))]
            raise ValueError(f"agents {bad} have no valid action in this step's action_mask")
        data = Data(x=torch.from_numpy(x))
        if self._static_pos is not None:
            data.pos = self._static_pos
        elif self.position_fn is not None:
            data.pos = torch.as_tensor(np.asarray(self.position_fn(self.env)), dtype=torch.float32)
            if self._static:
                self._static_pos = data.pos
        data.edge_index = self.graph(getattr(data, "pos", None))
        if mask is not None:
            self.has_action_mask = True
            data.action_mask = torch.from_numpy(mask)
        if self.agent_type is not None:
            data.agent_type = self.agent_type
        return data

    def _array_action(self, action: Tensor) -> np.ndarray:
        """The joint action as the environment takes it: ``[N]`` int64 indices, or ``[N, D]`` scaled from
        ``[-1, 1]`` to each agent's bounds."""
        if self.spec.discrete:
            return action.long().cpu().numpy()
        act = action.detach().cpu().float().clamp(-1.0, 1.0)
        return (self._act_low + (act + 1.0) * 0.5 * (self._act_high - self._act_low)).numpy()

    def _env_action(self, action: Tensor) -> dict[str, Any]:
        live = set(getattr(self.env, "agents", self.agents))
        acts = self._array_action(action)
        if self.spec.discrete:
            return {a: int(acts[i]) for i, a in enumerate(self.agents) if a in live}
        return {a: acts[i] for i, a in enumerate(self.agents) if a in live}

    def _masked(self, mask: np.ndarray | None) -> np.ndarray | None:
        """An array environment's action mask, narrowed by the agents' own action spaces."""
        if self._space_mask is None:
            return mask
        return self._space_mask.copy() if mask is None else mask & self._space_mask

    # ----------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Data:
        if self._arrays:
            data = self._data(*self._array_obs(*self.env.reset_arrays(seed)))
        else:
            obs, infos = self.env.reset(seed=seed)
            data = self._to_data(obs, infos)
        if seed is not None:
            for i, a in enumerate(self.agents):
                self.env.action_space(a).seed(seed + i)
        self._ep = {"episode_return": 0.0, "episode_length": 0}
        self._metric_sums: dict[str, float] = {}
        return data

    def _array_obs(self, x: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(x, np.float32)
        if x.shape[1] < self.spec.obs_dim:
            x = np.pad(x, ((0, 0), (0, self.spec.obs_dim - x.shape[1])))
        return x, self._masked(None if mask is None else np.array(mask, bool))  # a copy: steps never share one

    def step(self, action: Tensor) -> StepResult:
        """Advance one step with the joint action (``[N]`` long, or ``[N, D]`` in ``[-1, 1]``)."""
        n = self.num_agents
        if self._arrays:  # the environment's array protocol: no per-agent dictionaries
            x, rew, term, trunc, mask = self.env.step_arrays(self._array_action(action))
            term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
            rew = np.asarray(rew, np.float64)
            reward = torch.from_numpy(rew.astype(np.float32))
            terminated, truncated = torch.from_numpy(term), torch.from_numpy(trunc)
            done = bool((term | trunc).all()) or not self.env.agents
            obs_data, infos = self._data(*self._array_obs(x, mask)), {}
        else:
            obs, rew, term, trunc, infos = self.env.step(self._env_action(action))
            reward = torch.tensor([float(rew.get(a, 0.0)) for a in self.agents], dtype=torch.float32)
            gone = [a not in obs for a in self.agents]
            terminated = torch.tensor([bool(term.get(a, g)) for a, g in zip(self.agents, gone)])
            truncated = torch.tensor([bool(trunc.get(a, False)) for a in self.agents])
            done = bool((terminated | truncated).all()) or not self.env.agents
            obs_data = self._to_data(obs, infos)
        self._ep["episode_return"] += float(reward.sum())
        self._ep["episode_length"] += 1
        if self.metrics_fn is not None:
            for k, v in self.metrics_fn(self.env).items():
                self._metric_sums[k] = self._metric_sums.get(k, 0.0) + float(v)
        episode = None
        if done:
            length = self._ep["episode_length"]
            episode = {**self._ep, "episode_return_per_agent": self._ep["episode_return"] / n}
            episode.update({k: v / length for k, v in self._metric_sums.items()})
            if self.episode_metrics_fn is not None:
                episode.update(self.episode_metrics_fn(self.env))
        return StepResult(obs_data, reward, terminated, truncated, done, episode, infos)

    def reference_policies(self) -> dict[str, Callable]:
        """``{name: obs -> action}``: the task's reference controllers (empty for most tasks)."""
        return {} if self._reference_policies_fn is None else self._reference_policies_fn(self.env)

    def random_action(self, obs: Data) -> Tensor:
        """A uniformly random valid joint action (for warm-up and baselines), using torch's RNG."""
        return uniform_random_action(self.num_agents, self.spec, getattr(obs, "action_mask", None))

    def close(self) -> None:
        self.env.close()
