r"""Traffic-signal control as a PettingZoo ``ParallelEnv``: every signalised intersection is an agent.

Per decision (``action_interval`` simulated seconds, default 10):

- **action**: the next phase, an index into the agent's *action phases* (its CityFlow phases without
  the transition phase); agents with fewer phases than the largest intersection get an
  ``action_mask`` in their info. A change of phase first shows the transition phase for ``yellow``
  seconds (default 5) within the interval.
- **observation** (``features``, in this order): ``phase``, one-hot of the current action phase;
  ``count`` and ``waiting``, the vehicle count and the waiting (halted) count of each incoming lane,
  padded with zeros to the largest intersection; ``pressure``, the pressure of each action phase
  (Varaiya 2013, :class:`PhasePressure`: the information MaxPressure acts on), zero for padded phases.
  Default: all four.
- **reward** ``r_i`` (local to the intersection, so it depends on the agent and its neighbours):

  - ``travel_time`` (default, the paper's sec. 5 objective): minus the vehicle-seconds accrued on the
    intersection's incoming lanes during the interval,
    :math:`r_i = -\sum_{t \in \text{interval}} \sum_{l \in \text{in}(i)} n_l(t)\,\Delta t`.
    Every lane is incoming to at most one intersection, so :math:`\sum_i r_i` is minus the
    vehicle-seconds spent in the network on signalised approaches: the return is (up to the exit
    roads and the vehicles not yet inserted) minus the total travel time that ATT averages.
  - ``queue``: minus the waiting vehicles on its incoming lanes at the end of the interval;
  - ``pressure``: minus the absolute difference between vehicles on its incoming and outgoing lanes;
  - ``waiting``: minus the vehicles on its incoming lanes (moving or not) at the end of the interval, a
    one-sample estimate of ``travel_time / action_interval``.
- **episode**: ``max_decisions`` decisions (app. D: 100), then truncation (never termination).

Evaluation metrics, the same definitions on every engine (see :mod:`ipgnn.traffic.sumo_engine`),
reported at the end of an episode: ``average_travel_time`` (CityFlow's definition: every vehicle whose
scheduled entry has passed, counted from that time to its arrival or to now), ``throughput`` (vehicles
that completed their route), ``queue_length`` (mean waiting vehicles per incoming lane of the
signalised intersections) and ``delay`` (the fraction of the vehicles in the network that are waiting).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Optional

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ipgnn.traffic.scenario import Scenario

REWARDS = ("travel_time", "queue", "pressure", "waiting")
FEATURES = ("phase", "count", "waiting", "pressure")


class TrafficSignalEnv(ParallelEnv):
    """Signal control on a scenario, over an engine made by ``engine_factory(seed)``.

    Args:
        scenario: the loaded scenario.
        engine_factory: ``seed -> engine`` with CityFlow's ``Engine`` API subset (``next_step``,
            ``set_tl_phase``, ``get_lane_vehicle_count``, ``get_lane_waiting_vehicle_count``,
            ``get_average_travel_time``, ``get_current_time``) and ``close``.
        action_interval, yellow, max_decisions, reward, features: see the module docstring.
    """

    metadata = {"name": "traffic_signal_v0", "render_modes": []}

    def __init__(self, scenario: Scenario, engine_factory: Callable[[int], Any], action_interval: int = 10,
                 yellow: int = 5, max_decisions: int = 100, reward: str = "travel_time",
                 features: tuple[str, ...] = FEATURES):
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if not features or any(f not in FEATURES for f in features):
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {features!r}")
        if yellow >= action_interval:
            raise ValueError(f"yellow ({yellow} s) must be shorter than action_interval ({action_interval} s)")
        self.scenario = scenario
        self.engine_factory = engine_factory
        self.action_interval, self.yellow, self.max_decisions = action_interval, yellow, max_decisions
        self.reward_kind, self.features = reward, tuple(features)
        self.possible_agents = scenario.agent_ids
        self.agents: list[str] = []
        self._inter = {a.id: a for a in scenario.intersections}
        self.max_phases = max(len(a.action_phases) for a in scenario.intersections)
        self.max_lanes = max(len(a.incoming_lanes) for a in scenario.intersections)
        self._in_lanes = {a.id: [f"{r}_{k}" for r, k in a.incoming_lanes] for a in scenario.intersections}
        self._out_lanes = {a.id: [f"{r}_{k}" for r, k in a.outgoing_lanes] for a in scenario.intersections}
        # vectorised views: every lane once, and [N, max_lanes] indices into it (padding -> a zero slot)
        self._lanes = sorted({l for ls in (*self._in_lanes.values(), *self._out_lanes.values()) for l in ls})
        self._pick_lanes = operator.itemgetter(*self._lanes)
        pos = {l: k for k, l in enumerate(self._lanes)}
        pad = len(self._lanes)

        def index(table, width):
            out = np.full((len(self.possible_agents), width), pad, dtype=np.int64)
            for i, a in enumerate(self.possible_agents):
                out[i, : len(table[a])] = [pos[l] for l in table[a]]
            return out

        self._in_idx = index(self._in_lanes, self.max_lanes)
        self._out_idx = index(self._out_lanes, max(len(v) for v in self._out_lanes.values()))
        self.pressure = PhasePressure(scenario, self._lanes, self.max_phases)
        masks = scenario.padded()["action_mask"].numpy().astype(np.int8)
        self._masks = dict(zip(self.possible_agents, masks))
        self.engine = None
        self._seed = 0

    # --- spaces -------------------------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        return (self.max_phases * (("phase" in self.features) + ("pressure" in self.features))
                + self.max_lanes * (("count" in self.features) + ("waiting" in self.features)))

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, np.inf, (self.obs_dim,), np.float32)

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.max_phases)

    def action_mask(self, agent: str) -> np.ndarray:
        return self._masks[agent]

    # --- episode ------------------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._seed = seed
        if self.engine is not None:
            self.engine.close()
        self.engine = self.engine_factory(self._seed)
        self._seed += 1  # the next unseeded reset gets another engine seed (the demand file is fixed)
        self.agents = list(self.possible_agents)
        self.decisions = 0
        self.phase = {a: 0 for a in self.agents}  # index into action phases
        for a in self.agents:
            self.engine.set_tl_phase(a, self._inter[a].action_phases[0])
        counts, waiting = self.engine.get_lane_vehicle_count(), self.engine.get_lane_waiting_vehicle_count()
        return self._observe(counts, waiting), {a: {"action_mask": self.action_mask(a)} for a in self.agents}

    def step(self, actions: dict[str, int]):
        if not self.agents:
            raise RuntimeError("step() after the episode ended: call reset()")
        changed = []
        for a in self.agents:
            act = int(actions.get(a, self.phase[a]))
            n = len(self._inter[a].action_phases)
            if not 0 <= act < n:
                raise ValueError(f"agent '{a}': action {act} outside its {n} phases (see its action_mask)")
            if act != self.phase[a]:
                changed.append(a)
            self.phase[a] = act
        # a change shows the transition phase for `yellow` seconds, then the new phase; an intersection
        # without a transition phase switches at once
        delayed = []
        for a in changed:
            tp = self._inter[a].transition_phase
            if tp is not None and self.yellow > 0:
                self.engine.set_tl_phase(a, tp)
                delayed.append(a)
            else:
                self.engine.set_tl_phase(a, self._inter[a].action_phases[self.phase[a]])
        accrue = self.reward_kind == "travel_time"
        vehicle_seconds = np.zeros(len(self._lanes) + 1, np.float64)  # per lane, plus the padding slot
        for t in range(self.action_interval):
            if t == self.yellow:
                for a in delayed:
                    self.engine.set_tl_phase(a, self._inter[a].action_phases[self.phase[a]])
            self.engine.next_step()
            if accrue and t < self.action_interval - 1:  # each simulated second counts its vehicles once
                vehicle_seconds[:-1] += self._read_counts()
        self.decisions += 1
        counts, waiting = self.engine.get_lane_vehicle_count(), self.engine.get_lane_waiting_vehicle_count()
        obs = self._observe(counts, waiting)
        if accrue:
            vehicle_seconds[:-1] += self._counts  # the last second, as _observe read it
            r = -vehicle_seconds[self._in_idx].sum(1)
        else:
            r = self._rewards(counts, waiting)
        rewards = dict(zip(self.possible_agents, map(float, r)))
        done = self.decisions >= self.max_decisions
        term = {a: False for a in self.agents}
        trunc = {a: done for a in self.agents}
        infos = {a: {"action_mask": self.action_mask(a)} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, term, trunc, infos

    def metrics(self) -> dict[str, float]:
        """Evaluation metrics now (CityFlow's definitions on every engine)."""
        e = self.engine
        waiting = e.get_lane_waiting_vehicle_count()
        lanes = [l for a in self.possible_agents for l in self._in_lanes[a]]
        counts = e.get_lane_vehicle_count()
        in_network = sum(counts.values())
        out = {"average_travel_time": float(e.get_average_travel_time()),
               "queue_length": float(np.mean([waiting[l] for l in lanes])),
               "delay": float(sum(waiting.values()) / in_network) if in_network else 0.0}
        if hasattr(e, "throughput"):
            out["throughput"] = float(e.throughput)
        return out

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # --- internals ----------------------------------------------------------------------------------
    def _read_counts(self) -> np.ndarray:
        """Vehicles on every lane of ``self._lanes`` now: the engine's vectorised ``lane_counts`` when it has
        one (SUMO, whose dictionary would cost a call per lane), else its per-lane dictionary (CityFlow
        returns all lanes in one call)."""
        fast = getattr(self.engine, "lane_counts", None)
        if fast is not None:
            return fast(self._lanes)
        return self._lane_vector(self.engine.get_lane_vehicle_count())

    def _lane_vector(self, counts: dict[str, int]) -> np.ndarray:
        """A per-lane dict as an array over ``self._lanes`` (one C-level lookup of every lane)."""
        got = self._pick_lanes(counts) if len(self._lanes) > 1 else tuple(counts[l] for l in self._lanes)
        return np.fromiter(got, np.float32, len(self._lanes))

    def _vectors(self, counts: dict[str, int], waiting: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """Lane counts as arrays over ``self._lanes`` plus a trailing zero (the padding slot)."""
        return np.append(self._lane_vector(counts), 0.0), np.append(self._lane_vector(waiting), 0.0)

    def phase_pressures(self) -> np.ndarray:
        """``[N, max_phases]`` pressure of every action phase now (padded phases: ``-inf``), from the lane
        counts the last observation read (the engine only advances inside :meth:`step`)."""
        return self.pressure(self._counts)

    def _observe(self, counts: dict[str, int], waiting: dict[str, int]) -> dict[str, np.ndarray]:
        c, w = self._vectors(counts, waiting)
        self._counts = c[:-1]  # for phase_pressures(): no second read of every lane per decision
        parts = []
        if "phase" in self.features:
            onehot = np.zeros((len(self.possible_agents), self.max_phases), np.float32)
            onehot[np.arange(len(self.possible_agents)), [self.phase.get(a, 0) for a in self.possible_agents]] = 1.0
            parts.append(onehot)
        if "count" in self.features:
            parts.append(c[self._in_idx])
        if "waiting" in self.features:
            parts.append(w[self._in_idx])
        if "pressure" in self.features:
            p = self.pressure(c[:-1])
            parts.append(np.where(np.isfinite(p), p, 0.0).astype(np.float32))
        x = np.concatenate(parts, axis=1)
        return dict(zip(self.possible_agents, x))

    def _rewards(self, counts: dict[str, int], waiting: dict[str, int]) -> np.ndarray:
        c, w = self._vectors(counts, waiting)
        if self.reward_kind == "queue":
            return -w[self._in_idx].sum(1)
        if self.reward_kind == "waiting":
            return -c[self._in_idx].sum(1)
        return -np.abs(c[self._in_idx].sum(1) - c[self._out_idx].sum(1))


class PhasePressure:
    r"""Pressure of every action phase of every intersection, vectorised (Varaiya, 2013):

    .. math::
        w_{i,k} = \sum_{(l, m) \in \text{green}(i, k)} n_l - n_m

    over the lane links :math:`(l, m)` (incoming lane, outgoing lane) of the road links green in action
    phase ``k`` of intersection ``i``. One sparse product over all lanes: ``rows``/``lanes``/``signs``
    hold one ``+1`` (incoming) and one ``-1`` (outgoing) entry per lane link, so a call costs one
    ``bincount``. The same quantity as :func:`ipgnn.traffic.controllers.phase_pressures` (tested).

    Args:
        scenario: the loaded scenario.
        lanes: the lane ids that index the count vectors passed to ``__call__``.
        max_phases: width of the output (phases beyond an intersection's own are ``-inf``).
    """

    def __init__(self, scenario: Scenario, lanes: list[str], max_phases: int):
        pos = {l: k for k, l in enumerate(lanes)}
        rows, idx, signs = [], [], []
        self.valid = np.zeros((scenario.num_agents, max_phases), bool)
        for i, a in enumerate(scenario.intersections):
            for k, phase in enumerate(a.action_phases):
                self.valid[i, k] = True
                for li in a.phases[phase]:
                    link = a.road_links[li]
                    for lin, lout in link.lane_links:
                        row = i * max_phases + k
                        rows += [row, row]
                        idx += [pos[f"{link.start_road}_{lin}"], pos[f"{link.end_road}_{lout}"]]
                        signs += [1.0, -1.0]
        self.rows, self.idx = np.asarray(rows, np.int64), np.asarray(idx, np.int64)
        self.signs = np.asarray(signs, np.float64)
        self.shape = (scenario.num_agents, max_phases)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """``counts``: ``[len(lanes)]`` vehicles per lane -> ``[N, max_phases]`` pressures."""
        w = np.bincount(self.rows, weights=self.signs * counts[self.idx], minlength=self.shape[0] * self.shape[1])
        return np.where(self.valid, w.reshape(self.shape), -np.inf)
