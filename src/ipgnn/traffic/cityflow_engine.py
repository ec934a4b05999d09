"""The real CityFlow engine (``import cityflow``), when it is installed.

CityFlow is not on PyPI: build it from its public repository (see the README). Its ``Engine`` already
has the API the traffic environment uses (``next_step``, ``set_tl_phase``, ``get_lane_vehicle_count``,
``get_lane_waiting_vehicle_count``, ``get_average_travel_time``, ``get_current_time``); this adapter
writes the engine's config file, keeps one engine per process for its whole life (CityFlow's engine
can hang when destroyed), and re-seeds it between episodes with ``set_random_seed(seed)`` followed by
``reset(seed=False)``.

CityFlow's seed drives only its tie-breaks (vehicle priorities at conflicts, a random first lane among
equivalent ones). On a fixed flow file with lane changing off, as here, it changes nothing: measured on
Hangzhou 4x4 with fresh engines seeded 0, 1 and 7 (1000 s, fixed-time signals), and through the
environment with FixedTime and MaxPressure (seeds 0, 1, 1000003), the episodes are bit-identical. So
on CityFlow every seed plays the same episode (:data:`ipgnn.envs.traffic.SEED_VARIES_EPISODES`), and
the trainer evaluates once.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ipgnn.traffic.scenario import Scenario


def cityflow_available() -> bool:
    try:
        import cityflow  # noqa: F401
    except ImportError:
        return False
    return True


class CityFlowEngine:
    """CityFlow on a scenario; the engine object is created once per process and reused."""

    _engines: dict[tuple[str, str], Any] = {}

    def __init__(self, scenario: Scenario, seed: int = 0, threads: int = 1):
        import cityflow

        key = (str(scenario.roadnet_path), str(scenario.flow_path))
        self.scenario = scenario
        if key not in CityFlowEngine._engines:
            workdir = Path(tempfile.mkdtemp(prefix="ipgnn-cityflow-"))
            config = {"interval": 1.0, "seed": int(seed) % 2**31, "dir": "", "roadnetFile": str(scenario.roadnet_path),
                      "flowFile": str(scenario.flow_path), "rlTrafficLight": True, "laneChange": False,
                      "saveReplay": False, "roadnetLogFile": "", "replayLogFile": ""}
            path = workdir / "config.json"
            path.write_text(json.dumps(config))
            CityFlowEngine._engines[key] = cityflow.Engine(str(path), thread_num=threads)
        self.eng = CityFlowEngine._engines[key]
        self.eng.set_random_seed(int(seed) % 2**31)  # a C int
        self.eng.reset(seed=False)
        self._seen: set[str] = set()
        self._running: set[str] = set()

    def next_step(self) -> None:
        self.eng.next_step()
        self._running = set(self.eng.get_vehicles(include_waiting=False))
        self._seen |= self._running

    @property
    def throughput(self) -> int:
        """Vehicles that entered and have left the network (completed their route)."""
        return len(self._seen - self._running)

    def get_current_time(self) -> float:
        return float(self.eng.get_current_time())

    def set_tl_phase(self, intersection_id: str, phase: int) -> None:
        self.eng.set_tl_phase(intersection_id, phase)

    def get_lane_vehicle_count(self) -> dict[str, int]:
        return self.eng.get_lane_vehicle_count()

    def get_lane_waiting_vehicle_count(self) -> dict[str, int]:
        return self.eng.get_lane_waiting_vehicle_count()

    def get_average_travel_time(self) -> float:
        return float(self.eng.get_average_travel_time())

    def close(self) -> None:
        """Nothing: the engine lives as long as the process (destroying it can hang)."""
