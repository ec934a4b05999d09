"""SUMO driven through ``libsumo``, behind the subset of CityFlow's ``Engine`` API the package uses.

Lane ids follow CityFlow's naming (``<road>_<lane>`` with CityFlow's lane order, innermost = 0), so
controllers and environments are engine-agnostic. ``libsumo`` runs one simulation per process.

Metrics use CityFlow's definitions on both engines:

- **average travel time**: over every vehicle whose *scheduled* entry time has passed — finished,
  running, or still waiting to be inserted — the time from its scheduled entry to its arrival (or to
  now, if it has not arrived); SUMO's actual depart time would hide insertion delay;
- **throughput**: vehicles that reached the end of their route.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Optional

import numpy as np

from ipgnn.traffic.scenario import Scenario
from ipgnn.traffic.sumo_convert import SUMO_OPTIONS, SumoScenario, sumo_binary


class SumoEngine:
    """A SUMO simulation of a converted scenario, one 1-second step per :meth:`next_step`.

    Args:
        scenario: the loaded CityFlow-format scenario.
        converted: its SUMO conversion (:func:`ipgnn.traffic.sumo_convert.convert`).
        seed: SUMO's random seed.
    """

    _running = False

    def __init__(self, scenario: Scenario, converted: SumoScenario, seed: int = 0):
        import libsumo

        if SumoEngine._running:
            libsumo.close()
        self.traci = libsumo
        self.scenario = scenario
        libsumo.start([sumo_binary("sumo"), "-n", str(converted.net), "-r", str(converted.routes),
                       "--step-length", "1", "--seed", str(seed), *SUMO_OPTIONS])
        SumoEngine._running = True
        sched = [float(v.get("depart")) for v in ET.parse(converted.routes).getroot().iter("vehicle")]
        ids = [v.get("id") for v in ET.parse(converted.routes).getroot().iter("vehicle")]
        self._scheduled = np.array(sched)
        self._index = {vid: k for k, vid in enumerate(ids)}
        self._arrival = np.full(len(ids), np.nan)
        self.inserted = 0  # vehicles that entered the network so far
        # CityFlow lane id -> SUMO lane id
        self.lane_map = {f"{r.id}_{k}": f"{r.id}_{r.num_lanes - 1 - k}"
                         for r in scenario.roads.values() for k in range(r.num_lanes)}
        for a in scenario.intersections:
            self.traci.trafficlight.setPhase(a.id, a.transition_phase or 0)
            self.traci.trafficlight.setPhaseDuration(a.id, 1e6)

    # --- the CityFlow Engine API subset ------------------------------------------------------------
    def next_step(self) -> None:
        self.traci.simulationStep()
        now = self.get_current_time()
        self.inserted += len(self.traci.simulation.getDepartedIDList())
        for vid in self.traci.simulation.getArrivedIDList():
            k = self._index.get(vid)
            if k is not None:
                self._arrival[k] = now

    def get_current_time(self) -> float:
        return float(self.traci.simulation.getTime())

    def set_tl_phase(self, intersection_id: str, phase: int) -> None:
        """Show CityFlow phase ``phase`` (an index into ``lightphases``) until told otherwise."""
        self.traci.trafficlight.setPhase(intersection_id, phase)
        self.traci.trafficlight.setPhaseDuration(intersection_id, 1e6)

    def get_lane_vehicle_count(self) -> dict[str, int]:
        lane = self.traci.lane
        return {cf: lane.getLastStepVehicleNumber(su) for cf, su in self.lane_map.items()}

    def get_lane_waiting_vehicle_count(self) -> dict[str, int]:
        lane = self.traci.lane
        return {cf: lane.getLastStepHaltingNumber(su) for cf, su in self.lane_map.items()}

    def get_average_travel_time(self) -> float:
        now = self.get_current_time()
        due = self._scheduled <= now
        if not due.any():
            return 0.0
        end = np.where(np.isnan(self._arrival), now, self._arrival)
        return float((end[due] - self._scheduled[due]).mean())

    # --- beyond CityFlow's API ----------------------------------------------------------------------
    @property
    def throughput(self) -> int:
        return int((~np.isnan(self._arrival)).sum())

    def close(self) -> None:
        if SumoEngine._running:
            self.traci.close()
            SumoEngine._running = False


def run_controller(engine, scenario: Scenario, controller, seconds: int) -> dict[str, float]:
    """Drive ``engine`` for ``seconds`` with ``controller(engine, time) -> {intersection: phase}``
    called every second; return the CityFlow-defined metrics."""
    for _ in range(seconds):
        for iid, phase in controller(engine, engine.get_current_time()).items():
            engine.set_tl_phase(iid, phase)
        engine.next_step()
    return {"average_travel_time": engine.get_average_travel_time(),
            "throughput": float(getattr(engine, "throughput", np.nan))}


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

    def pressures(self, counts: dict[str, int], a) -> list[float]:
        out = []
        for k in a.action_phases:
            p = 0.0
            for li in a.phases[k]:
                link = a.road_links[li]
                for lin, lout in link.lane_links:
                    p += counts[f"{link.start_road}_{lin}"] - counts[f"{link.end_road}_{lout}"]
            out.append(p)
        return out

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
            pr = self.pressures(counts, a)
            best = a.action_phases[int(np.argmax(pr))]
            if best != self.current.get(a.id):
                if a.id in self.current and a.transition_phase is not None and self.yellow > 0:
                    self.pending[a.id] = (best, t + self.yellow)
                    out[a.id] = a.transition_phase
                else:
                    self.current[a.id], self.since[a.id] = best, t
                    out[a.id] = best
        return out
