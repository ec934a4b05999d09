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

Malformed files raise :class:`ScenarioError` naming the file, the intersection, road or flow, and what is
wrong, before any engine sees them. Checked besides types and ranges: files of at most
:data:`MAX_FILE_BYTES` of UTF-8 JSON; roads of positive length between two different intersections;
indices (``laneLinks``, ``availableRoadLinks``) that are integers (not booleans, floats or strings) within
range; routes whose consecutive roads are joined by a road link at the intersection between them; and
flows that schedule at most :data:`MAX_VEHICLES` vehicles (:func:`scheduled_vehicles`). Whether the
demand enters an episode depends on its length, which the caller knows: :meth:`Scenario.first_start`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from ipgnn.graphs import networkx_edges

MAX_FILE_BYTES = 128 * 2**20  #: the largest roadnet or flow file read (a generated 100 x 100 grid's roadnet: 52 MB)
MAX_VEHICLES = 200_000  #: the most vehicles a scenario's flows may schedule (in the file, and in one episode)
_ECHO = 80  # characters of a user's value echoed in an error


class ScenarioError(ValueError):
    """A malformed scenario file, with the file and the element it is about."""


def _clip(value: Any) -> str:
    """``value`` as text for an error message, cut to a few dozen characters."""
    from ipgnn.config import clip

    return clip(value if isinstance(value, str) else repr(value), _ECHO)


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

    @property
    def first_start(self) -> float:
        """The earliest ``startTime`` of any flow (``inf`` without flows): an episode shorter than this
        sees no vehicle at all."""
        return min((float(f["startTime"]) for f in self.flows), default=math.inf)

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
    """The JSON document in ``path``: a regular file of at most :data:`MAX_FILE_BYTES` of UTF-8 text."""
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ScenarioError(f"scenario file '{path}' {what}")
    try:
        with path.open("rb") as fh:
            # the size first (a huge file fails at once), then a bounded read (a file that grows meanwhile)
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read it ({exc.strerror or exc}); check its permissions") from None
    if max(size, len(data)) > MAX_FILE_BYTES:
        raise ScenarioError(
            f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB, the most a scenario file may hold; "
            "is it the right file?"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}): a CityFlow scenario "
            "file is JSON text; is it the right file?"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ScenarioError(f"{path}: JSON nested too deeply to read; a CityFlow scenario file is shallow") from None


def _get(obj: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ScenarioError(f"{where}: missing key '{key}'")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # True is no index
        names = " or ".join(k.__name__ for k in kinds)
        raise ScenarioError(f"{where}: '{key}' should be {names}, got {type(value).__name__} {_clip(value)}")
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
        where = f"{path}: road '{_clip(rid)}' (roads[{k}])"
        if rid in roads:
            raise ScenarioError(f"{where}: id used twice; every road needs its own")
        lanes = _get(r, "lanes", where, list)
        if not lanes:
            raise ScenarioError(f"{where}: has no lanes")
        points = [_point(p, f"{where}: points[{j}]") for j, p in enumerate(_get(r, "points", where, list))]
        if len(points) < 2:
            raise ScenarioError(f"{where}: needs at least 2 points, got {len(points)}")
        start, end = _get(r, "startIntersection", where, str), _get(r, "endIntersection", where, str)
        if start == end:
            raise ScenarioError(
                f"{where}: starts and ends at intersection '{_clip(start)}' (a self-loop); a road joins two "
                "different intersections"
            )
        roads[rid] = Road(
            rid,
            start,
            end,
            points,
            len(lanes),
            [_number(l, "maxSpeed", f"{where}: lanes[{j}]", 0.0, strict=True) for j, l in enumerate(lanes)],
            [_number(l, "width", f"{where}: lanes[{j}]", 0.0, strict=True, default=4.0) for j, l in enumerate(lanes)],
        )
        if not roads[rid].length > 0:
            raise ScenarioError(f"{where}: length 0 m (its points coincide); a road needs a positive length")
    return roads


def _parse_road_links(i: dict, iid: str, where: str, roads: dict[str, Road]) -> list[RoadLink]:
    links: list[RoadLink] = []
    for j, rl in enumerate(_get(i, "roadLinks", where, list)):
        lw = f"{where}: roadLinks[{j}]"
        start, end = _get(rl, "startRoad", lw, str), _get(rl, "endRoad", lw, str)
        for name in (start, end):
            if name not in roads:
                raise ScenarioError(f"{lw}: unknown road '{_clip(name)}'")
        if roads[start].end != iid or roads[end].start != iid:
            raise ScenarioError(f"{lw}: road '{start}' must end and road '{end}' must start at '{iid}'")
        pairs = []
        for m, ll in enumerate(_get(rl, "laneLinks", lw, list)):
            mw = f"{lw}: laneLinks[{m}]"
            a, b = _get(ll, "startLaneIndex", mw, int), _get(ll, "endLaneIndex", mw, int)
            if not 0 <= a < roads[start].num_lanes or not 0 <= b < roads[end].num_lanes:
                raise ScenarioError(
                    f"{lw}: laneLinks[{m}] lane {a}->{b} outside '{start}' "
                    f"({roads[start].num_lanes} lanes) / '{end}' ({roads[end].num_lanes} lanes)"
                )
            pairs.append((a, b))
        links.append(RoadLink(start, end, _get(rl, "type", lw, str), tuple(pairs)))
    return links


def _parse_phases(i: dict, where: str, num_links: int) -> tuple[list[list[int]], list[float]]:
    light = _get(i, "trafficLight", where, dict)
    phases, times = [], []
    for j, ph in enumerate(_get(light, "lightphases", f"{where}: trafficLight", list)):
        pw = f"{where}: trafficLight.lightphases[{j}]"
        avail = _get(ph, "availableRoadLinks", pw, list)
        for m, x in enumerate(avail):
            if isinstance(x, bool) or not isinstance(x, int):
                raise ScenarioError(
                    f"{pw}: availableRoadLinks[{m}] should be an integer index into its {num_links} roadLinks, "
                    f"got {_clip(x)}"
                )
        bad = [x for x in avail if not 0 <= x < num_links]
        if bad:
            raise ScenarioError(f"{pw}: availableRoadLinks {_clip(bad)} do not index its {num_links} roadLinks")
        phases.append(sorted(avail))
        times.append(_number(ph, "time", pw, 0.0))
    if not phases:
        raise ScenarioError(f"{where}: a signalised intersection needs at least one light phase")
    return phases, times


def _parse_intersection(i: dict, k: int, roads: dict[str, Road], path: Path, ends: dict) -> Intersection:
    """Intersection ``i`` (``intersections[k]``); ``ends[iid]``: ``(roads ending there, roads starting there)``."""
    iid = _get(i, "id", f"{path}: intersections[{k}]", str)
    where = f"{path}: intersection '{_clip(iid)}'"
    links = _parse_road_links(i, iid, where, roads)
    phases, times = _parse_phases(i, where, len(links))
    always = set.intersection(*(set(p) for p in phases))
    transition = next((k for k, p in enumerate(phases) if set(p) <= always), None) if len(phases) > 1 else None
    into, out_of = ends.get(iid, ([], []))
    return Intersection(
        iid,
        _point(_get(i, "point", where, dict), f"{where}: point"),
        [(r.id, n) for r in into for n in range(r.num_lanes)],
        [(r.id, n) for r in out_of for n in range(r.num_lanes)],
        links,
        phases,
        times,
        transition,
    )


def _check_flow(f: Any, where: str, roads: dict[str, Road], turns: set[tuple[str, str]]) -> None:
    """One flow entry: its vehicle, a route of known roads each joined to the next by a road link, its times."""
    vehicle = _get(f, "vehicle", where, dict)
    route = _get(f, "route", where, list)
    if not route:
        raise ScenarioError(f"{where}: empty route")
    for r in route:
        if not isinstance(r, str) or r not in roads:
            raise ScenarioError(f"{where}: route names unknown road {_clip(r)!r}")
    for a, b in zip(route[:-1], route[1:]):
        if roads[a].end != roads[b].start:
            raise ScenarioError(
                f"{where}: route is not connected: '{a}' ends at '{roads[a].end}' but "
                f"'{b}' starts at '{roads[b].start}'"
            )
        if (a, b) not in turns:
            raise ScenarioError(
                f"{where}: route is not connected: no road link at intersection '{roads[a].end}' leads from "
                f"'{a}' into '{b}' (add it to that intersection's roadLinks, or route through linked roads)"
            )
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


def scheduled_vehicles(flows: list[dict[str, Any]], horizon: float | None = None) -> tuple[float, int]:
    """``(vehicles, k)``: how many vehicles checked ``flows`` schedule, one at each ``startTime + n * interval``
    up to ``endTime``, and the index of the flow that schedules the most. With ``horizon``, the departures
    before it (one episode); without, over the file's own span, in which ``endTime: -1`` runs to the latest
    time in the file and at least an hour (as the SUMO conversion expands it). A float: a tiny interval
    gives an astronomic count, which is computed, never enumerated."""
    if not flows:
        return 0.0, 0
    start, end, interval = (np.array([float(f[key]) for f in flows]) for key in ("startTime", "endTime", "interval"))
    span = max(3600.0, float(start.max()), float(end.max()))
    end = np.where(end < 0, span if horizon is None else np.inf, end)
    with np.errstate(over="ignore", invalid="ignore"):
        count = np.floor((end - start) / interval) + 1
        if horizon is not None:  # departures strictly before the horizon
            count = np.where(start < horizon, np.minimum(count, np.ceil((horizon - start) / interval)), 0.0)
    return float(count.sum()), int(count.argmax())


def _check_flows(flows: Any, roads: dict[str, Road], turns: set[tuple[str, str]], path: Path) -> list[dict[str, Any]]:
    if not isinstance(flows, list):
        raise ScenarioError(f"{path}: expected a list of flows, got {type(flows).__name__}")
    for k, f in enumerate(flows):
        _check_flow(f, f"{path}: flow[{k}]", roads, turns)
    if not flows:
        raise ScenarioError(f"{path}: no flows: the scenario has no traffic, so every metric would be 0")
    total, k = scheduled_vehicles(flows)
    if total > MAX_VEHICLES:
        f = flows[k]
        raise ScenarioError(
            f"{path}: the flows schedule {total:.3g} vehicles (flow[{k}] alone: one every {f['interval']:g} s "
            f"from {f['startTime']:g} to {f['endTime']:g} s); at most {MAX_VEHICLES:,} are accepted: "
            "lengthen the flows' interval"
        )
    return flows


def _turns(inters: list[Any], agents: list[Intersection], roads: dict[str, Road]) -> set[tuple[str, str]]:
    """Every ``(start road, end road)`` pair a road link joins: the agents' (checked) and the virtual
    intersections' well-formed ones (their road links are not otherwise used)."""
    turns = {(l.start_road, l.end_road) for a in agents for l in a.road_links}
    for i in inters:
        links = i.get("roadLinks") if i.get("virtual") is True else None
        for rl in links if isinstance(links, list) else []:
            a, b = (rl.get("startRoad"), rl.get("endRoad")) if isinstance(rl, dict) else (None, None)
            if isinstance(a, str) and isinstance(b, str) and a in roads and b in roads:
                if roads[a].end == i["id"] == roads[b].start:
                    turns.add((a, b))
    return turns


def _intersection_ids(inters: list[Any], roads: dict[str, Road], rpath: Path) -> dict[str, tuple[list, list]]:
    """Unique intersection ids, each with ``(roads ending there, roads starting there)``; every road's ends known."""
    ends: dict[str, tuple[list, list]] = {}
    for k, i in enumerate(inters):
        iid = _get(i, "id", f"{rpath}: intersections[{k}]", str)
        if iid in ends:
            raise ScenarioError(
                f"{rpath}: intersections[{k}]: id '{_clip(iid)}' is used twice; every intersection needs its own"
            )
        ends[iid] = ([], [])
    for r in roads.values():
        for end in (r.start, r.end):
            if end not in ends:
                raise ScenarioError(f"{rpath}: road '{_clip(r.id)}' joins unknown intersection '{_clip(end)}'")
        ends[r.end][0].append(r)
        ends[r.start][1].append(r)
    return ends


def load_scenario(directory: str | Path, roadnet: str = "roadnet.json", flow: str | None = "flow.json") -> Scenario:
    """Load ``<directory>/roadnet.json`` (and ``flow.json`` unless ``flow`` is None) and validate it (see the
    module docstring); a malformed file raises :class:`ScenarioError` naming it and the element at fault."""
    directory = Path(directory)
    rpath = directory / roadnet
    raw = _read_json(rpath)
    roads = _parse_roads(raw, rpath)
    inters = _get(raw, "intersections", str(rpath), list)
    ends = _intersection_ids(inters, roads, rpath)
    agents = [
        _parse_intersection(i, k, roads, rpath, ends)
        for k, i in enumerate(inters)
        if not _get(i, "virtual", f"{rpath}: intersection '{_clip(i['id'])}'", bool)
    ]
    if not agents:
        raise ScenarioError(f"{rpath}: no signalised (non-virtual) intersection: nothing to control")
    fpath = directory / flow if flow else None
    flows = _check_flows(_read_json(fpath), roads, _turns(inters, agents, roads), fpath) if fpath is not None else []
    points = {
        i["id"]: _point(
            _get(i, "point", f"{rpath}: intersection '{_clip(i['id'])}'", dict),
            f"{rpath}: intersection '{_clip(i['id'])}': point",
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
