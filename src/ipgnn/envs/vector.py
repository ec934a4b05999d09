"""Batched tasks as graph environments: ``B`` environments stepped together, one PyG ``Batch`` a step.

A *batched task* keeps the state of ``B`` environments in tensors and steps them all at once (the
tensor MPE scenarios of :mod:`ipgnn.envs.mpe_tensor`). :class:`TensorGraphEnv` gives it the interface
the trainer uses for every task (``spec``, ``graph``, ``reset``, ``step``, ``random_action``), with
``num_envs = B``: observations are a ``Batch`` of ``B`` graphs of ``N`` agents (node ``b * N + i``),
actions are ``[B * N]`` (or ``[B * N, D]``), and the communication graph of all ``B`` environments is
built in one batched call on the same tensors (:meth:`ipgnn.graphs.GraphBuilder.batched`).

Episodes of a batched task have a fixed horizon and end together (``truncated`` at ``max_steps`` in
every environment); a task whose environments could end at different times is refused at the step
where it happens.

Metric definitions are those of :mod:`ipgnn.envs.pettingzoo`, computed per environment and then
averaged over the ``B`` environments: ``episode_return`` is the mean over environments of
:math:`\\sum_t \\sum_i r_i^t`.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torch_geometric.data import Batch

from ipgnn.config import GraphConfig
from ipgnn.envs.pettingzoo import StepResult
from ipgnn.graphs import GraphBuilder
from ipgnn.spec import AgentSpec


class BatchedTask(Protocol):
    """What a batched task provides (see :class:`ipgnn.envs.mpe_tensor.scenarios.TensorMPEScenario`).

    A task may also provide ``agent_sq_distances() -> [B, N, N]`` (squared distances between its
    agents at the current state, ``inf`` on the diagonal): the k-NN graph is then selected from that
    tensor instead of being computed again from ``positions()``.
    """

    num_envs: int
    num_agents: int
    obs_dim: int
    discrete: bool
    action_dim: int
    max_steps: int
    agent_type: Tensor | None

    def reset(self, seed: int | None = None) -> Tensor: ...  # [B, N, obs_dim]

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...  # obs, reward, term, trunc

    def positions(self) -> Tensor: ...  # [B, N, d]

    def metrics(self) -> dict[str, Tensor]: ...  # name -> [B]


class TensorGraphEnv:
    """A :class:`BatchedTask` as a graph environment of ``num_envs`` environments.

    Args:
        task: the batched task.
        graph: the ``env.graph`` section (``knn`` over positions, or ``full``).
        device: where observations are returned (the task's own device by default).
    """

    def __init__(self, task: BatchedTask, graph: GraphConfig, device: torch.device | None = None):
        if graph.kind == "env":
            raise ValueError("env.graph.kind 'env': this task has no graph of its own; use 'knn' or 'full'")
        self.task = task
        self.num_envs = int(task.num_envs)
        self.num_agents = int(task.num_agents)
        self.agent_type = task.agent_type.cpu().long() if task.agent_type is not None else None
        num_types = 1 if self.agent_type is None else int(self.agent_type.max()) + 1
        self.spec = AgentSpec(int(task.obs_dim), int(task.action_dim), bool(task.discrete), num_types)
        self.graph = GraphBuilder(graph, self.num_agents)
        self.has_action_mask = False
        self.device = device
        b, n = self.num_envs, self.num_agents
        self._batch_vec = torch.arange(b).repeat_interleave(n)
        self._ptr = torch.arange(b + 1) * n
        self._ep_return = torch.zeros(b)
        self._length = 0
        self._metric_sums: dict[str, Tensor] = {}

    def _to_batch(self, obs: Tensor) -> Batch:
        b, n = self.num_envs, self.num_agents
        pos = self.task.positions()
        if self.graph.is_static:
            edge_index = self.graph.batched(b)
        else:  # the k-NN graph from the squared distances the task computed for this state, if it has them
            sq_dist = getattr(self.task, "agent_sq_distances", None)
            edge_index = self.graph.batched(b, pos, None if sq_dist is None else sq_dist())
        out = Batch(
            x=obs.reshape(b * n, -1).float(),
            edge_index=edge_index,
            pos=pos.reshape(b * n, -1).float(),
            batch=self._batch_vec.to(obs.device),
            ptr=self._ptr.to(obs.device),
        )
        if self.agent_type is not None:
            out.agent_type = self.agent_type.to(obs.device).repeat(b)
        return out.to(self.device) if self.device is not None else out

    def reset(self, seed: int | None = None) -> Batch:
        obs = self.task.reset(seed=seed)
        self._ep_return = torch.zeros(self.num_envs, dtype=torch.float64)
        self._length = 0
        self._metric_sums = {}
        return self._to_batch(obs)

    def step(self, action: Tensor) -> StepResult:
        """Advance all ``B`` environments with the joint action of every agent of every environment."""
        b, n = self.num_envs, self.num_agents
        a = action.reshape(b, n) if self.spec.discrete else action.reshape(b, n, -1).clamp(-1.0, 1.0)
        obs, reward, terminated, truncated = self.task.step(a)
        ended = (terminated | truncated).all(1)  # [B]
        if ended.any() and not ended.all():
            raise RuntimeError(
                f"environments {ended.nonzero().flatten().tolist()} ended before the others; "
                "a batched task must end its episodes together (a fixed horizon)"
            )
        self._ep_return += reward.sum(1).double().cpu()
        self._length += 1
        for k, v in self.task.metrics().items():
            self._metric_sums[k] = self._metric_sums.get(k, 0.0) + v.double().cpu()
        done = bool(ended.all())
        episode = None
        if done:
            ret = float(self._ep_return.mean())
            episode = {"episode_return": ret, "episode_length": self._length, "episode_return_per_agent": ret / n}
            episode.update({k: float(v.mean()) / self._length for k, v in self._metric_sums.items()})
        return StepResult(
            self._to_batch(obs),
            reward.reshape(-1).float().cpu(),
            terminated.reshape(-1).cpu(),
            truncated.reshape(-1).cpu(),
            done,
            episode,
        )

    def random_action(self, obs: Batch) -> Tensor:
        """Uniformly random actions for every agent of every environment, from torch's RNG."""
        m = self.num_envs * self.num_agents
        if self.spec.discrete:
            return torch.randint(self.spec.action_dim, (m,))
        return torch.rand(m, self.spec.action_dim) * 2.0 - 1.0

    def close(self) -> None:
        close = getattr(self.task, "close", None)
        if close is not None:
            close()
