"""The paper's four MPE tasks (app. A.2) as batched tensor scenarios over ``B`` parallel worlds.

Every scenario steps ``B`` worlds of ``N`` learning agents with :class:`~.physics.TensorWorld`
(``mpe2``'s physics) and computes observations, rewards and metrics as tensor operations — no Python
loop over agents, entities or pairs on the step path. Interface (the trainer relies on it):

- ``reset(seed) -> obs [B, N, obs_dim]``; ``step(action) -> (obs, reward [B, N], terminated [B, N],
  truncated [B, N])``; ``truncated`` is all True once ``max_steps`` steps were taken, after which the
  caller must ``reset`` (all ``B`` worlds restart together; no scenario terminates early);
- ``positions() -> [B, N, 2]`` (learning agents; the k-NN graph is built from them),
  ``metrics() -> {name: [B]}``, ``get_state()`` / ``set_state(state)``.

What is common to all four, and differs from ``mpe2``:

- **Actions.** Discrete: ``mpe2``'s five moves, ``0`` no-op, ``1`` left (``-x``), ``2`` right (``+x``),
  ``3`` down (``-y``), ``4`` up (``+y``). Continuous: a **2-dim** force direction in ``[-1, 1]^2``
  (clipped), not ``mpe2``'s 5-dim ``[0, 1]^5``; ``mpe2``'s ``a`` maps to ours exactly as
  ``(a[2] - a[1], a[4] - a[3])``. Both are multiplied by the agent's ``accel`` (5.0 when unset, as in
  ``mpe2``).
- **Observations** are local (app. A.2): own velocity and position, then the relative positions (and,
  per scenario, velocities or kinds) of the nearest entities of each kind, nearest first, found with
  :func:`ipgnn.ops.smallest_k` on squared distances. Each kind has a fixed number of slots (an
  option): when fewer such entities exist, the remaining slots are **zero** (as ``mpe2``'s
  ``padded_relative_positions``), so
  ``obs_dim`` depends on the options only, not on ``N``. Defaults: ``spread`` 24, ``hetero`` 44,
  ``push`` 30, ``predator`` 44. No communication channel (every scenario here is silent).
- **World size** grows with ``N`` (option ``world_radius``) so that the density of the 3-agent ``mpe2``
  scenario is kept: ``N = 200`` agents of radius 0.15 do not fit in ``mpe2``'s ``[-1, 1]^2``. At the
  ``mpe2`` sizes (``N = 3``) the defaults are ``mpe2``'s.
- **Rewards** are per agent and local (each class documents ``r_i`` and how it differs from the
  reference); ``shared_reward: true`` gives the reference's shared reward instead.
- **Randomness**: each scenario owns a ``torch.Generator`` on its device; ``reset(seed)`` reseeds it,
  ``reset(None)`` continues its stream (first seeded from torch's global RNG at construction).
- Discrete actions are range-checked (``0..4``) when they are on the CPU; on an accelerator the check
  would synchronise every step, so an out-of-range index fails in the indexing kernel instead.
- Entity order in the state (``get_state``): learning agents, scripted agents (prey), then the
  passive entities (landmarks, balls and goals, obstacles); ``entity_slices`` names the ranges.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from ipgnn.envs.mpe_tensor.physics import Pairs, TensorWorld, pair_geometry
from ipgnn.ops import smallest_k

#: ``mpe2``'s discrete moves: no-op, left, right, down, up.
DISCRETE_DIRECTIONS = ((0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))

OptionTypes = type | tuple[type, ...]
_T = TypeVar("_T")


def _per_state(fn: Callable[[Any], _T]) -> Callable[[Any], _T]:
    """Memoise a geometry method of a scenario until the world's state changes
    (:meth:`TensorWorld.state_token`), so observations, rewards and metrics share one pass."""
    key = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: TensorMPEScenario) -> _T:
        token = self.world.state_token()
        if self._memo_token != token:
            self._memo, self._memo_token = {}, token
        if key not in self._memo:
            self._memo[key] = fn(self)
        return self._memo[key]

    return wrapper


def _full(n: int, value: float) -> Tensor:
    """``[n]`` float64 property vector (built in float64 so that float64 worlds get exact values)."""
    return torch.full((n,), float(value), dtype=torch.float64)


Plane = Tensor | tuple[Tensor, Tensor]


def nearest_features(planes: Sequence[Plane], d2: Tensor, k: int, order: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Features of the ``k`` nearest candidates of each observer, nearest first, zero-padded.

    Args:
        planes: ``F`` feature planes: feature ``f`` of candidate ``j`` seen by observer ``i``. Each is
            ``[B, N, M]`` or broadcastable to it (``[B, 1, M]`` for a property of the candidate alone),
            or a pair ``(p [B, 1, M], o [B, N, 1])`` for ``p_j - o_i``: a relative position, formed for
            the ``k`` chosen candidates only (gathering from the small ``p`` is also much cheaper than
            from a ``[B, N, M]`` plane).
        d2: ``[B, N, M]`` squared distances (any non-negative quantity that orders like the distance);
            ``inf`` marks a candidate that must not be seen (e.g. oneself).
        k: slots.
        order: ``smallest_k(d2, k')`` already computed for some ``k' >= min(k, M)``, to reuse.

    Returns:
        ``[B, N, k * F]`` (slot-major: the ``F`` features of the nearest candidate first); slots beyond
        the number of visible candidates are zero.
    """
    b, n, m = d2.shape
    f = len(planes)
    kk = min(k, m)
    if kk == 0:
        return d2.new_zeros(b, n, k * f)
    d, idx = smallest_k(d2, kk) if order is None else (order[0][..., :kk], order[1][..., :kk])
    cols = []
    for p in planes:
        if isinstance(p, tuple):
            cols.append(p[0].expand(b, n, m).gather(2, idx) - p[1])
        else:
            cols.append(p.expand(b, n, m).gather(2, idx))
    out = torch.stack(cols, dim=-1)  # [B, N, kk, F]
    out = torch.where(torch.isfinite(d).unsqueeze(-1), out, torch.zeros((), dtype=out.dtype, device=out.device))
    if kk < k:
        out = torch.cat([out, out.new_zeros(b, n, k - kk, f)], dim=2)
    return out.flatten(2)


def relative(points: Tensor, observers: Tensor) -> list[Plane]:
    """The two :func:`nearest_features` planes of ``points [B, M, 2]`` relative to ``observers [B, N, 2]``."""
    return [(points[..., 0].unsqueeze(1), observers[..., 0:1]), (points[..., 1].unsqueeze(1), observers[..., 1:2])]


class TensorMPEScenario:
    """Base class: ``B`` batched worlds of one MPE task, the interface the trainer uses.

    Subclasses define :attr:`OPTIONS` (accepted options and their types), :meth:`defaults`,
    :meth:`_build` (entities and ``obs_dim``), :meth:`_sample_state`, :meth:`_observe`, :meth:`_reward`,
    :meth:`metrics` and, for scripted agents, :meth:`_scripted_directions`.

    Args:
        num_agents: ``N`` learning agents.
        num_envs: ``B`` worlds stepped together.
        max_steps: episode length; ``truncated`` is all True after that many steps.
        continuous: 2-dim force actions in ``[-1, 1]^2`` instead of 5 discrete moves.
        device, dtype: where the state lives and its precision (float32 by default).
        **options: scenario options (see each subclass's ``OPTIONS``); unknown names or wrong types
            raise ``ValueError``.
    """

    name: str = ""
    OPTIONS: dict[str, OptionTypes] = {}

    def __init__(
        self,
        num_agents: int,
        num_envs: int = 1,
        max_steps: int = 25,
        continuous: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ):
        for what, v, low in (("num_agents", num_agents, 1), ("num_envs", num_envs, 1), ("max_steps", max_steps, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"scenario '{self.name}': {what} must be an integer >= {low}, got {v!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"scenario '{self.name}': dtype must be a floating type, got {dtype}")
        self.num_agents = num_agents
        self.num_envs = num_envs
        self.max_steps = max_steps
        self.discrete = not continuous
        self.action_dim = len(DISCRETE_DIRECTIONS) if self.discrete else 2
        self.device = torch.device(device)
        self.dtype = dtype
        self.options = {**self.defaults(num_agents), **self._check_options(options)}
        self._validate()
        self.agent_type: Tensor | None = None
        self.entity_slices: dict[str, slice] = {}
        self.obs_dim = 0
        self.world: TensorWorld = self._build()
        self._directions = torch.tensor(DISCRETE_DIRECTIONS, dtype=dtype, device=self.device)
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.t = 0
        self._done = True  # step() needs a reset() first
        self._memo: dict[str, Any] = {}
        self._memo_token: tuple[int, int, int] | None = None
        self._pair_buffers: dict[str, Pairs] = {}

    # ------------------------------------------------------------------ options
    @classmethod
    def defaults(cls, num_agents: int) -> dict[str, Any]:
        """The option values used when a config gives none (some depend on ``N``)."""
        return {}

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in options.items():
            if k not in self.OPTIONS:
                raise ValueError(
                    f"scenario '{self.name}': unknown option '{k}' (valid: {', '.join(sorted(self.OPTIONS))})"
                )
            kinds = self.OPTIONS[k] if isinstance(self.OPTIONS[k], tuple) else (self.OPTIONS[k],)
            if float in kinds and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
                names = " or ".join(t.__name__ for t in kinds)
                raise ValueError(f"scenario '{self.name}': option '{k}' expects {names}, got {v!r}")
            out[k] = v
        return out

    def _require(self, cond: bool, message: str) -> None:
        if not cond:
            raise ValueError(f"scenario '{self.name}': {message}")

    def _validate(self) -> None:
        """Range checks of the resolved options (subclasses extend)."""
        for k, v in self.options.items():
            if k.startswith("obs_"):
                self._require(v >= 0, f"option '{k}' must be >= 0, got {v}")
        if "world_radius" in self.options:
            self._require(self.options["world_radius"] > 0, "option 'world_radius' must be > 0")

    # ------------------------------------------------------------------ subclass hooks
    def _build(self) -> TensorWorld:
        raise NotImplementedError

    def _sample_state(self) -> tuple[Tensor, Tensor]:
        """Initial ``(p_pos, p_vel)`` of all worlds, ``[B, E, 2]`` each, drawn from ``self._gen``."""
        raise NotImplementedError

    def _observe(self) -> Tensor:
        raise NotImplementedError

    def _reward(self) -> Tensor:
        raise NotImplementedError

    def _scripted_directions(self) -> Tensor | None:
        """``[B, S, 2]`` action directions of the scripted agents (entities ``N .. N+S-1``), or None."""
        return None

    def metrics(self) -> dict[str, Tensor]:
        """Per-world task metrics at the current state, ``{name: [B]}``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _uniform(self, n: int, low: float, high: float) -> Tensor:
        u = torch.rand(self.num_envs, n, 2, generator=self._gen, device=self.device, dtype=self.dtype)
        return low + (high - low) * u

    def _entities(self, key: str) -> Tensor:
        return self.world.p_pos[:, self.entity_slices[key]]

    def _own(self) -> Tensor:
        """``[B, N, 4]``: own velocity and position (``mpe2``'s first four features)."""
        n = self.num_agents
        return torch.cat([self.world.p_vel[:, :n], self.world.p_pos[:, :n]], dim=-1)

    def _pairs(self, key: str, a: Tensor, b: Tensor) -> Pairs:
        """``pair_geometry(a, b)`` written into the tensors this scenario keeps under ``key``: one
        geometry per key and state (each key's caller is memoised with :func:`_per_state` or runs once
        per state, as ``_observe``), overwritten at the next state instead of allocated again."""
        g = self._pair_buffers[key] = pair_geometry(a, b, out=self._pair_buffers.get(key))
        return g

    @_per_state
    def _agent_pairs(self) -> Pairs:
        """Agent-to-agent geometry ``[B, N, N]``, own squared distance ``inf``.

        It is the world's contact geometry (a view of its leading block, see
        :meth:`TensorWorld.leading_block`) when the agents are its first rows and columns, as in every
        scenario here, so that the next step's contact forces reuse it.
        """
        n = self.num_agents
        g = self.world.leading_block(n)
        if g is None:
            pos = self.positions()
            g = self._pairs("agents", pos, pos)
            g.d2.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        return g

    @_per_state
    def _collisions(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(b, i, j, hit)``: candidate ordered pairs of distinct agents ``i, j`` of world ``b`` (index
        vectors) and whether each collides (``hit``, float 0/1): centres closer than the sum of their
        radii, ``mpe2``'s ``is_collision``. Every colliding pair is among the candidates.

        The candidates are the world's pairs within contact reach (a few per agent) when the agents lead
        its contact geometry, so that no ``[B, N, N]`` mask is formed; otherwise every pair that collides.
        ``hit`` weighs the candidates instead of filtering them: each boolean selection is a separate
        op, and at small ``N`` the step's cost is its number of ops.
        """
        n = self.num_agents
        size = self.world.size[:n]
        g = self._agent_pairs()
        if self.world.leading_block(n) is not None:
            b, i, j = self.world.pairs_in_reach()
            if self.world.num_contact_rows > n or self.world.num_contact_cols > n:  # other colliders too
                lead = (i < n) & (j < n)
                b, i, j = b[lead], i[lead], j[lead]
        else:
            reach = size[:, None] + size[None, :]
            b, i, j = (g.d2 < reach * reach).nonzero(as_tuple=True)
        r = size[i] + size[j]
        return b, i, j, (g.d2[b, i, j] < r * r).to(self.dtype)

    def _action_directions(self, action: Tensor) -> Tensor:
        b, n = self.num_envs, self.num_agents
        if not isinstance(action, Tensor):
            action = torch.as_tensor(action)
        if self.discrete:
            if action.shape != (b, n) or action.dtype.is_floating_point or action.dtype == torch.bool:
                raise ValueError(
                    f"scenario '{self.name}': discrete actions must be an integer tensor of shape "
                    f"{(b, n)} (num_envs, num_agents), got {action.dtype} {tuple(action.shape)}"
                )
            action = action.to(self.device)
            if action.device.type == "cpu" and action.numel() and (int(action.min()) < 0 or int(action.max()) > 4):
                raise ValueError(
                    f"scenario '{self.name}': discrete actions must be in 0..4, got values in "
                    f"[{int(action.min())}, {int(action.max())}]"
                )
            return self._directions[action.long()]
        if action.shape != (b, n, 2) or not action.dtype.is_floating_point:
            raise ValueError(
                f"scenario '{self.name}': continuous actions must be a float tensor of shape "
                f"{(b, n, 2)} (num_envs, num_agents, 2), got {action.dtype} {tuple(action.shape)}"
            )
        return action.to(device=self.device, dtype=self.dtype).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ interface
    def reset(self, seed: int | None = None) -> Tensor:
        """Restart all ``B`` worlds; ``seed`` reseeds the scenario's generator. Returns ``[B, N, obs_dim]``."""
        if seed is not None:
            self._gen.manual_seed(int(seed))
        pos, vel = self._sample_state()
        self.world.set_state(pos, vel)
        self.t = 0
        self._done = False
        return self._observe()

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Advance all worlds one step with the joint action (``[B, N]`` long, or ``[B, N, 2]`` float).

        Returns ``obs [B, N, obs_dim]``, ``reward [B, N]``, ``terminated [B, N]`` (always False) and
        ``truncated [B, N]`` (all True at ``t == max_steps``).
        """
        if self._done:
            raise RuntimeError(
                f"scenario '{self.name}': step() called before reset() or after the episode "
                f"ended (max_steps={self.max_steps}); call reset()"
            )
        directions = self._action_directions(action)
        scripted = self._scripted_directions()
        if scripted is not None:
            directions = torch.cat([directions, scripted], dim=1)
        self.world.step(directions)
        self.t += 1
        self._done = self.t >= self.max_steps
        shape = (self.num_envs, self.num_agents)
        terminated = torch.zeros(shape, dtype=torch.bool, device=self.device)
        truncated = torch.full(shape, self._done, dtype=torch.bool, device=self.device)
        return self._observe(), self._reward(), terminated, truncated

    def observe(self) -> Tensor:
        """Observations at the current state, ``[B, N, obs_dim]``."""
        return self._observe()

    def reward(self) -> Tensor:
        """Rewards at the current state (those ``step`` returned last), ``[B, N]``."""
        return self._reward()

    def positions(self) -> Tensor:
        """Learning agents' positions, ``[B, N, 2]``."""
        return self.world.p_pos[:, : self.num_agents]

    def agent_sq_distances(self) -> Tensor:
        """Squared distances between the learning agents at the current state, ``[B, N, N]``, ``inf`` on
        the diagonal: the tensor the observations and the contact forces use, for the k-NN graph
        (read-only; overwritten by the next step)."""
        return self._agent_pairs().d2

    def get_state(self) -> dict[str, Tensor]:
        """Copies of all entities' ``p_pos``, ``p_vel`` (``[B, E, 2]``) and the step counter ``t``."""
        return {
            "p_pos": self.world.p_pos.clone(),
            "p_vel": self.world.p_vel.clone(),
            "t": torch.tensor(self.t, dtype=torch.long),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Load ``p_pos`` (required), ``p_vel`` (zero if absent), ``t`` (0 if absent); ``[B, E, 2]`` or
        ``[E, 2]`` for every world. Stepping may continue from there."""
        unknown = set(state) - {"p_pos", "p_vel", "t"}
        if unknown or "p_pos" not in state:
            raise ValueError(
                f"scenario '{self.name}': state needs 'p_pos' and may have 'p_vel', 't'; got keys {sorted(state)}"
            )
        self.world.set_state(state["p_pos"], state.get("p_vel"))
        self.t = int(state.get("t", 0))
        self._done = self.t >= self.max_steps

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return (
            f"{type(self).__name__}(N={self.num_agents}, B={self.num_envs}, obs_dim={self.obs_dim}, "
            f"{'discrete' if self.discrete else 'continuous'}, {opts})"
        )


# ==================================================================================================
class SpreadScenario(TensorMPEScenario):
    """Cooperative navigation (``mpe2`` ``simple_spread_v3``): ``N`` agents cover ``L`` landmarks.

    World (``mpe2``'s at ``N = 3``): agents of radius 0.15, mass 1, ``accel`` unset (5.0), no speed
    limit, colliding; landmarks of radius 0.05 that neither move nor collide; agents and landmarks
    uniform in ``[-R, R]^2`` with ``R = world_radius`` (default ``max(1, sqrt(N / 3))``: ``mpe2``'s
    density, and exactly ``mpe2`` at ``N = 3``).

    Observation (``4 + 2 obs_landmarks + 2 obs_agents``, default 24): own velocity, own position,
    relative positions of the ``obs_landmarks`` nearest landmarks, of the ``obs_agents`` nearest other
    agents; zero-padded slots when fewer exist. (``mpe2`` observes every landmark and agent in index
    order, plus communication.)

    Reward. With ``d*_l`` the distance from landmark ``l`` to its nearest agent and ``c_i`` the number
    of agents colliding with ``i`` (centre distance below the sum of radii):

    - local (default): ``r_i = -mean(d*_l for the K landmarks nearest to agent i) - c_i``,
      ``K = reward_landmarks`` (default 3, clipped to ``L``): an agent is paid for the coverage of the
      landmarks around it, by itself or by its neighbours, and for its own collisions; it depends only
      on the agents near those landmarks. ``mpe2`` instead gives every agent the global coverage term
      ``-sum_l d*_l``. Trade-off of ``K``: an agent is indifferent to landmarks outside its ``K``
      nearest, and at a uniform random start 17 % (``K = 2``), 7 % (``K = 3``) or 1.5 % (``K = 5``) of
      the landmarks are among nobody's ``K`` nearest; ``K = L`` is the global term divided by ``L``.
      (A Voronoi split of the global term — each landmark charged to its nearest agent — sums to it
      exactly but pays an agent for handing its landmarks to others, so it is not used);
    - ``shared_reward: true``: ``mpe2``'s exact reward,
      ``r_i = local_ratio * (-c_i) + (1 - local_ratio) * (-sum_l d*_l)`` (default ``local_ratio`` 0.5).

    Metrics: ``landmark_distance`` (mean of ``d*_l``), ``collisions`` (colliding agent pairs),
    ``occupied_landmarks`` (fraction of landmarks with ``d*_l < 0.1``, ``mpe2``'s benchmark threshold).
    """

    name = "spread"
    OPTIONS = {
        "num_landmarks": int,
        "world_radius": float,
        "obs_landmarks": int,
        "obs_agents": int,
        "reward_landmarks": int,
        "shared_reward": bool,
        "local_ratio": float,
    }
    AGENT_SIZE = 0.15
    LANDMARK_SIZE = 0.05

    @classmethod
    def defaults(cls, num_agents: int) -> dict[str, Any]:
        return {
            "num_landmarks": num_agents,
            "world_radius": max(1.0, math.sqrt(num_agents / 3.0)),
            "obs_landmarks": 5,
            "obs_agents": 5,
            "reward_landmarks": 3,
            "shared_reward": False,
            "local_ratio": 0.5,
        }

    def _validate(self) -> None:
        super()._validate()
        o = self.options
        self._require(o["num_landmarks"] >= 1, f"option 'num_landmarks' must be >= 1, got {o['num_landmarks']}")
        self._require(o["reward_landmarks"] >= 1, "option 'reward_landmarks' must be >= 1")
        self._require(0.0 <= o["local_ratio"] <= 1.0, "option 'local_ratio' must be in [0, 1]")

    def _agent_props(self) -> dict[str, Tensor]:
        n = self.num_agents
        return {"size": _full(n, self.AGENT_SIZE), "accel": _full(n, 5.0), "max_speed": _full(n, float("inf"))}

    def _build(self) -> TensorWorld:
        n, lm = self.num_agents, self.options["num_landmarks"]
        a = self._agent_props()
        self.entity_slices = {"agents": slice(0, n), "landmarks": slice(n, n + lm)}
        self.obs_dim = 4 + 2 * self.options["obs_landmarks"] + self._agent_slot_dim() * self.options["obs_agents"]
        return TensorWorld(
            self.num_envs,
            size=torch.cat([a["size"], _full(lm, self.LANDMARK_SIZE)]),
            num_actors=n,
            movable=torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(lm, dtype=torch.bool)]),
            collide=torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(lm, dtype=torch.bool)]),
            accel=torch.cat([a["accel"], _full(lm, 5.0)]),
            max_speed=torch.cat([a["max_speed"], _full(lm, float("inf"))]),
            device=self.device,
            dtype=self.dtype,
        )

    def _agent_slot_dim(self) -> int:
        return 2

    def _sample_state(self) -> tuple[Tensor, Tensor]:
        r = self.options["world_radius"]
        pos = torch.cat(
            [self._uniform(self.num_agents, -r, r), self._uniform(self.options["num_landmarks"], -r, r)], dim=1
        )
        return pos, torch.zeros_like(pos)

    @_per_state
    def _landmark_geometry(self) -> tuple[Pairs, Tensor, tuple[Tensor, Tensor]]:
        """Agent-to-landmark geometry ``[B, N, L]``, coverage ``d*`` ``[B, L]``, and each agent's nearest
        landmarks (one selection serving the observation and the reward)."""
        g = self._pairs("landmarks", self.positions(), self._entities("landmarks"))
        k = min(max(self.options["obs_landmarks"], self.options["reward_landmarks"]), g.d2.shape[-1])
        return g, torch.sqrt(g.d2.amin(dim=1)), smallest_k(g.d2, k)

    def _agent_planes(self) -> list[Plane]:
        pos = self.positions()
        return relative(pos, pos)

    def _observe(self) -> Tensor:
        lm, _, order = self._landmark_geometry()
        ag = self._agent_pairs()
        pos = self.positions()
        return torch.cat(
            [
                self._own(),
                nearest_features(
                    relative(self._entities("landmarks"), pos), lm.d2, self.options["obs_landmarks"], order
                ),
                nearest_features(self._agent_planes(), ag.d2, self.options["obs_agents"]),
            ],
            dim=-1,
        )

    def _collision_weight(self, i: Tensor, j: Tensor) -> Tensor | float:
        """What agent ``i`` loses for colliding with agent ``j`` (index vectors): 1 here."""
        return 1.0

    def _collision_penalty(self) -> Tensor:
        """``[B, N]``: the summed :meth:`_collision_weight` of each agent's collisions."""
        b, i, j, hit = self._collisions()
        out = torch.zeros(self.num_envs, self.num_agents, dtype=self.dtype, device=self.device)
        return out.index_put_((b, i), hit * self._collision_weight(i, j), accumulate=True)

    def _count(self, b: Tensor, weight: Tensor) -> Tensor:
        """``[B]``: the sum of ``weight`` over the entries of the index vector ``b`` in each world."""
        out = torch.zeros(self.num_envs, dtype=self.dtype, device=self.device)
        return out.index_put_((b,), weight, accumulate=True)

    def _reward(self) -> Tensor:
        _, d_star, order = self._landmark_geometry()
        penalty = self._collision_penalty()  # [B, N]
        if self.options["shared_reward"]:
            ratio = self.options["local_ratio"]
            return (-d_star.sum(-1, keepdim=True)) * (1 - ratio) + (-penalty) * ratio
        k = min(self.options["reward_landmarks"], d_star.shape[-1])
        near = order[1][..., :k]  # [B, N, K]
        cover = d_star.gather(1, near.flatten(1)).view_as(near).mean(-1)
        return -cover - penalty

    def metrics(self) -> dict[str, Tensor]:
        _, d_star, _ = self._landmark_geometry()
        b, _, _, hit = self._collisions()
        return {
            "landmark_distance": d_star.mean(-1),
            "collisions": self._count(b, hit) / 2,
            "occupied_landmarks": (d_star < 0.1).to(self.dtype).mean(-1),
        }


class HeteroScenario(SpreadScenario):
    """Heterogeneous navigation: cooperative navigation with ``N // 2`` big, slow agents (type 0,
    indices ``0 .. N//2 - 1``) and ``N - N // 2`` small, fast ones (type 1).

    Not in ``mpe2``; built on ``simple_spread`` with the two agent kinds of the PIC reference
    (``hetero_spread``) and ``simple_tag``'s speeds: big agents radius 0.15, ``accel`` 3.0,
    ``max_speed`` 1.0; small agents radius 0.075, ``accel`` 4.0, ``max_speed`` 1.3; mass 1 for both.
    Landmarks, world size and sampling as :class:`SpreadScenario`. ``agent_type`` is ``[N]`` long.

    Observation (``4 + 2 obs_landmarks + 3 obs_agents``, default ``obs_agents`` 10: 44): as
    cooperative navigation, each neighbour slot carrying ``(dx, dy, kind)`` with kind ``+1`` big,
    ``-1`` small, ``0`` an empty slot.

    Reward: as :class:`SpreadScenario` with the collision count replaced by a weighted one: agent ``i``
    loses ``cross_penalty`` (default 10) for every big agent it collides with when ``i`` is small, and
    1 for every other collision (a big agent hit by a small one loses 1). ``shared_reward: true`` uses
    ``simple_spread``'s formula with that weighted count (PIC sums the weighted counts of all agents
    into one team reward).

    Metrics: those of :class:`SpreadScenario` plus ``cross_collisions`` (colliding big-small pairs).
    """

    name = "hetero"
    OPTIONS = {**SpreadScenario.OPTIONS, "cross_penalty": float}
    BIG = {"size": 0.15, "accel": 3.0, "max_speed": 1.0}
    SMALL = {"size": 0.075, "accel": 4.0, "max_speed": 1.3}

    @classmethod
    def defaults(cls, num_agents: int) -> dict[str, Any]:
        return {**super().defaults(num_agents), "obs_agents": 10, "cross_penalty": 10.0}

    def _validate(self) -> None:
        super()._validate()
        self._require(self.num_agents >= 2, f"needs at least 2 agents (one of each kind), got {self.num_agents}")

    def _agent_props(self) -> dict[str, Tensor]:
        n = self.num_agents
        small = torch.arange(n) >= n // 2
        self.agent_type = small.long().to(self.device)
        return {
            k: torch.where(
                small, torch.tensor(self.SMALL[k], dtype=torch.float64), torch.tensor(self.BIG[k], dtype=torch.float64)
            )
            for k in ("size", "accel", "max_speed")
        }

    def _agent_slot_dim(self) -> int:
        return 3

    def _agent_planes(self) -> list[Plane]:
        kind = (1.0 - 2.0 * self.agent_type.to(self.dtype)).view(1, 1, -1)  # +1 big, -1 small
        return [*super()._agent_planes(), kind]

    def _cross(self, i: Tensor, j: Tensor) -> Tensor:
        """Whether small agent ``i`` meets big agent ``j`` (index vectors)."""
        small = self.agent_type.bool()
        return small[i] & ~small[j]

    def _collision_weight(self, i: Tensor, j: Tensor) -> Tensor:
        one = torch.ones((), dtype=self.dtype, device=self.device)
        return torch.where(self._cross(i, j), one * self.options["cross_penalty"], one)

    def metrics(self) -> dict[str, Tensor]:
        out = super().metrics()
        b, i, j, hit = self._collisions()
        out["cross_collisions"] = self._count(b, hit * self._cross(i, j))
        return out


# ==================================================================================================
class PushScenario(TensorMPEScenario):
    """Cooperative push: ``N`` agents push large movable balls (default one) onto their goals.

    ``mpe2``'s ``simple_push`` is a two-player adversarial game, so the reference is PIC's
    ``simple_coop_push``: agents of radius 0.06 (mass 1, ``accel`` 5.0, no speed limit, colliding);
    ``num_balls`` balls of radius ``ball_size`` (default ``0.1 sqrt(N / 3)`` capped to ``[0.1, 0.7]``)
    and mass ``ball_mass`` (default ``20 * ball_size``: PIC's 2.0 at radius 0.1), movable, colliding
    with agents and each other, no action of their own; one goal per ball (radius 0.05, neither moving
    nor colliding). Agents uniform in ``[-R, R]^2``, balls and goals in ``[-(R - 0.2), R - 0.2]^2``
    with every goal at least ``min(0.8, R)`` from its ball (best of 16 draws, vectorised);
    ``R = world_radius``, default ``max(1, sqrt(N / 7.5))`` (PIC: 1 at N = 3, 2 at N = 30).

    Observation (``4 + 6 obs_balls + 2 obs_agents``, default 1 ball and 10 agents: 30): own velocity
    and position; for each of the ``obs_balls`` nearest balls its relative position, its velocity and
    its goal's position relative to the agent; the nearest agents' relative positions; zero-padded.

    Reward. With ``b(i)`` the ball nearest to agent ``i`` and ``g(b)`` its goal:

    - local (default): ``r_i = -2 |b(i) - g(b(i))| - 0.1 |p_i - b(i)| + 0.1 [i touches b(i)]``:
      PIC's three terms, with the team's nearest-agent distance and touch count replaced by the agent's
      own. With one ball the first term is the task itself and the same for everyone; with several
      balls it is local to the agents around each ball;
    - ``shared_reward: true``: PIC's team reward for every agent,
      ``sum_b (-2 |b - g(b)| - 0.1 min_j |p_j - b| + 0.1 #agents touching b)``.

    Metrics: ``ball_distance`` (mean ball-to-goal distance), ``touching`` (agents touching a ball).
    """

    name = "push"
    OPTIONS = {
        "num_balls": int,
        "ball_size": float,
        "ball_mass": float,
        "world_radius": float,
        "obs_balls": int,
        "obs_agents": int,
        "shared_reward": bool,
    }
    AGENT_SIZE = 0.06
    GOAL_SIZE = 0.05

    @classmethod
    def defaults(cls, num_agents: int) -> dict[str, Any]:
        ball = min(0.7, max(0.1, 0.1 * math.sqrt(num_agents / 3.0)))
        return {
            "num_balls": 1,
            "ball_size": ball,
            "ball_mass": 20.0 * ball,
            "world_radius": max(1.0, math.sqrt(num_agents / 7.5)),
            "obs_balls": 1,
            "obs_agents": 10,
            "shared_reward": False,
        }

    def _validate(self) -> None:
        super()._validate()
        o = self.options
        self._require(o["num_balls"] >= 1, "option 'num_balls' must be >= 1")
        self._require(o["ball_size"] > 0 and o["ball_mass"] > 0, "options 'ball_size' and 'ball_mass' must be > 0")
        self._require(o["world_radius"] > 0.2, "option 'world_radius' must be > 0.2 (balls are placed 0.2 inside)")

    def _build(self) -> TensorWorld:
        n, m = self.num_agents, self.options["num_balls"]
        self.entity_slices = {"agents": slice(0, n), "balls": slice(n, n + m), "goals": slice(n + m, n + 2 * m)}
        self.obs_dim = 4 + 6 * self.options["obs_balls"] + 2 * self.options["obs_agents"]
        ones, zeros = (lambda k: torch.ones(k, dtype=torch.bool)), (lambda k: torch.zeros(k, dtype=torch.bool))
        return TensorWorld(
            self.num_envs,
            num_actors=n,
            size=torch.cat([_full(n, self.AGENT_SIZE), _full(m, self.options["ball_size"]), _full(m, self.GOAL_SIZE)]),
            mass=torch.cat([torch.ones(n), _full(m, self.options["ball_mass"]), torch.ones(m)]),
            movable=torch.cat([ones(n), ones(m), zeros(m)]),
            collide=torch.cat([ones(n), ones(m), zeros(m)]),
            device=self.device,
            dtype=self.dtype,
        )

    def _sample_state(self) -> tuple[Tensor, Tensor]:
        r, m = self.options["world_radius"], self.options["num_balls"]
        agents = self._uniform(self.num_agents, -r, r)
        balls = self._uniform(m, -(r - 0.2), r - 0.2)
        tries = 16
        cand = (self._uniform(m * tries, -(r - 0.2), r - 0.2)).view(self.num_envs, m, tries, 2)
        dist = torch.sqrt(((cand - balls.unsqueeze(2)) ** 2).sum(-1))  # [B, M, tries]
        ok = dist >= min(0.8, r)
        # the first draw far enough from its ball, or the farthest one when none is
        first = tries - torch.arange(tries, device=self.device, dtype=self.dtype) + dist.max() + 1
        score = torch.where(ok, first, dist)
        pick = score.argmax(-1)
        goals = cand.gather(2, pick[..., None, None].expand(-1, -1, 1, 2)).squeeze(2)
        pos = torch.cat([agents, balls, goals], dim=1)
        return pos, torch.zeros_like(pos)

    @_per_state
    def _ball_geometry(self) -> tuple[Pairs, Tensor, Tensor]:
        """Agent-to-ball geometry ``[B, N, M]``, ball-to-goal distances ``[B, M]``, touching ``[B, N, M]``."""
        balls, goals = self._entities("balls"), self._entities("goals")
        g = self._pairs("balls", self.positions(), balls)
        to_goal = torch.sqrt(((goals - balls) ** 2).sum(-1))
        touch = g.dist < self.AGENT_SIZE + self.options["ball_size"]
        return g, to_goal, touch

    def _observe(self) -> Tensor:
        g, _, _ = self._ball_geometry()
        pos = self.positions()
        vel = self.world.p_vel[:, self.entity_slices["balls"]]
        # ball j and its goal relative to agent i, the ball's velocity
        planes = [
            *relative(self._entities("balls"), pos),
            vel[..., 0].unsqueeze(1),
            vel[..., 1].unsqueeze(1),
            *relative(self._entities("goals"), pos),
        ]
        ag = self._agent_pairs()
        return torch.cat(
            [
                self._own(),
                nearest_features(planes, g.d2, self.options["obs_balls"]),
                nearest_features(relative(pos, pos), ag.d2, self.options["obs_agents"]),
            ],
            dim=-1,
        )

    def _reward(self) -> Tensor:
        g, to_goal, touch = self._ball_geometry()
        if self.options["shared_reward"]:
            team = (-2.0 * to_goal - 0.1 * g.dist.amin(1) + 0.1 * touch.sum(1).to(self.dtype)).sum(-1)
            return team.unsqueeze(-1).expand(-1, self.num_agents).clone()
        nearest = g.dist.argmin(-1, keepdim=True)  # [B, N, 1]
        own = g.dist.gather(2, nearest).squeeze(-1)
        touching = touch.gather(2, nearest).squeeze(-1).to(self.dtype)
        ball_goal = to_goal.gather(1, nearest.squeeze(-1))
        return -2.0 * ball_goal - 0.1 * own + 0.1 * touching

    def metrics(self) -> dict[str, Tensor]:
        _, to_goal, touch = self._ball_geometry()
        return {"ball_distance": to_goal.mean(-1), "touching": touch.any(-1).sum(-1).to(self.dtype)}


# ==================================================================================================
class PredatorScenario(TensorMPEScenario):
    """Prey and predator (``mpe2`` ``simple_tag_v3``): ``N`` learning predators (``mpe2``'s adversaries)
    chase ``num_prey`` faster scripted prey among ``num_obstacles`` large obstacles that block everyone.

    World (``simple_tag``'s sizes and speeds): predators radius 0.075, ``accel`` 3.0, ``max_speed``
    1.0; prey radius 0.05, ``accel`` 4.0, ``max_speed`` 1.3; obstacles radius 0.2, colliding, fixed;
    all mass 1. Predators and prey uniform in ``[-R, R]^2``, obstacles in ``[-0.9 R, 0.9 R]^2``.
    Defaults ``num_prey = max(1, N // 4)``, ``R = max(1, sqrt((N + num_prey) / 4))``,
    ``num_obstacles = round(2 R^2)``: exactly ``simple_tag``'s 3 adversaries, 1 good agent, 2 obstacles
    and ``R = 1`` at ``N = 3``, and its density beyond.

    Prey policy (fixed, vectorised; ``mpe2``'s good agents are learners instead): flee along
    ``sum_j (p - p_j) / |p - p_j|^3`` over all predators ``j`` (inverse-square repulsion, normalised),
    plus ``2 (|x| - 0.8 R) / (0.2 R)`` back towards the centre along each axis where ``|x| > 0.8 R``
    (``mpe2`` keeps prey inside with a reward penalty for leaving ``[-1, 1]``); the sum is normalised
    to a unit direction (times the prey's ``accel``).

    Observation (``4 + 2 obs_landmarks + 4 obs_prey + 2 obs_agents``, defaults 5, 5, 5: 44): own
    velocity and position; relative positions of the nearest obstacles; relative positions and
    velocities of the nearest prey (``simple_tag`` observes prey velocities too); relative positions of
    the nearest other predators; zero-padded.

    Reward, with ``k_i`` the number of prey colliding with predator ``i``:

    - local (default): ``r_i = 10 k_i - 0.1 min_p |p_i - p_p|``: the predator's own captures and the
      distance to its nearest prey (``simple_tag``'s optional adversary shaping, per agent);
    - ``shared_reward: true``: ``simple_tag``'s adversary reward, ``r_i = 10 sum_j k_j`` (every
      colliding prey-predator pair, for every predator).

    Metrics: ``captures`` (colliding prey-predator pairs), ``prey_distance`` (mean over prey of the
    distance to the nearest predator).
    """

    name = "predator"
    OPTIONS = {
        "num_prey": int,
        "num_obstacles": int,
        "world_radius": float,
        "obs_landmarks": int,
        "obs_prey": int,
        "obs_agents": int,
        "shared_reward": bool,
    }
    PREDATOR = {"size": 0.075, "accel": 3.0, "max_speed": 1.0}
    PREY = {"size": 0.05, "accel": 4.0, "max_speed": 1.3}
    OBSTACLE_SIZE = 0.2

    @classmethod
    def defaults(cls, num_agents: int) -> dict[str, Any]:
        prey = max(1, num_agents // 4)
        r = max(1.0, math.sqrt((num_agents + prey) / 4.0))
        return {
            "num_prey": prey,
            "num_obstacles": int(round(2 * r * r)),
            "world_radius": r,
            "obs_landmarks": 5,
            "obs_prey": 5,
            "obs_agents": 5,
            "shared_reward": False,
        }

    def _validate(self) -> None:
        super()._validate()
        self._require(self.options["num_prey"] >= 1, "option 'num_prey' must be >= 1")
        self._require(self.options["num_obstacles"] >= 0, "option 'num_obstacles' must be >= 0")

    def _build(self) -> TensorWorld:
        n, p, o = self.num_agents, self.options["num_prey"], self.options["num_obstacles"]
        self.entity_slices = {"agents": slice(0, n), "prey": slice(n, n + p), "obstacles": slice(n + p, n + p + o)}
        opt = self.options
        self.obs_dim = 4 + 2 * opt["obs_landmarks"] + 4 * opt["obs_prey"] + 2 * opt["obs_agents"]

        def per_kind(key: str, obstacle: float) -> Tensor:
            return torch.cat([_full(n, self.PREDATOR[key]), _full(p, self.PREY[key]), _full(o, obstacle)])

        return TensorWorld(
            self.num_envs,
            num_actors=n + p,
            size=per_kind("size", self.OBSTACLE_SIZE),
            accel=per_kind("accel", 5.0),
            max_speed=per_kind("max_speed", float("inf")),
            movable=torch.arange(n + p + o) < n + p,
            collide=True,
            device=self.device,
            dtype=self.dtype,
        )

    def _sample_state(self) -> tuple[Tensor, Tensor]:
        r = self.options["world_radius"]
        pos = torch.cat(
            [
                self._uniform(self.num_agents + self.options["num_prey"], -r, r),
                self._uniform(self.options["num_obstacles"], -0.9 * r, 0.9 * r),
            ],
            dim=1,
        )
        return pos, torch.zeros_like(pos)

    def _scripted_directions(self) -> Tensor:
        r = self.options["world_radius"]
        prey = self._entities("prey")
        g, _ = self._prey_geometry()  # [B, N, P]: prey - predator, at this (pre-step) state
        inv = 1.0 / g.dist.clamp_min(1e-6) ** 3
        flee = torch.stack([(g.dx * inv).sum(1), (g.dy * inv).sum(1)], dim=-1)  # [B, P, 2]
        flee = flee / torch.sqrt((flee * flee).sum(-1, keepdim=True)).clamp_min(1e-12)
        inner = 0.8 * r
        wall = -torch.sign(prey) * torch.relu(prey.abs() - inner) / (r - inner)
        d = flee + 2.0 * wall
        return d / torch.sqrt((d * d).sum(-1, keepdim=True)).clamp_min(1e-12)

    @_per_state
    def _prey_geometry(self) -> tuple[Pairs, Tensor]:
        """Predator-to-prey geometry and captures (collisions), ``[B, N, P]``."""
        g = self._pairs("prey", self.positions(), self._entities("prey"))
        return g, g.dist < self.PREDATOR["size"] + self.PREY["size"]

    def _observe(self) -> Tensor:
        pos = self.positions()
        ob = self._pairs("obstacles", pos, self._entities("obstacles"))
        pr, _ = self._prey_geometry()
        vel = self.world.p_vel[:, self.entity_slices["prey"]]
        ag = self._agent_pairs()
        return torch.cat(
            [
                self._own(),
                nearest_features(relative(self._entities("obstacles"), pos), ob.d2, self.options["obs_landmarks"]),
                nearest_features(
                    [*relative(self._entities("prey"), pos), vel[..., 0].unsqueeze(1), vel[..., 1].unsqueeze(1)],
                    pr.d2,
                    self.options["obs_prey"],
                ),
                nearest_features(relative(pos, pos), ag.d2, self.options["obs_agents"]),
            ],
            dim=-1,
        )

    def _reward(self) -> Tensor:
        g, caught = self._prey_geometry()
        k = caught.sum(-1).to(self.dtype)  # [B, N]
        if self.options["shared_reward"]:
            return (10.0 * k.sum(-1, keepdim=True)).expand(-1, self.num_agents).clone()
        return 10.0 * k - 0.1 * g.dist.amin(-1)

    def metrics(self) -> dict[str, Tensor]:
        g, caught = self._prey_geometry()
        return {"captures": caught.sum((1, 2)).to(self.dtype), "prey_distance": g.dist.amin(1).mean(-1)}


# ==================================================================================================
SCENARIOS: dict[str, type[TensorMPEScenario]] = {
    "spread": SpreadScenario,
    "hetero": HeteroScenario,
    "push": PushScenario,
    "predator": PredatorScenario,
}


def make_scenario(
    name: str,
    num_agents: int,
    num_envs: int = 1,
    max_steps: int = 25,
    continuous: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **options: Any,
) -> TensorMPEScenario:
    """Build the tensor MPE scenario ``name`` (one of :data:`SCENARIOS`) with its ``options``.

    Raises:
        ValueError: unknown scenario or option, an option of the wrong type or out of range.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown tensor MPE scenario '{name}'; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name](
        num_agents, num_envs=num_envs, max_steps=max_steps, continuous=continuous, device=device, dtype=dtype, **options
    )
