"""The real CityFlow engine (``import cityflow``), when it is installed.

CityFlow is not on PyPI: build it from its public repository (see the README). Its ``Engine`` already
has the API the traffic environment uses (``next_step``, ``set_tl_phase``, ``get_lane_vehicle_count``,
``get_lane_waiting_vehicle_count``, ``get_average_travel_time``, ``get_current_time``); this adapter
writes the engine's config file, gives every environment its own engine (:class:`CityFlowEngine`: a pool,
because CityFlow's engine can hang when destroyed), and re-seeds it between episodes with
``set_random_seed(seed)`` followed by ``reset(seed=False)``.

CityFlow's seed drives its tie-breaks: each vehicle's priority at conflicts and a random first lane among
equivalent ones. Whether that changes an episode depends on the scenario. Measured: on Hangzhou 4x4 and on
small generated grids, fresh engines seeded 0, 1 and 7 (and the environment under FixedTime and
MaxPressure, seeds 0, 1 and 1000003) give bit-identical episodes, so there every evaluation episode is
the same one and ``train.eval_episodes: 1`` is enough (the shipped Hangzhou config has 1); on Manhattan-96
(three-lane avenues) FixedTime's ATT differs between seeds (390.7 s and 391.0 s), so seeds matter there.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ipgnn.traffic.scenario import Scenario, ScenarioError, scenario_digest


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[Any]:
    """Capture what C++ code writes to file descriptor 2 into ``path``; ``.text`` holds it afterwards (and it
    is passed on to ``sys.stderr`` unless the caller treats it as an error)."""
    said = types.SimpleNamespace(text="")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "w+b") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield said
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                said.text = sink.read(64 * 1024).decode("utf-8", "replace")
    finally:
        os.close(saved)
    if said.text and "failed" not in said.text:
        sys.stderr.write(said.text)


def cityflow_available() -> bool:
    try:
        import cityflow  # noqa: F401
    except ImportError:
        return False
    return True


class CityFlowEngine:
    """CityFlow on a scenario, owned by one environment from construction to :meth:`close`.

    Ownership is as strict as SUMO's, without SUMO's one-simulation-per-process limit: each
    ``CityFlowEngine`` holds its own ``cityflow.Engine``, so two environments on one scenario never reset
    or advance each other's simulation (tested). ``close()`` hands the engine back to a per-process pool
    keyed by the scenario's *content* digest (:func:`~ipgnn.traffic.scenario.scenario_digest`), and the next
    ``CityFlowEngine`` on the same files takes it and resets it, so an environment that resets every
    episode reuses one engine; a scenario regenerated with other contents, even at the same path, gets a
    new engine, never a stale one. Engines are never destroyed: deleting a CityFlow ``Engine`` can hang in
    its thread-joining loop (measured here: 3 of 4 deletions with ``thread_num=2`` hung for 20 s; 0 of 4
    with 1 thread; 0 of 4 interpreter exits with a live engine of 2 threads), so idle engines stay in the
    pool until the process ends. The config file CityFlow reads at construction lives in a temporary
    folder that is removed as soon as the engine has read it.
    """

    _pool: dict[str, list[Any]] = {}  # idle engines per scenario digest and thread count
    _created: list[Any] = []  # every engine this process made: kept alive until it ends (see above)
    _lane_order: dict[str, dict[str, int]] = {}  # per pool key: lane id -> position in the engine's lane order

    def __init__(self, scenario: Scenario, seed: int = 0, threads: int = 1, key: str | None = None):
        self.scenario = scenario
        self._key = f"{key or scenario_digest(scenario)}:{int(threads)}"
        idle = CityFlowEngine._pool.setdefault(self._key, [])
        self.eng = idle.pop() if idle else self._create(scenario, seed, threads)
        self.eng.set_random_seed(int(seed) % 2**31)  # a C int
        self.eng.reset(seed=False)
        self._seen: set[str] = set()
        self._running: set[str] = set()
        # the read-only accessors `ipgnn-data build-cityflow` adds (its docstring, change 5); upstream has none
        self._accessors = hasattr(self.eng, "get_lane_vehicle_count_array")

    @staticmethod
    def _create(scenario: Scenario, seed: int, threads: int) -> Any:
        import cityflow

        workdir = Path(tempfile.mkdtemp(prefix="ipgnn-cityflow-"))
        try:
            config = {
                "interval": 1.0,
                "seed": int(seed) % 2**31,
                "dir": "",
                "roadnetFile": str(scenario.roadnet_path),
                "flowFile": str(scenario.flow_path),
                "rlTrafficLight": True,
                "laneChange": False,
                "saveReplay": False,
                "roadnetLogFile": "",
                "replayLogFile": "",
            }
            path = workdir / "config.json"
            path.write_text(json.dumps(config))
            with _stderr_to(workdir / "stderr.txt") as said:
                eng = cityflow.Engine(str(path), thread_num=int(threads))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        CityFlowEngine._created.append(eng)
        if "failed" in said.text:  # CityFlow reports a file it cannot read on stderr and builds an empty engine
            message = " ".join(said.text.split())[:300]
            raise ScenarioError(
                f"CityFlow could not read '{scenario.roadnet_path}' or '{scenario.flow_path}' ({message}); they "
                "must be CityFlow's JSON (no NaN or Infinity): were they changed after loading?"
            )
        return eng

    @classmethod
    def idle_engines(cls) -> int:
        """Engines waiting in the pool (for tests and diagnostics)."""
        return sum(len(v) for v in cls._pool.values())

    def next_step(self) -> None:
        self.eng.next_step()
        if not self._accessors:  # upstream CityFlow: finished vehicles are the ones seen running, now gone
            self._running = set(self.eng.get_vehicles(include_waiting=False))
            self._seen |= self._running

    @property
    def throughput(self) -> int:
        """Vehicles that entered and have left the network (completed their route)."""
        if self._accessors:
            return int(self.eng.get_finished_vehicle_count())
        return len(self._seen - self._running)

    @property
    def arrived_travel_time(self) -> float:
        """The average travel time of the vehicles that have left the network (0 before the first does, as
        CityFlow's own average is 0 with no vehicle), the "arrived vehicles only" figure;
        :meth:`get_average_travel_time` also counts the vehicles still in it. Needs the
        ``get_finished_travel_time`` accessor of ``ipgnn-data build-cityflow``: NaN on upstream CityFlow, which
        does not expose the sum."""
        get = getattr(self.eng, "get_finished_travel_time", None)
        if get is None:
            return float("nan")
        n = self.throughput
        return float(get()) / n if n else 0.0

    # --- prepared reads for the environment's hot path (see TrafficSignalEnv) ----------------------------
    def _order(self) -> dict[str, int]:
        """Lane id -> its position in the engine's lane order (the arrays' order), once per scenario."""
        order = CityFlowEngine._lane_order.get(self._key)
        if order is None:
            order = CityFlowEngine._lane_order[self._key] = {l: k for k, l in enumerate(self.eng.get_lane_ids())}
        return order

    def _positions(self, lanes: Sequence[str]) -> np.ndarray:
        order = self._order()
        return np.array([order[l] for l in lanes], np.int64)

    def group_counter(self, groups: Sequence[Sequence[str]]) -> tuple[Callable[[], np.ndarray], np.ndarray] | None:
        """``(read, owner)`` for the vehicles on each group of lanes (see ``SumoEngine.group_counter``): ``read``
        is ``get_lane_vehicle_count_array`` itself (every lane in the engine's order, one NumPy array;
        added by ``ipgnn-data build-cityflow``) and ``owner`` each lane's group (``len(groups)``: none).
        ``None`` on upstream CityFlow, whose only getter builds a dictionary (the environment then uses it)."""
        if not self._accessors:
            return None
        order = self._order()
        owner = np.full(len(order), len(groups), np.int64)
        for g, group in enumerate(groups):
            owner[[order[l] for l in group]] = g
        return self.eng.get_lane_vehicle_count_array, owner

    def lane_reader(self, lanes: Sequence[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]] | None:
        """A function giving ``(vehicles, halted)`` on each of ``lanes`` now, float32, from the two NumPy reads;
        ``None`` on upstream CityFlow (see :meth:`group_counter`)."""
        if not self._accessors:
            return None
        pos, eng = self._positions(lanes), self.eng
        return lambda: (
            eng.get_lane_vehicle_count_array()[pos].astype(np.float32),
            eng.get_lane_vehicle_count_array(True)[pos].astype(np.float32),
        )

    def moving_near_stop_line(self, lanes: Sequence[str], within: float) -> np.ndarray:
        """Vehicles moving (speed above 0.1 m/s) within ``within`` metres of the end of each of ``lanes``, as
        Advanced-XLight counts them: a vehicle's distance along its lane against the length of its road
        (``Road.length``, the road's points; CityFlow's lanes are shorter by the intersections' widths)."""
        eng, roads = self.eng, self.scenario.roads
        on_lane = eng.get_lane_vehicles()
        members = [on_lane.get(l, ()) for l in lanes]
        ids = list(itertools.chain.from_iterable(members))
        lane = np.repeat(np.arange(len(lanes)), [len(m) for m in members])
        distance, speed = eng.get_vehicle_distance(), eng.get_vehicle_speed()
        d = np.fromiter(map(distance.__getitem__, ids), np.float64, len(ids))
        v = np.fromiter(map(speed.__getitem__, ids), np.float64, len(ids))
        length = np.array([roads[l.rsplit("_", 1)[0]].length for l in lanes], np.float64)
        near = (d >= length[lane] - within) & (v > 0.1)
        return np.bincount(lane[near], minlength=len(lanes)).astype(np.float64)

    def get_current_time(self) -> float:
        return float(self.eng.get_current_time())

    def set_tl_phase(self, intersection_id: str, phase: int) -> None:
        self.eng.set_tl_phase(intersection_id, phase)

    def set_tl_phases(self, intersection_ids: Sequence[str], phases: Sequence[int]) -> None:
        """:meth:`set_tl_phase` for several intersections, looped in C (``map`` drained by a ``deque``)."""
        collections.deque(map(self.eng.set_tl_phase, intersection_ids, phases), maxlen=0)

    def get_lane_vehicle_count(self) -> dict[str, int]:
        return self.eng.get_lane_vehicle_count()

    def get_lane_waiting_vehicle_count(self) -> dict[str, int]:
        return self.eng.get_lane_waiting_vehicle_count()

    def get_average_travel_time(self) -> float:
        return float(self.eng.get_average_travel_time())

    def close(self) -> None:
        """Hand the engine back to the pool (idempotent); this object cannot step afterwards."""
        if self.eng is not None:
            CityFlowEngine._pool.setdefault(self._key, []).append(self.eng)
            self.eng = None
