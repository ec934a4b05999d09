"""Replay buffer of graph transitions, in preallocated tensors.

One transition is one environment step of all ``N`` agents: ``(s, a, r, terminated, s')`` where ``s``
and ``s'`` are graphs (observations ``[N, obs_dim]`` and an ``edge_index`` that may change every step,
e.g. k-NN over moving agents). Storage is one preallocated tensor per field with a leading capacity
dimension: no Python object per step. Edge lists are padded to the largest graph the task can produce
and stored as int16 local indices when ``N`` allows, with the edge count per step; a static graph is
stored once.

:meth:`GraphReplayBuffer.sample` draws indices with its own seeded ``torch.Generator`` and assembles
one PyG :class:`~torch_geometric.data.Batch` per side with vectorised index offsets (no
``Batch.from_data_list``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data


@dataclass
class TransitionBatch:
    """A minibatch of ``B`` steps of ``N`` agents, flattened to ``B*N`` nodes.

    ``obs``/``next_obs`` are PyG batches (``x``, ``edge_index``, ``batch``, ``ptr`` and, when the task
    has them, ``action_mask`` and ``agent_type``); ``action`` is ``[B*N]`` (long) or ``[B*N, D]``;
    ``reward`` and ``terminated`` are ``[B*N]`` floats.
    """

    obs: Batch
    next_obs: Batch
    action: Tensor
    reward: Tensor
    terminated: Tensor

    @property
    def num_graphs(self) -> int:
        return self.obs.num_graphs


class GraphReplayBuffer:
    """A ring buffer of graph transitions.

    Args:
        capacity: number of transitions (steps of all agents).
        num_agents: ``N``.
        obs_dim: per-agent observation size.
        action_dim: number of discrete actions or size of a continuous action.
        discrete: action kind.
        max_edges: the largest ``edge_index`` one step can have.
        static_edges: the graph, when it never changes (stored once).
        has_action_mask: store per-step ``action_mask`` ``[N, A]``.
        agent_type: ``[N]`` agent types (static), attached to every sampled batch.
        seed: seed of the sampler's generator.
        device: where storage lives (sampled batches are moved by the caller).
    """

    def __init__(self, capacity: int, num_agents: int, obs_dim: int, action_dim: int, discrete: bool,
                 max_edges: int, static_edges: Optional[Tensor] = None, has_action_mask: bool = False,
                 agent_type: Optional[Tensor] = None, seed: int = 0, device: str | torch.device = "cpu"):
        self.capacity = int(capacity)
        self.num_agents = int(num_agents)
        self.obs_dim = int(obs_dim)
        self.discrete = discrete
        self.max_edges = int(max_edges)
        self.device = torch.device(device)
        self.index_dtype = torch.int16 if num_agents <= torch.iinfo(torch.int16).max else torch.int32
        c, n = self.capacity, self.num_agents
        # torch.empty: slots are written before they can be sampled, and untouched pages cost no RAM,
        # so a 10^6-transition buffer grows with use instead of being zero-filled up front
        kw = dict(device=self.device)
        self.x = torch.empty(c, n, obs_dim, dtype=torch.float32, **kw)
        self.next_x = torch.empty(c, n, obs_dim, dtype=torch.float32, **kw)
        if discrete:
            act_dtype = torch.int16 if action_dim <= torch.iinfo(torch.int16).max else torch.int32
            self.action = torch.empty(c, n, dtype=act_dtype, **kw)
        else:
            self.action = torch.empty(c, n, action_dim, dtype=torch.float32, **kw)
        self.reward = torch.empty(c, n, dtype=torch.float32, **kw)
        self.terminated = torch.empty(c, n, dtype=torch.bool, **kw)
        self.static_edges = None if static_edges is None else static_edges.to(self.device, torch.long)
        if self.static_edges is None:
            self.edges = torch.empty(c, 2, self.max_edges, dtype=self.index_dtype, **kw)
            self.next_edges = torch.empty(c, 2, self.max_edges, dtype=self.index_dtype, **kw)
            self.num_edges = torch.empty(c, dtype=torch.int32, **kw)
            self.next_num_edges = torch.empty(c, dtype=torch.int32, **kw)
        self.action_mask = torch.empty(c, n, action_dim, dtype=torch.bool, **kw) if has_action_mask else None
        # the next state's masks too: a Q-learning target maximises over the actions valid in s'
        self.next_action_mask = torch.empty(c, n, action_dim, dtype=torch.bool, **kw) if has_action_mask else None
        self.agent_type = None if agent_type is None else agent_type.to(self.device, torch.long)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.pos = 0
        self.size = 0

    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def bytes_for(capacity: int, num_agents: int, obs_dim: int, action_dim: int, discrete: bool,
                  max_edges: int, static_graph: bool, has_action_mask: bool) -> int:
        """Bytes the buffer will allocate (computed before allocating, to warn or refuse early)."""
        idx = 2 if num_agents <= 32767 else 4
        per = 2 * num_agents * obs_dim * 4  # x and next_x
        per += num_agents * (2 if discrete else 4 * action_dim)
        per += num_agents * 4 + num_agents  # reward, terminated
        if not static_graph:
            per += 2 * (2 * max_edges * idx + 4)
        if has_action_mask:
            per += 2 * num_agents * action_dim
        return per * capacity

    @property
    def bytes_per_transition(self) -> int:
        return self.nbytes // self.capacity

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._storage().values())

    def __len__(self) -> int:
        return self.size

    def _storage(self) -> dict[str, Tensor]:
        names = ["x", "next_x", "action", "reward", "terminated"]
        if self.static_edges is None:
            names += ["edges", "next_edges", "num_edges", "next_num_edges"]
        if self.action_mask is not None:
            names += ["action_mask", "next_action_mask"]
        return {k: getattr(self, k) for k in names}

    # ----------------------------------------------------------------------------------------------
    def add(self, obs: Data | Batch, action: Tensor, reward: Tensor, terminated: Tensor,
            next_obs: Data | Batch) -> None:
        """Store one step of all agents: one graph (``Data``), or ``B`` environments' graphs at once
        (a ``Batch`` of ``B`` graphs of ``N`` agents, node ``b * N + i``) into ``B`` consecutive slots."""
        n = self.num_agents
        b = int(obs.num_graphs) if isinstance(obs, Batch) else 1
        if b > self.capacity:
            raise ValueError(f"{b} transitions at once exceed the buffer's capacity {self.capacity}")
        idx = (self.pos + torch.arange(b, device=self.device)) % self.capacity
        self.x[idx] = obs.x.reshape(b, n, -1).to(self.device)
        self.next_x[idx] = next_obs.x.reshape(b, n, -1).to(self.device)
        self.action[idx] = action.reshape(b, *self.action.shape[1:]).to(self.device, self.action.dtype)
        self.reward[idx] = reward.reshape(b, n).to(self.device)
        self.terminated[idx] = terminated.reshape(b, n).to(self.device)
        if self.static_edges is None:
            for name, cnt, graph in (("edges", "num_edges", obs), ("next_edges", "next_num_edges", next_obs)):
                self._write_edges(idx, getattr(self, name), getattr(self, cnt), graph.edge_index.to(self.device), b)
        if self.action_mask is not None:
            self.action_mask[idx] = obs.action_mask.reshape(b, n, -1).to(self.device)
            self.next_action_mask[idx] = next_obs.action_mask.reshape(b, n, -1).to(self.device)
        elif getattr(obs, "action_mask", None) is not None:
            raise ValueError("the task reported action masks only after the first reset, and the replay buffer "
                             "was built without them; a task with masks must report them from reset on")
        self.pos = (self.pos + b) % self.capacity
        self.size = min(self.size + b, self.capacity)

    def _write_edges(self, idx: Tensor, store: Tensor, counts: Tensor, edge_index: Tensor, b: int) -> None:
        """Scatter the edges of ``b`` stacked graphs into their slots as local indices, vectorised."""
        n = self.num_agents
        graph = torch.div(edge_index[1], n, rounding_mode="floor")  # which graph each edge belongs to
        cnt = torch.bincount(graph, minlength=b)
        if int(cnt.max()) > self.max_edges:
            raise ValueError(f"a graph with {int(cnt.max())} edges exceeds the buffer's max_edges={self.max_edges}")
        order = torch.argsort(graph, stable=True)
        graph, local = graph[order], edge_index[:, order] - graph[order] * n
        start = torch.cumsum(cnt, 0) - cnt
        slot = torch.arange(graph.numel(), device=self.device) - start[graph]
        store[idx[graph], :, slot] = local.t().to(store.dtype)
        counts[idx] = cnt.to(counts.dtype)

    def _edge_index(self, edges: Optional[Tensor], counts: Optional[Tensor], b: int) -> Tensor:
        """Concatenate ``b`` graphs' edges with node offsets ``k * N``, vectorised."""
        n = self.num_agents
        offsets = torch.arange(b, device=self.device) * n
        if edges is None:  # static graph
            e = self.static_edges
            return (e.unsqueeze(0) + offsets.view(b, 1, 1)).permute(1, 0, 2).reshape(2, -1)
        e = edges.long() + offsets.view(b, 1, 1)  # [b, 2, E_max]
        valid = torch.arange(self.max_edges, device=self.device).unsqueeze(0) < counts.unsqueeze(1)  # [b, E_max]
        return e.permute(1, 0, 2)[:, valid]

    def sample(self, batch_size: int, device: Optional[torch.device] = None) -> TransitionBatch:
        """Uniformly sample ``batch_size`` transitions (with replacement) and assemble PyG batches."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(self.size, (batch_size,), generator=self.generator)
        return self.gather(idx, device)

    def gather(self, idx: Tensor, device: Optional[torch.device] = None) -> TransitionBatch:
        """Assemble the transitions at slots ``idx`` into a :class:`TransitionBatch`."""
        idx = idx.to(self.device)
        b, n = idx.numel(), self.num_agents
        batch_vec = torch.arange(b, device=self.device).repeat_interleave(n)
        ptr = torch.arange(b + 1, device=self.device) * n
        dynamic = self.static_edges is None
        ei = self._edge_index(self.edges[idx] if dynamic else None, self.num_edges[idx] if dynamic else None, b)
        nei = self._edge_index(self.next_edges[idx] if dynamic else None,
                               self.next_num_edges[idx] if dynamic else None, b)
        extra: dict[str, Any] = {}
        if self.agent_type is not None:
            extra["agent_type"] = self.agent_type.repeat(b)
        obs = Batch(x=self.x[idx].reshape(b * n, -1), edge_index=ei, batch=batch_vec, ptr=ptr, **extra)
        next_obs = Batch(x=self.next_x[idx].reshape(b * n, -1), edge_index=nei, batch=batch_vec, ptr=ptr, **extra)
        if self.action_mask is not None:
            obs.action_mask = self.action_mask[idx].reshape(b * n, -1)
            next_obs.action_mask = self.next_action_mask[idx].reshape(b * n, -1)
        action = self.action[idx].reshape(b * n, *self.action.shape[2:])
        out = TransitionBatch(obs, next_obs, action.long() if self.discrete else action,
                              self.reward[idx].reshape(-1), self.terminated[idx].reshape(-1).float())
        if device is not None and torch.device(device) != self.device:
            out = TransitionBatch(out.obs.to(device), out.next_obs.to(device), out.action.to(device),
                                  out.reward.to(device), out.terminated.to(device))
        return out

    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The filled slots (as laid out, so sampling after a resume is identical) and the sampler."""
        # clone: torch.save writes a view's whole storage, i.e. the full preallocated buffer
        data = {k: v[: self.size].clone().cpu() for k, v in self._storage().items()}
        return {"data": data, "size": self.size, "pos": self.pos, "capacity": self.capacity,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved buffer. With the same capacity the layout is kept as saved (a resumed run
        samples exactly what the uninterrupted one would); with another capacity (a run extended by
        ``--train.total_steps``) the transitions are laid out oldest first and the newest that fit
        are kept, so no unwritten slot is ever sampled."""
        size, pos = int(state["size"]), int(state["pos"])
        data = state["data"]
        if int(state.get("capacity", self.capacity)) != self.capacity:
            order = (torch.arange(size) + (pos if size and pos < size else 0)) % max(size, 1)
            keep = order[-self.capacity:] if size > self.capacity else order
            data = {k: v[keep] for k, v in data.items()}
            size = int(keep.numel())
            pos = size % self.capacity
        if self.next_action_mask is not None and "next_action_mask" not in data and "action_mask" in data:
            raise ValueError("this replay checkpoint predates stored next-state action masks; resume without "
                             "replay.pt (the buffer refills) or with the ipgnn version that wrote it")
        for k, v in data.items():
            getattr(self, k)[:size] = v.to(self.device)
        self.size, self.pos = size, pos
        self.generator.set_state(state["generator"])
