"""Reference controllers: FixedTime, MaxPressure, Advanced-MP and SOTL.

FixedTime and MaxPressure exist at two levels:

- Engine level (:class:`FixedTime`, :class:`MaxPressure`, :func:`run_controller`): called every
  simulated second, with their own timing (min green, yellow) — the setting of the engine-agreement
  figures in the docs and tests.
- Decision level (:func:`fixed_time_policy`, :func:`max_pressure_policy`): ``obs -> joint action`` on
  the traffic environment, with the environment's own action interval and yellow, so they are
  evaluated exactly like a learned policy (``ipgnn-eval --controller maxpressure``).

Both levels share one pressure definition, :func:`phase_pressures`.

Advanced-MP (:class:`AdvancedMaxPressure`) and SOTL (:class:`SelfOrganizingLights`) exist at the decision level
only, as the traffic field runs them (Advanced-XLight's code and LibSignal decide every 10 or 15 s): each is a
pure function of a constructed state (lane vectors and the current phases, tested against hand computations)
with a policy wrapper reading that state from the environment (:func:`advanced_max_pressure_policy`,
:func:`sotl_policy`). Both are phase-by-lane linear maps (:class:`PhaseLaneMap`) followed by a rule.
"""

from __future__ import annotations

import numpy as np
import torch

from ipgnn.traffic.scenario import Intersection, Scenario
from ipgnn.traffic.simulator_env import RUNNING_WITHIN


def phase_pressures(counts: dict[str, int], a: Intersection) -> list[float]:
    """Pressure of each action phase of ``a`` (Varaiya, 2013): over the lane links green in the phase,
    vehicles on the incoming lane minus vehicles on the outgoing lane."""
    out = []
    for k in a.action_phases:
        p = 0.0
        for li in a.phases[k]:
            link = a.road_links[li]
            for lin, lout in link.lane_links:
                p += counts[f"{link.start_road}_{lin}"] - counts[f"{link.end_road}_{lout}"]
        out.append(p)
    return out


def run_controller(engine, scenario: Scenario, controller, seconds: int) -> dict[str, float]:
    """Drive ``engine`` for ``seconds`` with ``controller(engine, time) -> {intersection: phase}``
    called every second; return the CityFlow-defined metrics."""
    for _ in range(seconds):
        for iid, phase in controller(engine, engine.get_current_time()).items():
            engine.set_tl_phase(iid, phase)
        engine.next_step()
    return {
        "average_travel_time": engine.get_average_travel_time(),
        "throughput": float(getattr(engine, "throughput", np.nan)),
    }


class FixedTime:
    """Cycle through the action phases, ``green`` seconds each, with ``yellow`` seconds of the
    transition phase between them."""

    def __init__(self, scenario: Scenario, green: float = 30.0, yellow: float = 5.0):
        self.scenario, self.green, self.yellow = scenario, green, yellow

    def __call__(self, engine, t: float) -> dict[str, int]:
        out = {}
        for a in self.scenario.intersections:
            phases = a.action_phases
            span = self.green + (self.yellow if a.transition_phase is not None else 0.0)
            k = int(t // span) % len(phases)
            in_yellow = a.transition_phase is not None and (t % span) < self.yellow
            out[a.id] = a.transition_phase if in_yellow else phases[k]
        return out


class MaxPressure:
    """Max-pressure control (Varaiya, 2013): every ``interval`` seconds, after at least ``min_green``
    seconds of green, pick the action phase whose green lane links carry the most pressure
    (vehicles on the incoming lane minus vehicles on the outgoing lane, summed over lane links),
    with ``yellow`` seconds of the transition phase on a change."""

    def __init__(self, scenario: Scenario, interval: float = 10.0, min_green: float = 10.0, yellow: float = 5.0):
        self.scenario, self.interval, self.min_green, self.yellow = scenario, interval, min_green, yellow
        self.current: dict[str, int] = {}
        self.since: dict[str, float] = {}
        self.pending: dict[str, tuple[int, float]] = {}

    def __call__(self, engine, t: float) -> dict[str, int]:
        out = {}
        counts = None
        for a in self.scenario.intersections:
            if a.id in self.pending:
                phase, until = self.pending[a.id]
                if t >= until:
                    del self.pending[a.id]
                    self.current[a.id], self.since[a.id] = phase, t
                    out[a.id] = phase
                continue
            if a.id in self.current and (t - self.since[a.id] < self.min_green or t % self.interval):
                continue
            if counts is None:
                counts = engine.get_lane_vehicle_count()
            pr = phase_pressures(counts, a)
            best = a.action_phases[int(np.argmax(pr))]
            if best != self.current.get(a.id):
                if a.id in self.current and a.transition_phase is not None and self.yellow > 0:
                    self.pending[a.id] = (best, t + self.yellow)
                    out[a.id] = a.transition_phase
                else:
                    self.current[a.id], self.since[a.id] = best, t
                    out[a.id] = best
        return out


def max_pressure_policy(traffic_env):
    """``obs -> action`` choosing, for every agent at every decision, its highest-pressure phase
    (:meth:`ipgnn.traffic.simulator_env.TrafficSignalEnv.phase_pressures`; ties go to the lowest index)."""

    def act(obs):
        return torch.from_numpy(traffic_env.phase_pressures().argmax(1))

    return act


def fixed_time_policy(traffic_env, decisions_per_phase: int = 3):
    """``obs -> action`` cycling every agent through its action phases, ``decisions_per_phase``
    decisions each (30 s at the default 10 s interval)."""

    def act(obs):
        k = traffic_env.decisions // decisions_per_phase
        return torch.tensor([k % len(a.action_phases) for a in traffic_env.scenario.intersections])

    return act


class PhaseLaneMap:
    r"""A sparse linear map from per-lane values to per-phase sums, for every intersection at once:

    .. math::
        y_{i,k} = \sum_l W_{(i,k),l}\, v_l

    built once from ``(agent i, phase slot k, lane id, weight)`` entries (repeated pairs are summed), applied
    with one ``bincount`` per call. ``lanes`` fixes the order of the vectors passed in.
    """

    def __init__(self, entries, lanes: list[str], shape: tuple[int, int]):
        pos = {l: k for k, l in enumerate(lanes)}
        width = max(len(lanes), 1)
        rows, idx, weights = [], [], []
        for i, k, lane, w in entries:
            rows.append(i * shape[1] + k)
            idx.append(pos[lane])
            weights.append(w)
        key = np.asarray(rows, np.int64) * width + np.asarray(idx, np.int64)
        key, inverse = np.unique(key, return_inverse=True)
        weight = np.bincount(inverse.ravel(), np.asarray(weights, np.float64), len(key))
        keep = weight != 0
        self.rows, self.idx, self.weights = key[keep] // width, key[keep] % width, weight[keep]
        self.shape = shape

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """``values`` ``[len(lanes)]`` -> ``[N, max_phases]`` (phase slots without entries: 0)."""
        out = np.bincount(self.rows, self.weights * values[self.idx], self.shape[0] * self.shape[1])
        return out.reshape(self.shape)


def _start_lanes(a: Intersection, links) -> list[str]:
    """The distinct incoming lanes that road links ``links`` (indices into ``a.road_links``) start from."""
    return sorted({f"{a.road_links[li].start_road}_{lin}" for li in links for lin, _ in a.road_links[li].lane_links})


class AdvancedMaxPressure:
    r"""Advanced-MP (Zhang et al., ICML 2022, "Expression might be enough", sec. 4.2; Advanced-XLight's
    ``advanced_maxpressure_agent.py``, read, not copied): max pressure on *efficient* pressure, keeping the
    current phase while the vehicles still running towards its green stop lines outweigh the best pressure.

    For intersection :math:`i`, over the through and left-turn road links :math:`(l \to m)` green in action
    phase :math:`k` (right turns are never part of a phase's movements there), with :math:`q` the halted
    vehicles (speed below 0.1 m/s) on a lane and :math:`r` the moving ones within ``within`` metres of its stop
    line (the "effective running vehicles"):

    .. math::
        P_{i,k} = \sum_{(l \to m) \in k} \Big( \sum_{\text{lanes } u \text{ of } l} q_u
                  - \frac{1}{|m|} \sum_{\text{lanes } w \text{ of } m} q_w \Big), \qquad
        D_{i,k} = \sum_{u \in \text{start lanes}(k)} r_u,

    .. math::
        a_i = \begin{cases} c_i & \text{if } W \cdot D_{i,c_i} \ge \max_k P_{i,k} \\
              \arg\max_k P_{i,k} & \text{otherwise} \end{cases}

    with :math:`c_i` the current phase. Published parameters: :math:`W = 1`, ``within`` = 167 m (the code's
    ``OBS_LENGTH``), 15-s decisions with 5 s of yellow (run here at the environment's interval). Their code
    applies the keep rule with 4 phases and plain argmax with 8; this applies the rule with every action phase
    of the scenario. Ties go to the lowest phase index.
    """

    def __init__(self, scenario: Scenario, lanes: list[str], max_phases: int, weight: float = 1.0):
        pressure, demand = [], []
        self.valid = np.zeros((scenario.num_agents, max_phases), bool)
        for i, a in enumerate(scenario.intersections):
            for k, phase in enumerate(a.action_phases):
                self.valid[i, k] = True
                links = [li for li in a.phases[phase] if a.road_links[li].kind != "turn_right"]
                for li in links:
                    link = a.road_links[li]
                    pressure += [(i, k, f"{link.start_road}_{u}", 1.0) for u in sorted({u for u, _ in link.lane_links})]
                    out = scenario.roads[link.end_road].num_lanes
                    pressure += [(i, k, f"{link.end_road}_{w}", -1.0 / out) for w in range(out)]
                demand += [(i, k, lane, 1.0) for lane in _start_lanes(a, links)]
        shape = (scenario.num_agents, max_phases)
        self.pressure, self.demand = PhaseLaneMap(pressure, lanes, shape), PhaseLaneMap(demand, lanes, shape)
        self.weight = float(weight)

    def __call__(self, halted: np.ndarray, running: np.ndarray, current: np.ndarray) -> np.ndarray:
        """Per-lane ``halted`` and ``running`` vehicles (the order of ``lanes``) and each agent's current action
        phase ``[N]`` -> the action phase of every agent ``[N]``."""
        p = np.where(self.valid, self.pressure(halted), -np.inf)
        d = self.demand(running)[np.arange(len(current)), current]
        return np.where(self.weight * d >= p.max(1), current, p.argmax(1))


class SelfOrganizingLights:
    r"""SOTL as LibSignal runs it (``agent/sotl.py``, read, not copied; Cools et al., 2013): after at least
    ``t_min`` seconds in its phase, an intersection moves to the next action phase (cyclically) when

    .. math::
        (g \le \theta_g \wedge \rho > \theta_\rho) \vee (g = 0 \wedge \rho > 0),

    with :math:`g` the halted vehicles on the lanes the current phase lets go (the start lanes of its green
    road links) and :math:`\rho` those on every other incoming lane that some road link starts from.
    LibSignal's parameters: :math:`\theta_g` = ``min_green_vehicle`` = 3, :math:`\theta_\rho` =
    ``max_red_vehicle`` = 6, ``t_min`` = 5 s.
    """

    def __init__(
        self,
        scenario: Scenario,
        lanes: list[str],
        max_phases: int,
        min_green_vehicle: float = 3,
        max_red_vehicle: float = 6,
        t_min: float = 5.0,
    ):
        green, every = [], []
        for i, a in enumerate(scenario.intersections):
            for k, phase in enumerate(a.action_phases):
                green += [(i, k, lane, 1.0) for lane in _start_lanes(a, a.phases[phase])]
            every += [(i, 0, lane, 1.0) for lane in _start_lanes(a, range(len(a.road_links)))]
        self.green = PhaseLaneMap(green, lanes, (scenario.num_agents, max_phases))
        self.every = PhaseLaneMap(every, lanes, (scenario.num_agents, 1))
        self.num_phases = np.array([len(a.action_phases) for a in scenario.intersections], np.int64)
        self.min_green_vehicle, self.max_red_vehicle, self.t_min = min_green_vehicle, max_red_vehicle, t_min

    def __call__(self, halted: np.ndarray, current: np.ndarray, seconds_in_phase: np.ndarray) -> np.ndarray:
        """Per-lane ``halted`` vehicles, each agent's current action phase and the seconds it has held it
        ``[N]`` -> the action phase of every agent ``[N]``."""
        g = self.green(halted)[np.arange(len(current)), current]
        red = self.every(halted)[:, 0] - g
        switch = (seconds_in_phase >= self.t_min) & (
            ((g <= self.min_green_vehicle) & (red > self.max_red_vehicle)) | ((g == 0) & (red > 0))
        )
        return np.where(switch, (current + 1) % self.num_phases, current)


def advanced_max_pressure_policy(traffic_env, weight: float = 1.0, within: float = RUNNING_WITHIN):
    """``obs -> action``: :class:`AdvancedMaxPressure` on the environment's lanes at every decision."""
    rule = AdvancedMaxPressure(traffic_env.scenario, traffic_env.lane_ids, traffic_env.max_phases, weight)

    def act(obs):
        halted = traffic_env.lane_halted()
        running = traffic_env.moving_near_stop_line(within)
        return torch.from_numpy(rule(halted, running, traffic_env.current_phases))

    return act


def sotl_policy(traffic_env, min_green_vehicle: float = 3, max_red_vehicle: float = 6, t_min: float = 5.0):
    """``obs -> action``: :class:`SelfOrganizingLights` at every decision, the time in phase counted in the
    environment's decisions (``action_interval`` seconds each, yellow included, as LibSignal counts it)."""
    rule = SelfOrganizingLights(
        traffic_env.scenario, traffic_env.lane_ids, traffic_env.max_phases, min_green_vehicle, max_red_vehicle, t_min
    )
    held = {"since": np.zeros(traffic_env.scenario.num_agents, np.int64)}  # the decision of each agent's last change

    def act(obs):
        current = traffic_env.current_phases
        if traffic_env.decisions == 0:  # a new episode
            held["since"] = np.zeros_like(current)
        seconds = (traffic_env.decisions - held["since"]) * traffic_env.action_interval
        a = rule(traffic_env.lane_halted(), current, seconds)
        held["since"] = np.where(a != current, traffic_env.decisions, held["since"])
        return torch.from_numpy(a)

    return act
