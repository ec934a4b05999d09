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

import functools
import xml.etree.ElementTree as ET
from typing import Optional

import numpy as np

from ipgnn.traffic.scenario import Scenario
from ipgnn.traffic.sumo_convert import SUMO_OPTIONS, SumoScenario, sumo_binary


@functools.lru_cache(maxsize=8)
def _schedule(routes: str) -> tuple[dict[str, int], np.ndarray]:
    """Vehicle ids and scheduled departure times of a route file, parsed once per process (every
    episode restarts the simulation, the schedule stays the same)."""
    vehicles = list(ET.parse(routes).getroot().iter("vehicle"))
    return ({v.get("id"): k for k, v in enumerate(vehicles)},
            np.array([float(v.get("depart")) for v in vehicles]))


class SumoEngine:
    """A SUMO simulation of a converted scenario, one 1-second step per :meth:`next_step`.

    Args:
        scenario: the loaded CityFlow-format scenario.
        converted: its SUMO conversion (:func:`ipgnn.traffic.sumo_convert.convert`).
        seed: SUMO's random seed; SUMO takes a C ``int``, so it receives ``seed % 2**31``.
    """

    _owner: Optional["SumoEngine"] = None  # libsumo holds one simulation per process

    def __init__(self, scenario: Scenario, converted: SumoScenario, seed: int = 0):
        import libsumo

        if SumoEngine._owner is not None:  # starting a simulation ends the previous one in this process
            SumoEngine._owner.close()
        self.traci = libsumo
        self.scenario = scenario
        libsumo.start([sumo_binary("sumo"), "-n", str(converted.net), "-r", str(converted.routes),
                       "--step-length", "1", "--seed", str(int(seed) % 2**31), *SUMO_OPTIONS])
        SumoEngine._owner = self
        self._index, self._scheduled = _schedule(str(converted.routes))
        self._arrival = np.full(len(self._scheduled), np.nan)
        self.inserted = 0  # vehicles that entered the network so far
        # CityFlow lane id -> SUMO lane id
        self.lane_map = {f"{r.id}_{k}": f"{r.id}_{r.num_lanes - 1 - k}"
                         for r in scenario.roads.values() for k in range(r.num_lanes)}
        for a in scenario.intersections:
            self.traci.trafficlight.setPhase(a.id, a.transition_phase or 0)
            self.traci.trafficlight.setPhaseDuration(a.id, 1e6)
        self._sumo_lanes = list(self.lane_map.values())
        self._cf_lanes = list(self.lane_map.keys())
        raw = getattr(libsumo, "_libsumo", None)  # the compiled getter, without libsumo's Python wrapper
        self._vehicle_number = raw.lane_getLastStepVehicleNumber if raw is not None else libsumo.lane.getLastStepVehicleNumber

    # --- the CityFlow Engine API subset ------------------------------------------------------------
    def next_step(self) -> None:
        if not self.alive:
            raise RuntimeError("this SUMO simulation was closed (libsumo runs one simulation per process, and "
                               "another one was started since); reset the environment")
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

    # Per-lane getters, once per decision, measured cheaper than lane subscriptions, which SUMO fills at
    # every simulated second (bench_traffic.py, N = 96: 10.5 ms per decision with getters, 19.2 ms with
    # subscriptions, engine and wrapper together).
    def get_lane_vehicle_count(self) -> dict[str, int]:
        get = self.traci.lane.getLastStepVehicleNumber
        return {cf: get(su) for cf, su in zip(self._cf_lanes, self._sumo_lanes)}

    def get_lane_waiting_vehicle_count(self) -> dict[str, int]:
        get = self.traci.lane.getLastStepHaltingNumber
        return {cf: get(su) for cf, su in zip(self._cf_lanes, self._sumo_lanes)}

    def lane_counts(self, lanes: list[str]) -> np.ndarray:
        """Vehicles on each of ``lanes`` (CityFlow lane ids) as a float32 array, for the reads the
        environment makes every simulated second: libsumo's compiled getter mapped over the SUMO lane ids,
        with no dictionary and no Python wrapper per lane."""
        return np.fromiter(map(self._vehicle_number, map(self.lane_map.__getitem__, lanes)), np.float32, len(lanes))

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

    @property
    def alive(self) -> bool:
        return SumoEngine._owner is self

    def close(self) -> None:
        if SumoEngine._owner is self:
            self.traci.close()
            SumoEngine._owner = None
