r"""The simulator environment of traffic-signal control: a PettingZoo ``ParallelEnv`` over a CityFlow or SUMO
engine, in which every signalised intersection is an agent. It knows engines, phases and lanes, and nothing of
graphs or of ``env.*`` configs: :mod:`ipgnn.envs.traffic_graph` builds it from a config and wraps it as the
graph task ``env.task: traffic``. The ``traffic`` package never imports :mod:`ipgnn.envs` (its array protocol
comes from :mod:`ipgnn.array_env`).

Per decision (``action_interval`` simulated seconds, default 10):

- **action**: the next phase, an index into the agent's *action phases* (its CityFlow phases without
  the transition phase); agents with fewer phases than the largest intersection get an
  ``action_mask`` in their info. A change of phase first shows the transition phase for ``yellow``
  seconds (default 5) within the interval.
- **observation** (``features``, in this order): ``phase``, one-hot of the current action phase;
  ``count`` and ``waiting``, the vehicle count and the waiting (halted) count of each incoming lane,
  padded with zeros to the largest intersection; ``pressure``, the pressure of each action phase
  (Varaiya 2013, :class:`PhasePressure`: the information MaxPressure acts on), zero for padded phases;
  ``running``, the vehicles moving (above 0.1 m/s) within :data:`RUNNING_WITHIN` metres of each incoming
  lane's stop line, Advanced-XLight's "effective running vehicles" (Zhang et al., 2022: the information
  Advanced-MP acts on beside the halted queues), padded with zeros. Default: the first four
  (:data:`DEFAULT_FEATURES`).
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
scheduled entry has passed, counted from that time to its arrival or to now: the figure LibSignal reports),
``average_travel_time_arrived`` (the same over the vehicles that have arrived only, 0 before any has; the
figure of tables that count finished trips), ``throughput`` (vehicles that completed their route),
``queue_length`` (mean waiting vehicles per incoming lane of the signalised intersections) and ``delay``
(the fraction of the vehicles in the network that are waiting).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from ipgnn.array_env import ArrayParallelEnv
from ipgnn.traffic.scenario import Scenario

REWARDS = ("travel_time", "queue", "pressure", "waiting")
FEATURES = ("phase", "count", "waiting", "pressure", "running")
DEFAULT_FEATURES = FEATURES[:4]
RUNNING_WITHIN = 167.0  # metres: Advanced-XLight's window for effective running vehicles (its Advanced-MP's)


class TrafficSignalEnv(ArrayParallelEnv):
    """Signal control on a scenario, over an engine made by ``engine_factory(seed)``.

    Args:
        scenario: the loaded scenario.
        engine_factory: ``seed -> engine`` with CityFlow's ``Engine`` API subset (``next_step``,
            ``set_tl_phase``, ``get_lane_vehicle_count``, ``get_lane_waiting_vehicle_count``,
            ``get_average_travel_time``, ``get_current_time``) and ``close``.
        action_interval, yellow, max_decisions, reward, features: see the module docstring.
    """

    metadata = {"name": "traffic_signal_v0", "render_modes": []}

    def __init__(
        self,
        scenario: Scenario,
        engine_factory: Callable[[int], Any],
        action_interval: int = 10,
        yellow: int = 5,
        max_decisions: int = 100,
        reward: str = "travel_time",
        features: tuple[str, ...] = DEFAULT_FEATURES,
    ):
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if not features or any(f not in FEATURES for f in features):
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {features!r}")
        if action_interval < 1 or max_decisions < 1:
            raise ValueError(
                f"action_interval ({action_interval} s) and max_decisions ({max_decisions}) must be at least 1"
            )
        if not 0 <= yellow < action_interval:
            raise ValueError(f"yellow ({yellow} s) must be from 0 to action_interval - 1 ({action_interval - 1} s)")
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
        self._action_mask = masks.astype(bool)
        self._in_groups = [self._in_lanes[a] for a in self.possible_agents]
        self._in_valid = self._in_idx < pad
        # the incoming lanes once each, as positions in self._lanes and as names (the `running` feature reads
        # vehicle positions on these only: exit roads' vehicles never enter an observation)
        self._in_pos = np.unique(self._in_idx[self._in_valid])
        self._in_names = [self._lanes[k] for k in self._in_pos]
        # per agent: its number of action phases, the engine phase id of each ([N, max_phases], padded with the
        # first) and its transition phase (-1: none)
        inters = [self._inter[a] for a in self.possible_agents]
        self._num_phases = np.array([len(a.action_phases) for a in inters], np.int64)
        self._phase_ids = np.array(
            [list(a.action_phases) + [a.action_phases[0]] * (self.max_phases - len(a.action_phases)) for a in inters],
            np.int64,
        )
        self._transition = np.array(
            [-1 if a.transition_phase is None else a.transition_phase for a in inters], np.int64
        )
        self._phase = np.zeros(len(self.possible_agents), np.int64)
        self._agent_ids = np.array(self.possible_agents, dtype=object)
        self._eye = np.eye(self.max_phases, dtype=np.float32)
        self._feature_order = [f for f in FEATURES if f in self.features]  # the layout: always FEATURES' order
        self._pad = np.zeros(len(self._lanes) + 1, np.float64)  # a lane vector plus the padding slot
        self.engine = None
        self._seed = 0

    # --- spaces -------------------------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        per_phase = ("phase" in self.features) + ("pressure" in self.features)
        per_lane = ("count" in self.features) + ("waiting" in self.features) + ("running" in self.features)
        return self.max_phases * per_phase + self.max_lanes * per_lane

    # PettingZoo's idiom (its parallel_api_test asks for it): the same space object on every call. B019: the
    # class-level cache keeps each instance alive for the process's lifetime.
    @functools.cache  # noqa: B019
    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, np.inf, (self.obs_dim,), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.max_phases)

    def action_mask(self, agent: str) -> np.ndarray:
        return self._masks[agent]

    # --- episode ------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        x, _ = self.reset_arrays(seed)
        return dict(zip(self.possible_agents, x)), {a: {"action_mask": self.action_mask(a)} for a in self.agents}

    def step(self, actions: dict[str, int]):
        if not self.agents:
            raise RuntimeError("step() after the episode ended: call reset()")
        act = np.fromiter(
            (actions.get(a, p) for a, p in zip(self.possible_agents, self._phase)), np.int64, len(self.possible_agents)
        )
        x, r, term, trunc, _ = self.step_arrays(act)
        agents = list(self.possible_agents)
        return (
            dict(zip(agents, x)),
            dict(zip(agents, map(float, r))),
            dict(zip(agents, map(bool, term))),
            dict(zip(agents, map(bool, trunc))),
            {a: {"action_mask": self.action_mask(a)} for a in agents},
        )

    # --- the same episode on arrays (ArrayParallelEnv: agents in possible_agents order, no dicts) --------
    def reset_arrays(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Start an episode: ``(x [N, obs_dim] float32, action_mask [N, max_phases] bool)``."""
        if seed is not None:
            self._seed = seed
        if self.engine is not None:
            self.engine.close()
        self.engine = self.engine_factory(self._seed)
        self._seed += 1  # the next unseeded reset gets another engine seed (the demand file is fixed)
        self._prepare_reads()
        self.agents = list(self.possible_agents)
        self.decisions = 0
        self._phase = np.zeros(len(self.possible_agents), np.int64)  # index into each agent's action phases
        self._set_phases(self._agent_ids, self._phase_ids[:, 0])
        return self._observe(*self._read_lanes()), self._action_mask

    def step_arrays(self, act: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One decision with action ``act[i]`` (an index into agent i's action phases) for every agent:
        ``(x [N, obs_dim] float32, reward [N] float64, terminated [N] (never), truncated [N] (every agent at
        max_decisions), action_mask [N, max_phases] bool)``."""
        if not self.agents:
            raise RuntimeError("step() after the episode ended: call reset()")
        act = np.asarray(act, np.int64)
        bad = np.flatnonzero((act < 0) | (act >= self._num_phases))
        if bad.size:
            i = bad[0]
            raise ValueError(
                f"agent '{self.possible_agents[i]}': action {act[i]} outside its {self._num_phases[i]} "
                "phases (see its action_mask)"
            )
        changed = np.flatnonzero(act != self._phase)
        self._phase = act
        # a change shows the transition phase for `yellow` seconds, then the new phase; an intersection
        # without a transition phase switches at once
        ids, chosen = self._agent_ids, self._phase_ids[np.arange(len(act)), act]
        yellow = (self._transition[changed] >= 0) & (self.yellow > 0)
        delayed = changed[yellow]
        self._set_phases(ids[changed], np.where(yellow, self._transition[changed], chosen[changed]))
        accrue = self.reward_kind == "travel_time"
        read, owner = self._incoming
        unit_seconds = 0  # vehicle-seconds per unit of the engine's incoming read (lanes or roads)
        next_step, last = self.engine.next_step, self.action_interval - 1
        for t in range(self.action_interval):
            if t == self.yellow and delayed.size:
                self._set_phases(ids[delayed], chosen[delayed])
            next_step()
            if accrue and t < last:  # each simulated second counts its vehicles once
                unit_seconds = unit_seconds + read()
        self.decisions += 1
        c, w = self._read_lanes()
        x = self._observe(c, w)
        if accrue:
            weights = np.broadcast_to(np.asarray(unit_seconds, np.float64), owner.shape)
            vehicle_seconds = np.bincount(owner, weights, len(ids) + 1)[:-1]  # per agent (slot N: no agent)
            self._pad[:-1] = c
            r = -(vehicle_seconds + self._pad[self._in_idx].sum(1))  # the last second, from the same read
        else:
            r = self._rewards(c, w)
        done = self.decisions >= self.max_decisions
        if done:
            self.agents = []
        n = len(ids)
        return x, r, np.zeros(n, bool), np.full(n, done), self._action_mask

    def metrics(self) -> dict[str, float]:
        """Evaluation metrics now (CityFlow's definitions on every engine)."""
        e = self.engine
        counts, waiting = self._read_lanes()
        in_network = float(sum(e.get_lane_vehicle_count().values()))
        out = {
            "average_travel_time": float(e.get_average_travel_time()),
            "queue_length": float(np.append(waiting, 0.0)[self._in_idx][self._in_valid].mean()),
            "delay": float(sum(e.get_lane_waiting_vehicle_count().values()) / in_network) if in_network else 0.0,
        }
        if hasattr(e, "throughput"):
            out["throughput"] = float(e.throughput)
        if hasattr(e, "arrived_travel_time"):  # the vehicles that left the network only (see the engines)
            out["average_travel_time_arrived"] = float(e.arrived_travel_time)
        return out

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # --- internals ----------------------------------------------------------------------------------
    def _prepare_reads(self) -> None:
        """The engine's prepared reads for this episode, or its per-lane dictionaries where it has none:

        - ``self._incoming``: ``(read, owner)``, ``read()`` the vehicles on some units (lanes or roads) now and
          ``owner`` each unit's agent (``N``: none), so that the vehicles on agent i's incoming lanes are
          ``read()[owner == i].sum()`` (the travel-time reward reads it every simulated second, sums the
          arrays and maps them to agents once per decision);
        - ``self._read_lanes()``: ``(vehicles, halted)`` on every lane of ``self._lanes`` now, float32 (once
          per decision, for the observation)."""
        e = self.engine
        prepare = getattr(e, "group_counter", None)
        incoming = prepare(self._in_groups) if prepare is not None else None
        if incoming is None:
            owner = np.full(len(self._lanes) + 1, len(self.possible_agents), np.int64)
            owner[self._in_idx] = np.arange(len(self.possible_agents))[:, None]
            incoming = (lambda: self._lane_vector(e.get_lane_vehicle_count()), owner[:-1])
        prepare = getattr(e, "lane_reader", None)
        read = prepare(self._lanes) if prepare is not None else None
        if read is None:

            def read() -> tuple[np.ndarray, np.ndarray]:
                return (
                    self._lane_vector(e.get_lane_vehicle_count()),
                    self._lane_vector(e.get_lane_waiting_vehicle_count()),
                )

        self._incoming, self._read_lanes = incoming, read

    def _set_phases(self, ids: np.ndarray, phases: np.ndarray) -> None:
        """Engine phase ``phases[k]`` at intersection ``ids[k]``: one batched engine call where the engine has
        one (``set_tl_phases``), else one ``set_tl_phase`` per intersection."""
        ids, phases = ids.tolist(), phases.tolist()
        batch = getattr(self.engine, "set_tl_phases", None)
        if batch is not None:
            batch(ids, phases)
        else:
            for tl, phase in zip(ids, phases):
                self.engine.set_tl_phase(tl, phase)

    def _lane_vector(self, counts: dict[str, int]) -> np.ndarray:
        """A per-lane dict as an array over ``self._lanes`` (one C-level lookup of every lane)."""
        got = self._pick_lanes(counts) if len(self._lanes) > 1 else tuple(counts[l] for l in self._lanes)
        return np.fromiter(got, np.float32, len(self._lanes))

    def phase_pressures(self) -> np.ndarray:
        """``[N, max_phases]`` pressure of every action phase now (padded phases: ``-inf``), from the lane
        counts the last observation read (the engine only advances inside :meth:`step`)."""
        return self.pressure(self._counts)

    @property
    def lane_ids(self) -> list[str]:
        """Every lane the environment reads (incoming and outgoing lanes of every agent), in the order of
        :meth:`lane_halted` and :meth:`moving_near_stop_line`."""
        return self._lanes

    @property
    def current_phases(self) -> np.ndarray:
        """``[N]`` each agent's current action phase (an index into its action phases)."""
        return self._phase.copy()

    def lane_halted(self) -> np.ndarray:
        """Halted vehicles (speed below 0.1 m/s) on each of :attr:`lane_ids`, as the last observation read them."""
        return np.asarray(self._halted, np.float64)

    def moving_near_stop_line(self, within: float) -> np.ndarray:
        """Moving vehicles (speed above 0.1 m/s) within ``within`` metres of the stop line on each of
        :attr:`lane_ids` now (the engine's ``moving_near_stop_line``)."""
        return self.engine.moving_near_stop_line(self._lanes, within)

    def _observe(self, counts: np.ndarray, waiting: np.ndarray) -> np.ndarray:
        """``[N, obs_dim]`` float32 from the per-lane vectors over ``self._lanes`` (every value an integer:
        exact in float32), written column block by column block into one array."""
        self._counts, self._halted = counts, waiting  # for phase_pressures() and the rules: no second read
        out = np.empty((len(self.possible_agents), self.obs_dim), np.float32)
        col, pad = 0, self._pad  # pad: the lanes plus a zero slot that padded lane indices point at
        for feature in self._feature_order:
            if feature == "phase":
                out[:, col : col + self.max_phases] = self._eye[self._phase]
                col += self.max_phases
            elif feature == "pressure":
                out[:, col : col + self.max_phases] = self.pressure.padded_with_zeros(counts)
                col += self.max_phases
            else:
                if feature == "running":
                    pad[self._in_pos] = self.engine.moving_near_stop_line(self._in_names, RUNNING_WITHIN)
                else:
                    pad[:-1] = counts if feature == "count" else waiting
                out[:, col : col + self.max_lanes] = pad[self._in_idx]
                col += self.max_lanes
        return out

    def _rewards(self, counts: np.ndarray, waiting: np.ndarray) -> np.ndarray:
        c, w = np.append(counts, 0.0), np.append(waiting, 0.0)
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
    phase ``k`` of intersection ``i``. One sparse product over all lanes: ``rows``/``idx``/``signs``
    hold the summed weight of each (phase, lane) pair (``+1`` per lane link it enters, ``-1`` per link it
    leaves), so a call costs one ``bincount``. The same quantity as
    :func:`ipgnn.traffic.controllers.phase_pressures` (tested).

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
        # the same (row, lane) pair recurs (a lane in several green links): merged, weights summed, zeros dropped
        key = np.asarray(rows, np.int64) * max(len(lanes), 1) + np.asarray(idx, np.int64)
        key, inverse = np.unique(key, return_inverse=True)
        weight = np.bincount(inverse.ravel(), np.asarray(signs, np.float64), len(key))
        keep = weight != 0
        self.rows, self.idx, self.signs = key[keep] // max(len(lanes), 1), key[keep] % max(len(lanes), 1), weight[keep]
        self.shape = (scenario.num_agents, max_phases)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """``counts``: ``[len(lanes)]`` vehicles per lane -> ``[N, max_phases]`` pressures (padded phases: -inf)."""
        return np.where(self.valid, self.padded_with_zeros(counts), -np.inf)

    def padded_with_zeros(self, counts: np.ndarray) -> np.ndarray:
        """The same pressures with 0 for the padded phases (they have no entries), as the observation has them."""
        w = np.bincount(self.rows, weights=self.signs * counts[self.idx], minlength=self.shape[0] * self.shape[1])
        return w.reshape(self.shape)
