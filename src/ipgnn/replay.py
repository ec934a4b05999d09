"""Replay buffer of graph transitions, in preallocated tensors.

One transition is one environment step of all ``N`` agents: ``(s, a, r, terminated, s')`` where ``s``
and ``s'`` are graphs (observations ``[N, obs_dim]`` and an ``edge_index`` that may change every step,
e.g. k-NN over moving agents). Storage is one preallocated tensor per field with a leading capacity
dimension: no Python object per step.

**Observations are stored once.** A step's graph (its observations, edges and action masks: a
*frame*) is written to a ring of frames, and a transition holds the indices of its two frames. The
``s'`` of one step is the ``s`` of the next, so within an episode each step adds one frame, not two;
only the first step of an episode adds its ``s`` as well. With episodes of ``T`` steps, ``C``
transitions need ``C (1 + 1/T)`` frames instead of ``2C``; the frame ring is sized for
``episode_length`` (the task's horizon), and if episodes are shorter the oldest transitions leave
earlier. (Sharing is recognised by identity: ``obs`` of a call is the ``next_obs`` object of the
previous call, as the trainer passes them.)

**Compact and exact.** Edge lists are padded to the largest graph the task can produce and stored as
int16 local indices when ``N`` allows, with the edge count per frame; a static graph is stored once.
Tasks whose observations are integers (traffic: counts and one-hot phases) can store them as
``obs_dtype=torch.int16``, exactly (checked on every write).

:meth:`GraphReplayBuffer.sample` draws indices with its own seeded ``torch.Generator`` and assembles
one PyG :class:`~torch_geometric.data.Batch` per side with vectorised index offsets (no
``Batch.from_data_list``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


def frame_capacity(capacity: int, episode_length: int | None, step_width: int = 1) -> int:
    """Frames needed for ``capacity`` transitions of episodes of ``episode_length`` steps, written
    ``step_width`` at a time (``2 * capacity`` when the episode length is unknown)."""
    if not episode_length:
        return 2 * capacity + 2 * step_width
    return capacity + math.ceil(capacity / episode_length) * step_width + 2 * step_width


class GraphReplayBuffer:
    """A ring buffer of graph transitions whose observations are stored once (see the module docstring).

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
        obs_dtype: storage type of observations: ``float32``, or ``int16`` for integer observations.
        episode_length: the task's horizon (sizes the frame ring; ``None``: two frames per transition).
        step_width: transitions added per call (environments stepped together).
    """

    def __init__(
        self,
        capacity: int,
        num_agents: int,
        obs_dim: int,
        action_dim: int,
        discrete: bool,
        max_edges: int,
        static_edges: Tensor | None = None,
        has_action_mask: bool = False,
        agent_type: Tensor | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        obs_dtype: torch.dtype = torch.float32,
        episode_length: int | None = None,
        step_width: int = 1,
    ):
        if obs_dtype not in (torch.float32, torch.int16):
            raise ValueError(f"obs_dtype must be torch.float32 or torch.int16, got {obs_dtype}")
        self.capacity = int(capacity)
        self.num_agents = int(num_agents)
        self.obs_dim = int(obs_dim)
        self.discrete = discrete
        self.max_edges = int(max_edges)
        self.device = torch.device(device)
        self.obs_dtype = obs_dtype
        self.episode_length, self.step_width = episode_length, int(step_width)
        self.frames = frame_capacity(self.capacity, episode_length, self.step_width)
        self.index_dtype = torch.int16 if num_agents <= torch.iinfo(torch.int16).max else torch.int32
        c, f, n = self.capacity, self.frames, self.num_agents
        # torch.empty: slots are written before they can be sampled, and untouched pages cost no RAM,
        # so a 10^6-transition buffer grows with use instead of being zero-filled up front
        kw = dict(device=self.device)
        self.x = torch.empty(f, n, obs_dim, dtype=obs_dtype, **kw)  # frames
        self.static_edges = None if static_edges is None else static_edges.to(self.device, torch.long)
        if self.static_edges is None:
            self.edges = torch.empty(f, 2, self.max_edges, dtype=self.index_dtype, **kw)
            self.num_edges = torch.empty(f, dtype=torch.int32, **kw)
        self.action_mask = torch.empty(f, n, action_dim, dtype=torch.bool, **kw) if has_action_mask else None
        if discrete:
            act_dtype = torch.int16 if action_dim <= torch.iinfo(torch.int16).max else torch.int32
            self.action = torch.empty(c, n, dtype=act_dtype, **kw)
        else:
            self.action = torch.empty(c, n, action_dim, dtype=torch.float32, **kw)
        self.reward = torch.empty(c, n, dtype=torch.float32, **kw)
        self.terminated = torch.empty(c, n, dtype=torch.bool, **kw)
        self.cur = torch.empty(c, dtype=torch.int64, **kw)  # global frame ids of s and s'
        self.nxt = torch.empty(c, dtype=torch.int64, **kw)
        self.agent_type = None if agent_type is None else agent_type.to(self.device, torch.long)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.added = 0  # transitions ever added (global id of the next one)
        self.start = 0  # global id of the oldest transition still held
        self.frames_written = 0
        self._last_next: Any | None = None  # the previous call's next_obs, and its frame ids
        self._last_next_ids: Tensor | None = None

    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def bytes_for(
        capacity: int,
        num_agents: int,
        obs_dim: int,
        action_dim: int,
        discrete: bool,
        max_edges: int,
        static_graph: bool,
        has_action_mask: bool,
        obs_dtype: torch.dtype = torch.float32,
        episode_length: int | None = None,
        step_width: int = 1,
    ) -> int:
        """Bytes the buffer will allocate (computed before allocating, to warn or refuse early)."""
        idx = 2 if num_agents <= 32767 else 4
        frame = num_agents * obs_dim * (2 if obs_dtype == torch.int16 else 4)
        if not static_graph:
            frame += 2 * max_edges * idx + 4
        if has_action_mask:
            frame += num_agents * action_dim
        per = num_agents * (2 if discrete else 4 * action_dim)  # action
        per += num_agents * 4 + num_agents + 16  # reward, terminated, frame ids
        return per * capacity + frame * frame_capacity(capacity, episode_length, step_width)

    @staticmethod
    def capacity_for(budget: int, **sizing: Any) -> int:
        """The most transitions whose buffer (:meth:`bytes_for`, with the same ``sizing``) takes at most ``budget``
        bytes; 0 when not even one transition fits."""
        per = max(1, (GraphReplayBuffer.bytes_for(10_000, **sizing) + 9_999) // 10_000)
        capacity = budget // per
        while capacity > 0 and GraphReplayBuffer.bytes_for(capacity, **sizing) > budget:
            capacity = int(capacity * 0.99)
        return capacity

    @property
    def bytes_per_transition(self) -> int:
        return self.nbytes // self.capacity

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._storage().values())

    @property
    def size(self) -> int:
        return self.added - self.start

    @property
    def pos(self) -> int:
        """The slot the next transition goes to."""
        return self.added % self.capacity

    def __len__(self) -> int:
        return self.size

    def _frame_storage(self) -> dict[str, Tensor]:
        out = {"x": self.x}
        if self.static_edges is None:
            out |= {"edges": self.edges, "num_edges": self.num_edges}
        if self.action_mask is not None:
            out["action_mask"] = self.action_mask
        return out

    def _transition_storage(self) -> dict[str, Tensor]:
        return {
            "action": self.action,
            "reward": self.reward,
            "terminated": self.terminated,
            "cur": self.cur,
            "nxt": self.nxt,
        }

    def _storage(self) -> dict[str, Tensor]:
        return self._frame_storage() | self._transition_storage()

    # ----------------------------------------------------------------------------------------------
    def add(
        self, obs: Data | Batch, action: Tensor, reward: Tensor, terminated: Tensor, next_obs: Data | Batch
    ) -> None:
        """Store one step of all agents: one graph (``Data``), or ``B`` environments' graphs at once
        (a ``Batch`` of ``B`` graphs of ``N`` agents, node ``b * N + i``) as ``B`` transitions."""
        n = self.num_agents
        b = int(obs.num_graphs) if isinstance(obs, Batch) else 1
        if b > self.capacity:
            raise ValueError(f"{b} transitions at once exceed the buffer's capacity {self.capacity}")
        if self.action_mask is None and getattr(obs, "action_mask", None) is not None:
            raise ValueError(
                "the task reported action masks only after the first reset, and the replay buffer "
                "was built without them; a task with masks must report them from reset on"
            )
        if obs is self._last_next and self._last_next_ids is not None and self._last_next_ids.numel() == b:
            cur = self._last_next_ids  # s of this step is s' of the previous one: already stored
        else:
            cur = self._write_frames(obs, b)
        nxt = self._write_frames(next_obs, b)
        slots = (self.added + torch.arange(b, device=self.device)) % self.capacity
        self.action[slots] = action.reshape(b, *self.action.shape[1:]).to(self.device, self.action.dtype)
        self.reward[slots] = reward.reshape(b, n).to(self.device)
        self.terminated[slots] = terminated.reshape(b, n).to(self.device)
        self.cur[slots], self.nxt[slots] = cur, nxt
        self.added += b
        self._last_next, self._last_next_ids = next_obs, nxt
        # the oldest transitions leave when their slot is reused or their first frame was overwritten
        self.start = max(self.start, self.added - self.capacity)
        oldest_frame = self.frames_written - self.frames
        while self.start < self.added and int(self.cur[self.start % self.capacity]) < oldest_frame:
            self.start += 1

    def _write_frames(self, g: Data | Batch, b: int) -> Tensor:
        """Write ``b`` graphs as frames; returns their global frame ids."""
        ids = self.frames_written + torch.arange(b, device=self.device)
        f = ids % self.frames
        x = g.x.reshape(b, self.num_agents, -1).to(self.device)
        if self.obs_dtype == torch.int16:
            xi = x.round()
            if not torch.equal(xi, x) or (xi.abs() > torch.iinfo(torch.int16).max).any():
                raise ValueError(
                    "replay: this task declared integer observations (stored as int16), but an "
                    "observation is not an integer in [-32767, 32767]; store them as float32"
                )
            x = xi
        self.x[f] = x.to(self.obs_dtype)
        if self.static_edges is None:
            self._write_edges(f, self.edges, self.num_edges, g.edge_index.to(self.device), b)
        if self.action_mask is not None:
            self.action_mask[f] = g.action_mask.reshape(b, self.num_agents, -1).to(self.device)
        self.frames_written += b
        return ids

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

    def _edge_index(self, edges: Tensor | None, counts: Tensor | None, b: int) -> Tensor:
        """Concatenate ``b`` graphs' edges with node offsets ``k * N``, vectorised."""
        n = self.num_agents
        offsets = torch.arange(b, device=self.device) * n
        if edges is None:  # static graph
            e = self.static_edges
            return (e.unsqueeze(0) + offsets.view(b, 1, 1)).permute(1, 0, 2).reshape(2, -1)
        e = edges.long() + offsets.view(b, 1, 1)  # [b, 2, E_max]
        valid = torch.arange(self.max_edges, device=self.device).unsqueeze(0) < counts.unsqueeze(1)  # [b, E_max]
        return e.permute(1, 0, 2)[:, valid]

    def sample(self, batch_size: int, device: torch.device | None = None) -> TransitionBatch:
        """Uniformly sample ``batch_size`` transitions (with replacement) and assemble PyG batches."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        gid = self.start + torch.randint(self.size, (batch_size,), generator=self.generator)
        return self.gather(gid % self.capacity, device)

    def gather(self, idx: Tensor, device: torch.device | None = None) -> TransitionBatch:
        """Assemble the transitions at slots ``idx`` into a :class:`TransitionBatch`."""
        idx = idx.to(self.device)
        b, n = idx.numel(), self.num_agents
        batch_vec = torch.arange(b, device=self.device).repeat_interleave(n)
        ptr = torch.arange(b + 1, device=self.device) * n
        extra: dict[str, Any] = {}
        if self.agent_type is not None:
            extra["agent_type"] = self.agent_type.repeat(b)
        sides = []
        for frame in (self.cur[idx] % self.frames, self.nxt[idx] % self.frames):
            dynamic = self.static_edges is None
            ei = self._edge_index(self.edges[frame] if dynamic else None, self.num_edges[frame] if dynamic else None, b)
            g = Batch(x=self.x[frame].reshape(b * n, -1).float(), edge_index=ei, batch=batch_vec, ptr=ptr, **extra)
            if self.action_mask is not None:
                g.action_mask = self.action_mask[frame].reshape(b * n, -1)
            sides.append(g)
        action = self.action[idx].reshape(b * n, *self.action.shape[2:])
        out = TransitionBatch(
            sides[0],
            sides[1],
            action.long() if self.discrete else action,
            self.reward[idx].reshape(-1),
            self.terminated[idx].reshape(-1).float(),
        )
        if device is not None and torch.device(device) != self.device:
            out = TransitionBatch(
                out.obs.to(device),
                out.next_obs.to(device),
                out.action.to(device),
                out.reward.to(device),
                out.terminated.to(device),
            )
        return out

    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The written slots and frames (as laid out, so sampling after a resume is identical), the
        counters and the sampler."""
        t_used, f_used = min(self.added, self.capacity), min(self.frames_written, self.frames)
        # clone: torch.save writes a view's whole storage, i.e. the full preallocated buffer
        data = {k: v[:t_used].clone().cpu() for k, v in self._transition_storage().items()}
        data |= {k: v[:f_used].clone().cpu() for k, v in self._frame_storage().items()}
        return {
            "format": 2,
            "data": data,
            "added": self.added,
            "start": self.start,
            "frames_written": self.frames_written,
            "capacity": self.capacity,
            "frames": self.frames,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved buffer. With the same sizes the layout is kept as saved (a resumed run
        samples exactly what the uninterrupted one would); with other sizes (a run extended by
        ``--train.total_steps``) the transitions are laid out oldest first and the newest that fit
        are kept, so no unwritten slot is ever sampled."""
        if state.get("format") != 2:
            raise ValueError(
                "this replay checkpoint was written by an older ipgnn (observations stored twice); "
                "resume without replay.pt (the buffer refills) or with the version that wrote it"
            )
        data = state["data"]
        self.generator.set_state(state["generator"])
        self._last_next, self._last_next_ids = None, None
        if int(state["capacity"]) == self.capacity and int(state["frames"]) == self.frames:
            for k, v in data.items():
                getattr(self, k)[: v.shape[0]] = v.to(self.device)
            self.added, self.start = int(state["added"]), int(state["start"])
            self.frames_written = int(state["frames_written"])
            return
        old_c, old_f = int(state["capacity"]), int(state["frames"])
        slots = torch.arange(int(state["start"]), int(state["added"])) % old_c
        k = slots.numel()
        if k == 0:
            self.added = self.start = self.frames_written = 0
            return
        uniq, inv = torch.unique(torch.cat([data["cur"][slots], data["nxt"][slots]]), return_inverse=True)
        cur, nxt = inv[:k], inv[k:]
        fits = (k - torch.arange(k) <= self.capacity) & (uniq.numel() - cur <= self.frames - 2 * self.step_width)
        i0 = int(fits.int().argmax())  # the oldest transition from which the rest fit
        base = int(cur[i0])
        keep = uniq[base:] % old_f
        for name, t in self._frame_storage().items():
            t[: keep.numel()] = data[name][keep].to(self.device)
        kept = slots[i0:]
        for name in ("action", "reward", "terminated"):
            getattr(self, name)[: kept.numel()] = data[name][kept].to(self.device)
        self.cur[: kept.numel()] = (cur[i0:] - base).to(self.device)
        self.nxt[: kept.numel()] = (nxt[i0:] - base).to(self.device)
        self.added, self.start, self.frames_written = kept.numel(), 0, keep.numel()
