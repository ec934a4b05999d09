"""CityFlow-format traffic scenarios (``roadnet.json`` + ``flow.json``) as agent graphs.

The format of the public traffic-signal-control data sets (Hangzhou, Jinan, New York): roads with
lanes, intersections with ``roadLinks`` (each with its ``laneLinks``), ``trafficLight.lightphases``
whose ``availableRoadLinks`` index into ``roadLinks``, and ``virtual`` boundary intersections; a flow
entry is a vehicle type, a route of road ids and ``startTime``/``endTime``/``interval``.

Every non-virtual intersection is an agent; two agents are linked when a road joins them (both
directions). Per agent: its incoming and outgoing lanes, its road links, its phases and its position.
Real maps are irregular, so :meth:`Scenario.padded` gives lane and phase tensors padded to the
largest intersection with validity masks.

Phases: a phase whose green road links are all green in every phase (CityFlow's all-red-but-right-turns
transition phase, usually ``lightphases[0]``) is the *transition* phase; the others are the agent's
actions.

Malformed files raise :class:`ScenarioError` naming the file, the intersection or road, and what is
wrong.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import Tensor

from ipgnn.graphs import networkx_edges


class ScenarioError(ValueError):
    """A malformed scenario file, with the file and the element it is about."""


@dataclass(frozen=True)
class RoadLink:
    start_road: str
    end_road: str
    kind: str  # go_straight | turn_left | turn_right
    lane_links: tuple[tuple[int, int], ...]  # (start lane index, end lane index), CityFlow's lane order


@dataclass
class Intersection:
    """One signalised intersection: an agent."""

    id: str
    pos: tuple[float, float]
    incoming_lanes: list[tuple[str, int]]  # (road id, lane index) of roads ending here
    outgoing_lanes: list[tuple[str, int]]
    road_links: list[RoadLink]
    phases: list[list[int]]  # green road-link indices per CityFlow phase (lightphases order)
    phase_times: list[float]
    transition_phase: int | None  # the phase that only keeps always-green links (None if absent)

    @functools.cached_property
    def action_phases(self) -> list[int]:
        """CityFlow phase indices the agent chooses among (every phase but the transition one)."""
        return [k for k in range(len(self.phases)) if k != self.transition_phase]


@dataclass
class Road:
    id: str
    start: str
    end: str
    points: list[tuple[float, float]]
    num_lanes: int
    max_speed: list[float]
    lane_width: list[float]

    @property
    def length(self) -> float:
        return sum(
            ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 for (x0, y0), (x1, y1) in zip(self.points[:-1], self.points[1:])
        )


@dataclass
class Scenario:
    """A loaded scenario: agents (non-virtual intersections, in file order), roads, graph and flows."""

    roadnet_path: Path
    flow_path: Path | None
    intersections: list[Intersection]
    roads: dict[str, Road]
    flows: list[dict[str, Any]] = field(default_factory=list)
    points: dict[str, tuple[float, float]] = field(default_factory=dict)  # every intersection, virtual too

    @property
    def num_agents(self) -> int:
        return len(self.intersections)

    @property
    def agent_ids(self) -> list[str]:
        return [i.id for i in self.intersections]

    def to_networkx(self) -> nx.Graph:
        """The road graph between agents: nodes ``0..N-1`` (agent order) with ``id`` and ``pos``."""
        index = {a.id: k for k, a in enumerate(self.intersections)}
        g = nx.Graph()
        for k, a in enumerate(self.intersections):
            g.add_node(k, id=a.id, pos=a.pos)
        for road in self.roads.values():
            if road.start in index and road.end in index and road.start != road.end:
                g.add_edge(index[road.start], index[road.end])
        return g

    def edge_index(self) -> Tensor:
        """``[2, E]`` agent links (both directions)."""
        return networkx_edges(self.to_networkx())

    def positions(self) -> Tensor:
        return torch.tensor([a.pos for a in self.intersections], dtype=torch.float32)

    def padded(self) -> dict[str, Tensor]:
        """Irregular per-agent sizes padded to the largest: lane counts with masks, and the action mask
        over phases (``[N, max_action_phases]``, True where the phase exists)."""
        n = self.num_agents
        max_in = max(len(a.incoming_lanes) for a in self.intersections)
        max_out = max(len(a.outgoing_lanes) for a in self.intersections)
        max_act = max(len(a.action_phases) for a in self.intersections)
        in_mask = torch.zeros(n, max_in, dtype=torch.bool)
        out_mask = torch.zeros(n, max_out, dtype=torch.bool)
        phase_mask = torch.zeros(n, max_act, dtype=torch.bool)
        for k, a in enumerate(self.intersections):
            in_mask[k, : len(a.incoming_lanes)] = True
            out_mask[k, : len(a.outgoing_lanes)] = True
            phase_mask[k, : len(a.action_phases)] = True
        return {"incoming_lane_mask": in_mask, "outgoing_lane_mask": out_mask, "action_mask": phase_mask}


# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ScenarioError(f"scenario file '{path}' does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: not valid JSON ({exc})") from None


def _get(obj: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ScenarioError(f"{where}: missing key '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ScenarioError(f"{where}: '{key}' should be {names}, got {type(value).__name__}")
    return value


def _number(
    obj: dict, key: str, where: str, low: float | None = None, strict: bool = False, default: float | None = None
) -> float:
    """``obj[key]`` as a finite number, checked against ``low`` (``> low`` when ``strict``, else ``>=``)."""
    if default is not None and isinstance(obj, dict) and key not in obj:
        return default
    value = _get(obj, key, where, (int, float))
    if isinstance(value, bool) or not math.isfinite(value):
        raise ScenarioError(f"{where}: '{key}' should be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ScenarioError(f"{where}: '{key}' should be {'>' if strict else '>='} {low:g}, got {value:g}")
    return float(value)


def _point(p: Any, where: str) -> tuple[float, float]:
    return _number(p, "x", where), _number(p, "y", where)


def _parse_roads(raw: dict, path: Path) -> dict[str, Road]:
    roads: dict[str, Road] = {}
    for k, r in enumerate(_get(raw, "roads", str(path), list)):
        rid = _get(r, "id", f"{path}: roads[{k}]", str)
        where = f"{path}: road '{rid}'"
        if rid in roads:
            raise ScenarioError(f"{path}: roads[{k}]: id '{rid}' is used twice; every road needs its own")
        lanes = _get(r, "lanes", where, list)
        if not lanes:
            raise ScenarioError(f"{where}: has no lanes")
        points = [_point(p, f"{where}: points[{j}]") for j, p in enumerate(_get(r, "points", where, list))]
        if len(points) < 2:
            raise ScenarioError(f"{where}: needs at least 2 points, got {len(points)}")
        roads[rid] = Road(
            rid,
            _get(r, "startIntersection", where, str),
            _get(r, "endIntersection", where, str),
            points,
            len(lanes),
            [_number(l, "maxSpeed", f"{where}: lanes[{j}]", 0.0, strict=True) for j, l in enumerate(lanes)],
            [_number(l, "width", f"{where}: lanes[{j}]", 0.0, strict=True, default=4.0) for j, l in enumerate(lanes)],
        )
    return roads


def _parse_intersection(i: dict, k: int, roads: dict[str, Road], path: Path) -> Intersection:
    iid = _get(i, "id", f"{path}: intersections[{k}]", str)
    where = f"{path}: intersection '{iid}'"
    links: list[RoadLink] = []
    for j, rl in enumerate(_get(i, "roadLinks", where, list)):
        lw = f"{where}: roadLinks[{j}]"
        start, end = _get(rl, "startRoad", lw, str), _get(rl, "endRoad", lw, str)
        for name in (start, end):
            if name not in roads:
                raise ScenarioError(f"{lw}: unknown road '{name}'")
        if roads[start].end != iid or roads[end].start != iid:
            raise ScenarioError(f"{lw}: road '{start}' must end and road '{end}' must start at '{iid}'")
        pairs = []
        for m, ll in enumerate(_get(rl, "laneLinks", lw, list)):
            a = _get(ll, "startLaneIndex", f"{lw}: laneLinks[{m}]", int)
            b = _get(ll, "endLaneIndex", f"{lw}: laneLinks[{m}]", int)
            if not 0 <= a < roads[start].num_lanes or not 0 <= b < roads[end].num_lanes:
                raise ScenarioError(
                    f"{lw}: laneLinks[{m}] lane {a}->{b} outside '{start}' "
                    f"({roads[start].num_lanes} lanes) / '{end}' ({roads[end].num_lanes} lanes)"
                )
            pairs.append((a, b))
        links.append(RoadLink(start, end, _get(rl, "type", lw, str), tuple(pairs)))
    light = _get(i, "trafficLight", where, dict)
    phases, times = [], []
    for j, ph in enumerate(_get(light, "lightphases", f"{where}: trafficLight", list)):
        pw = f"{where}: trafficLight.lightphases[{j}]"
        avail = _get(ph, "availableRoadLinks", pw, list)
        bad = [x for x in avail if not isinstance(x, int) or not 0 <= x < len(links)]
        if bad:
            raise ScenarioError(f"{pw}: availableRoadLinks {bad} do not index its {len(links)} roadLinks")
        phases.append(sorted(avail))
        times.append(_number(ph, "time", pw, 0.0))
    if not phases:
        raise ScenarioError(f"{where}: a signalised intersection needs at least one light phase")
    always = set.intersection(*(set(p) for p in phases))
    transition = next((k for k, p in enumerate(phases) if set(p) <= always), None) if len(phases) > 1 else None
    incoming = [(r.id, n) for r in roads.values() if r.end == iid for n in range(r.num_lanes)]
    outgoing = [(r.id, n) for r in roads.values() if r.start == iid for n in range(r.num_lanes)]
    return Intersection(
        iid,
        _point(_get(i, "point", where, dict), f"{where}: point"),
        incoming,
        outgoing,
        links,
        phases,
        times,
        transition,
    )


def _check_flows(flows: Any, roads: dict[str, Road], path: Path) -> list[dict[str, Any]]:
    if not isinstance(flows, list):
        raise ScenarioError(f"{path}: expected a list of flows, got {type(flows).__name__}")
    for k, f in enumerate(flows):
        where = f"{path}: flow[{k}]"
        _get(f, "vehicle", where, dict)
        route = _get(f, "route", where, list)
        if not route:
            raise ScenarioError(f"{where}: empty route")
        for r in route:
            if r not in roads:
                raise ScenarioError(f"{where}: route names unknown road '{r}'")
        for a, b in zip(route[:-1], route[1:]):
            if roads[a].end != roads[b].start:
                raise ScenarioError(
                    f"{where}: route is not connected: '{a}' ends at '{roads[a].end}' but "
                    f"'{b}' starts at '{roads[b].start}'"
                )
        vehicle = f["vehicle"]
        for key in ("length", "maxSpeed", "maxPosAcc", "maxNegAcc", "usualPosAcc", "usualNegAcc"):
            if key in vehicle:
                _number(vehicle, key, f"{where}: vehicle", 0.0, strict=True)
        for key in ("minGap", "headwayTime"):
            if key in vehicle:
                _number(vehicle, key, f"{where}: vehicle", 0.0)
        start, end = _number(f, "startTime", where, 0.0), _number(f, "endTime", where)
        _number(f, "interval", where, 0.0, strict=True)
        if end != -1 and end < start:
            raise ScenarioError(f"{where}: endTime {end:g} is before startTime {start:g} (-1 means: until the end)")
    if not flows:
        raise ScenarioError(f"{path}: no flows: the scenario has no traffic, so every metric would be 0")
    return flows


def load_scenario(directory: str | Path, roadnet: str = "roadnet.json", flow: str | None = "flow.json") -> Scenario:
    """Load ``<directory>/roadnet.json`` (and ``flow.json`` unless ``flow`` is None) and validate it."""
    directory = Path(directory)
    rpath = directory / roadnet
    raw = _read_json(rpath)
    roads = _parse_roads(raw, rpath)
    inters = _get(raw, "intersections", str(rpath), list)
    ids: set[str] = set()
    for k, i in enumerate(inters):
        iid = _get(i, "id", f"{rpath}: intersections[{k}]", str)
        if iid in ids:
            raise ScenarioError(
                f"{rpath}: intersections[{k}]: id '{iid}' is used twice; every intersection needs its own"
            )
        ids.add(iid)
    for r in roads.values():
        for end in (r.start, r.end):
            if end not in ids:
                raise ScenarioError(f"{rpath}: road '{r.id}' joins unknown intersection '{end}'")
    agents = [
        _parse_intersection(i, k, roads, rpath)
        for k, i in enumerate(inters)
        if not _get(i, "virtual", f"{rpath}: intersection '{i['id']}'", bool)
    ]
    if not agents:
        raise ScenarioError(f"{rpath}: no signalised (non-virtual) intersection: nothing to control")
    fpath = directory / flow if flow else None
    flows = _check_flows(_read_json(fpath), roads, fpath) if fpath is not None else []
    points = {
        i["id"]: _point(
            _get(i, "point", f"{rpath}: intersection '{i['id']}'", dict), f"{rpath}: intersection '{i['id']}': point"
        )
        for i in inters
    }
    return Scenario(rpath, fpath, agents, roads, flows, points)


def scenario_digest(sc: Scenario, salt: str = "") -> str:
    """SHA-256 (16 hex digits) of ``salt`` and the scenario's roadnet and flow files: the key of every
    cache derived from a scenario (its SUMO conversion, its reference controllers' results)."""
    h = hashlib.sha256(salt.encode())
    h.update(sc.roadnet_path.read_bytes())
    if sc.flow_path is not None:
        h.update(sc.flow_path.read_bytes())
    return h.hexdigest()[:16]
