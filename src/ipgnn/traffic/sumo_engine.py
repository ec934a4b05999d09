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

import collections
import functools
import itertools
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

import numpy as np

from ipgnn.traffic.scenario import Scenario, ScenarioError
from ipgnn.traffic.sumo_convert import SUMO_OPTIONS, SumoScenario, sumo_binary


@functools.lru_cache(maxsize=8)
def _schedule(routes: str) -> tuple[dict[str, int], np.ndarray]:
    """Vehicle ids and scheduled departure times of a route file, parsed once per process (every
    episode restarts the simulation, the schedule stays the same)."""
    vehicles = list(ET.parse(routes).getroot().iter("vehicle"))
    return ({v.get("id"): k for k, v in enumerate(vehicles)}, np.array([float(v.get("depart")) for v in vehicles]))


def _stamp(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _well_formed(path: str, size: int, mtime_ns: int) -> None:
    """Raise ``ET.ParseError`` unless ``path`` is well-formed XML (checked once per version of the file)."""
    for _, elem in ET.iterparse(path):
        elem.clear()


class SumoEngine:
    """A SUMO simulation of a converted scenario, one 1-second step per :meth:`next_step`.

    Args:
        scenario: the loaded CityFlow-format scenario.
        converted: its SUMO conversion (:func:`ipgnn.traffic.sumo_convert.convert`).
        seed: SUMO's random seed; SUMO takes a C ``int``, so it receives ``seed % 2**31``.
    """

    _owner: SumoEngine | None = None  # libsumo holds one simulation per process

    def __init__(self, scenario: Scenario, converted: SumoScenario, seed: int = 0):
        import libsumo

        if SumoEngine._owner is not None:  # starting a simulation ends the previous one in this process
            SumoEngine._owner.close()
        self.traci = libsumo
        self.scenario = scenario
        args = ["-n", str(converted.net), "-r", str(converted.routes), "--step-length", "1"]
        try:
            _well_formed(str(converted.net), *_stamp(converted.net))  # libsumo crashes on a truncated network
            libsumo.start([sumo_binary("sumo"), *args, "--seed", str(int(seed) % 2**31), *SUMO_OPTIONS])
            SumoEngine._owner = self
            self._index, self._scheduled = _schedule(str(converted.routes))
        except (OSError, ET.ParseError, libsumo.TraCIException, libsumo.FatalTraCIError) as exc:
            raise ScenarioError(
                f"SUMO could not read '{converted.net}' or '{converted.routes}' ({' '.join(str(exc).split())[:300]}); "
                f"delete the cached conversion '{converted.net.parent}' to rebuild it from the scenario"
            ) from None
        self._arrival = np.full(len(self._scheduled), np.nan)
        self.inserted = 0  # vehicles that entered the network so far
        # CityFlow lane id -> SUMO lane id
        self.lane_map = {
            f"{r.id}_{k}": f"{r.id}_{r.num_lanes - 1 - k}" for r in scenario.roads.values() for k in range(r.num_lanes)
        }
        for a in scenario.intersections:
            self.traci.trafficlight.setPhase(a.id, a.transition_phase or 0)
            self.traci.trafficlight.setPhaseDuration(a.id, 1e6)
        self._sumo_lanes = list(self.lane_map.values())
        self._cf_lanes = list(self.lane_map.keys())
        raw = getattr(libsumo, "_libsumo", None)  # the compiled getters, without libsumo's Python wrapper
        self._vehicle_number = raw.lane_getLastStepVehicleNumber if raw else libsumo.lane.getLastStepVehicleNumber
        self._halting_number = raw.lane_getLastStepHaltingNumber if raw else libsumo.lane.getLastStepHaltingNumber
        self._edge_vehicle_number = raw.edge_getLastStepVehicleNumber if raw else libsumo.edge.getLastStepVehicleNumber
        self._set_phase = raw.trafficlight_setPhase if raw else libsumo.trafficlight.setPhase
        self._set_phase_duration = raw.trafficlight_setPhaseDuration if raw else libsumo.trafficlight.setPhaseDuration

    # --- the CityFlow Engine API subset ------------------------------------------------------------
    def next_step(self) -> None:
        if not self.alive:
            raise RuntimeError(
                "this SUMO simulation was closed (libsumo runs one simulation per process, and "
                "another one was started since); reset the environment"
            )
        self.traci.simulationStep()
        now = self.get_current_time()
        self.inserted += self.traci.simulation.getDepartedNumber()
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

    def set_tl_phases(self, intersection_ids: Sequence[str], phases: Sequence[int]) -> None:
        """:meth:`set_tl_phase` for several intersections, with libsumo's compiled setters looped in C (``map``
        drained by a ``deque``); each intersection is independent, so all phases go first, then all durations."""
        collections.deque(map(self._set_phase, intersection_ids, phases), maxlen=0)
        collections.deque(map(self._set_phase_duration, intersection_ids, itertools.repeat(1e6)), maxlen=0)

    # Per-lane getters, measured cheaper than lane subscriptions, which SUMO fills at every simulated second
    # (bench_traffic.py, N = 96: 10.5 ms per decision with getters, 19.2 ms with subscriptions, engine and
    # wrapper together).
    def get_lane_vehicle_count(self) -> dict[str, int]:
        get = self.traci.lane.getLastStepVehicleNumber
        return {cf: get(su) for cf, su in zip(self._cf_lanes, self._sumo_lanes)}

    def get_lane_waiting_vehicle_count(self) -> dict[str, int]:
        get = self.traci.lane.getLastStepHaltingNumber
        return {cf: get(su) for cf, su in zip(self._cf_lanes, self._sumo_lanes)}

    # --- prepared reads for the environment's hot path (see TrafficSignalEnv) ------------------------
    def group_counter(self, groups: Sequence[Sequence[str]]) -> tuple[Callable[[], np.ndarray], np.ndarray]:
        """``(read, owner)`` for the vehicles on each group of lanes (CityFlow lane ids): ``read()`` gives the
        vehicles on some units now and ``owner[k]`` the group of unit k, so that group g holds
        ``read()[owner == g].sum()`` vehicles.

        When every group is made of whole roads, the units are those roads (SUMO's edge getter, one call per
        road: a road has several lanes), otherwise lanes; either way libsumo's compiled getter is mapped
        over precomputed SUMO ids, with no dictionary and no Python wrapper per call."""
        owner = {lane: g for g, group in enumerate(groups) for lane in group}
        roads = {lane.rsplit("_", 1)[0] for lane in owner}
        whole = all(
            r in self.scenario.roads
            and all(owner.get(f"{r}_{k}", -1) == owner.get(f"{r}_0") for k in range(self.scenario.roads[r].num_lanes))
            for r in roads
        )
        if whole:  # one edge call per road
            ids = sorted(roads)
            get = self._edge_vehicle_number
            index = np.array([owner[f"{r}_0"] for r in ids], np.int64)
        else:
            ids = [self.lane_map[l] for l in owner]
            get = self._vehicle_number
            index = np.fromiter(owner.values(), np.int64, len(owner))
        n = len(ids)
        return (lambda: np.fromiter(map(get, ids), np.float64, n)), index

    def lane_reader(self, lanes: Sequence[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """A function giving ``(vehicles, halted)`` on each of ``lanes`` (CityFlow lane ids) now, float32."""
        ids, n = [self.lane_map[l] for l in lanes], len(lanes)
        vehicles, halted = self._vehicle_number, self._halting_number
        return lambda: (np.fromiter(map(vehicles, ids), np.float32, n), np.fromiter(map(halted, ids), np.float32, n))

    def moving_near_stop_line(self, lanes: Sequence[str], within: float) -> np.ndarray:
        """Vehicles moving (speed above 0.1 m/s) within ``within`` metres of the end of each of ``lanes``
        (CityFlow lane ids), against SUMO's own lane lengths."""
        lane_api, veh = self.traci.lane, self.traci.vehicle
        su = [self.lane_map[l] for l in lanes]
        members = list(map(lane_api.getLastStepVehicleIDs, su))
        ids = list(itertools.chain.from_iterable(members))
        lane = np.repeat(np.arange(len(lanes)), [len(m) for m in members])
        position = np.fromiter(map(veh.getLanePosition, ids), np.float64, len(ids))
        speed = np.fromiter(map(veh.getSpeed, ids), np.float64, len(ids))
        length = np.fromiter(map(lane_api.getLength, su), np.float64, len(su))
        near = (position >= length[lane] - within) & (speed > 0.1)
        return np.bincount(lane[near], minlength=len(lanes)).astype(np.float64)

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
    def arrived_travel_time(self) -> float:
        """The average travel time of the vehicles that have arrived (0 before the first does, as CityFlow's),
        from their scheduled departure as :meth:`get_average_travel_time` counts it."""
        arrived = ~np.isnan(self._arrival)
        return float((self._arrival[arrived] - self._scheduled[arrived]).mean()) if arrived.any() else 0.0

    @property
    def alive(self) -> bool:
        return SumoEngine._owner is self

    def close(self) -> None:
        if SumoEngine._owner is self:
            self.traci.close()
            SumoEngine._owner = None
