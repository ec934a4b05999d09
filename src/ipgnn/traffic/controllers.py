"""Reference controllers: FixedTime and MaxPressure, at two levels.

- Engine level (:class:`FixedTime`, :class:`MaxPressure`, :func:`run_controller`): called every
  simulated second, with their own timing (min green, yellow) — the setting of the engine-agreement
  figures in the docs and tests.
- Decision level (:func:`fixed_time_policy`, :func:`max_pressure_policy`): ``obs -> joint action`` on
  the traffic environment, with the environment's own action interval and yellow, so they are
  evaluated exactly like a learned policy (``ipgnn-eval --controller maxpressure``).

Both levels share one pressure definition, :func:`phase_pressures`.
"""

from __future__ import annotations

import numpy as np
import torch

from ipgnn.traffic.scenario import Intersection, Scenario


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
