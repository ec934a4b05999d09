"""Deterministic scenario generators writing CityFlow's format: square grids and Manhattan-96.

Both build a road network (nodes, directed roads with lanes), then derive every signalised
intersection's ``roadLinks``/``laneLinks`` and ``lightphases`` from geometry, and draw a demand from a
seeded generator. The same parameters and seed always give the same files; :func:`materialise`
writes them once into the cache (``$IPGNN_CACHE`` or ``~/.cache/ipgnn``) and later calls reuse them.

- **Turns** are classified by the angle between the incoming and outgoing road: straight within 30
  degrees, left (counter-clockwise) or right otherwise; U-turns are not generated.
- **Lanes** follow CityFlow's order (lane 0 innermost): left turns from lane 0, right turns from the
  outermost lane, straight from the lanes between (and from the edge lanes a missing turn frees).
- **Phases**: phase 0 is the transition phase (right turns only; right turns are green in every
  phase), then up to four action phases: east-west straight, north-south straight, east-west left,
  north-south left (phases that would contain no link are dropped).
- **Demand**: vehicles enter on every boundary road as a Poisson process of ``rate`` vehicles per
  hour (``uniform``) or with a rate that peaks at mid-horizon (``gaussian``: 0.4 to 1.6 times
  ``rate``), each with a destination drawn among the boundary exits (not its own reverse) and the
  shortest route to it, so turning traffic arises at every intersection.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

VEHICLE = {
    "length": 5.0,
    "width": 2.0,
    "maxPosAcc": 2.0,
    "maxNegAcc": 4.5,
    "usualPosAcc": 2.0,
    "usualNegAcc": 4.5,
    "minGap": 2.5,
    "maxSpeed": 11.111,
    "headwayTime": 2,
}
GENERATOR_VERSION = "2"


@dataclass
class _Net:
    points: dict[str, tuple[float, float]]
    signalised: set[str]
    roads: list[tuple[str, str, str, int, float]]  # id, from, to, lanes, speed


def _turn(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> str | None:
    d1 = (b[0] - a[0], b[1] - a[1])
    d2 = (c[0] - b[0], c[1] - b[1])
    ang = math.degrees(math.atan2(d1[0] * d2[1] - d1[1] * d2[0], d1[0] * d2[0] + d1[1] * d2[1]))
    if abs(ang) > 150:
        return None  # U-turn
    if abs(ang) <= 30:
        return "go_straight"
    return "turn_left" if ang > 0 else "turn_right"


def _lanes_for(kind: str, n: int, kinds: set[str]) -> list[int]:
    if n == 1:
        return [0]
    if kind == "turn_left":
        return [0]
    if kind == "turn_right":
        return [n - 1]
    lo = 0 if "turn_left" not in kinds else (1 if n > 2 else 0)
    hi = n - 1 if "turn_right" not in kinds else (n - 2 if n > 2 else n - 1)
    return list(range(lo, hi + 1))


def _roadnet(net: _Net) -> dict[str, Any]:
    pts = net.points
    roads_out: dict[str, list] = {n: [] for n in pts}
    roads_in: dict[str, list] = {n: [] for n in pts}
    road_objs = []
    for rid, u, v, lanes, speed in net.roads:
        roads_out[u].append((rid, u, v, lanes))
        roads_in[v].append((rid, u, v, lanes))
        road_objs.append(
            {
                "id": rid,
                "points": [{"x": pts[u][0], "y": pts[u][1]}, {"x": pts[v][0], "y": pts[v][1]}],
                "lanes": [{"width": 4, "maxSpeed": speed} for _ in range(lanes)],
                "startIntersection": u,
                "endIntersection": v,
            }
        )
    inters = []
    for nid, (x, y) in pts.items():
        touching = [r[0] for r in roads_in[nid]] + [r[0] for r in roads_out[nid]]
        if nid not in net.signalised:
            inters.append(
                {
                    "id": nid,
                    "point": {"x": x, "y": y},
                    "width": 0,
                    "roads": touching,
                    "roadLinks": [],
                    "trafficLight": {"roadLinkIndices": [], "lightphases": []},
                    "virtual": True,
                }
            )
            continue
        links = []
        for rin, u, _, n_in in roads_in[nid]:
            moves = [(rout, w, n_out, _turn(pts[u], pts[nid], pts[w])) for rout, _, w, n_out in roads_out[nid]]
            moves = [m for m in moves if m[3] is not None]
            kinds = {m[3] for m in moves}
            horizontal = abs(pts[nid][0] - pts[u][0]) >= abs(pts[nid][1] - pts[u][1])
            for rout, _w, n_out, kind in moves:
                # no "points": CityFlow then draws each lane link's curve itself (given points are
                # used as the path, and a degenerate one would hide which movements cross)
                lane_links = [
                    {"startLaneIndex": a, "endLaneIndex": b, "points": []}
                    for a in _lanes_for(kind, n_in, kinds)
                    for b in range(n_out)
                ]
                links.append(
                    {
                        "type": kind,
                        "startRoad": rin,
                        "endRoad": rout,
                        "direction": 0 if horizontal else 1,
                        "laneLinks": lane_links,
                    }
                )
        rights = [k for k, l in enumerate(links) if l["type"] == "turn_right"]
        groups = [("go_straight", 0), ("go_straight", 1), ("turn_left", 0), ("turn_left", 1)]
        phases = [{"time": 5, "availableRoadLinks": rights}]
        for kind, axis in groups:
            green = [k for k, l in enumerate(links) if l["type"] == kind and l["direction"] == axis]
            if green:
                phases.append({"time": 30, "availableRoadLinks": sorted(green + rights)})
        if len(phases) == 1:  # only right turns: one action phase with everything
            phases.append({"time": 30, "availableRoadLinks": list(range(len(links)))})
        for l in links:
            del l["direction"]
        inters.append(
            {
                "id": nid,
                "point": {"x": x, "y": y},
                "width": 15,
                "roads": touching,
                "roadLinks": links,
                "trafficLight": {"roadLinkIndices": list(range(len(links))), "lightphases": phases},
                "virtual": False,
            }
        )
    return {"intersections": inters, "roads": road_objs}


def _flows(net: _Net, rate: float, horizon: int, demand: str, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    g = nx.DiGraph()
    road_of = {}
    for rid, u, v, _, _ in net.roads:
        length = math.dist(net.points[u], net.points[v])
        g.add_edge(u, v, weight=length)
        road_of[(u, v)] = rid
    entries = [(rid, u, v) for rid, u, v, _, _ in net.roads if u not in net.signalised]
    exits = [(rid, u, v) for rid, u, v, _, _ in net.roads if v not in net.signalised]
    flows = []
    for rid, u, v in entries:
        paths = nx.single_source_dijkstra_path(g, v)
        dests = [(eid, a, b) for eid, a, b in exits if a in paths and not (b == u and a == v)]
        if not dests:
            continue
        # Poisson arrivals by thinning a process of the peak rate
        peak = rate * (1.6 if demand == "gaussian" else 1.0) / 3600.0
        t = 0.0
        while True:
            t += rng.exponential(1.0 / peak)
            if t >= horizon:
                break
            if demand == "gaussian":
                accept = (0.4 + 1.2 * math.exp(-0.5 * ((t - horizon / 2) / (horizon / 6)) ** 2)) / 1.6
                if rng.random() > accept:
                    continue
            eid, a, b = dests[rng.integers(len(dests))]
            nodes = paths[a]
            route = [rid] + [road_of[(p, q)] for p, q in zip(nodes[:-1], nodes[1:])] + [eid]
            sec = int(t)
            flows.append({"vehicle": dict(VEHICLE), "route": route, "interval": 1.0, "startTime": sec, "endTime": sec})
    flows.sort(key=lambda f: f["startTime"])
    return flows


def grid_net(rows: int, cols: int, block: float = 300.0, lanes: int = 3, speed: float = 11.111) -> _Net:
    """A rows x cols grid of signalised intersections, two-way roads, a virtual node beyond each edge."""
    pts, sig, roads = {}, set(), []
    for i in range(rows + 2):
        for j in range(cols + 2):
            inside = 1 <= i <= rows and 1 <= j <= cols
            border = (i in (0, rows + 1)) != (j in (0, cols + 1))
            if inside or border:
                pts[f"intersection_{j}_{i}"] = (j * block, i * block)
                if inside:
                    sig.add(f"intersection_{j}_{i}")
    for i in range(rows + 2):
        for j in range(cols + 2):
            a = f"intersection_{j}_{i}"
            for dj, di in ((1, 0), (0, 1)):
                b = f"intersection_{j + dj}_{i + di}"
                if a in pts and b in pts and (a in sig or b in sig):
                    roads.append((f"road_{a[13:]}_to_{b[13:]}", a, b, lanes, speed))
                    roads.append((f"road_{b[13:]}_to_{a[13:]}", b, a, lanes, speed))
    return _Net(pts, sig, roads)


def manhattan_net(
    streets: int = 16,
    avenues: int = 6,
    street_gap: float = 150.0,
    avenue_gap: float = 250.0,
    street_lanes: int = 2,
    avenue_lanes: int = 3,
    speed: float = 11.111,
) -> _Net:
    """A Manhattan-style network: ``avenues`` two-way north-south avenues ``avenue_gap`` apart (long
    blocks) crossing ``streets`` one-way east-west streets ``street_gap`` apart (short blocks) whose
    direction alternates (even streets eastbound, odd westbound); every crossing is signalised.

    Street blocks default to 150 m, not Manhattan's ~80 m: SUMO sizes junctions from lane widths, so
    80 m blocks keep only ~50 m of queue storage, and with that the generated demand gridlocked under
    MaxPressure (measured: at 150 veh/h per entry, 80-100 m blocks lost vehicles to spillback within the
    hour; 150 m blocks kept every vehicle moving under FixedTime and MaxPressure)."""
    pts, sig, roads = {}, set(), []
    name = lambda a, s: f"intersection_{a}_{s}"
    for s in range(streets + 2):
        for a in range(avenues + 2):
            inside = 1 <= s <= streets and 1 <= a <= avenues
            border = (s in (0, streets + 1)) != (a in (0, avenues + 1))
            if inside or border:
                pts[name(a, s)] = (a * avenue_gap, s * street_gap)
                if inside:
                    sig.add(name(a, s))
    for s in range(1, streets + 1):  # one-way streets
        east = s % 2 == 0
        for a in range(avenues + 1):
            u, v = (name(a, s), name(a + 1, s)) if east else (name(a + 1, s), name(a, s))
            roads.append((f"street_{s}_{a}", u, v, street_lanes, speed))
    for a in range(1, avenues + 1):  # two-way avenues
        for s in range(streets + 1):
            u, v = name(a, s), name(a, s + 1)
            roads.append((f"avenue_{a}_{s}_n", u, v, avenue_lanes, speed))
            roads.append((f"avenue_{a}_{s}_s", v, u, avenue_lanes, speed))
    return _Net(pts, sig, roads)


def generate(
    kind: str, seed: int = 0, horizon: int = 3600, demand: str = "uniform", rate: float = 300.0, **params: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(roadnet, flows)`` for ``kind`` in ``grid`` (``rows``, ``cols``, ``block``, ``lanes``) or
    ``manhattan`` (``streets``, ``avenues``, ...)."""
    if demand not in ("uniform", "gaussian"):
        raise ValueError(f"demand must be 'uniform' or 'gaussian', got {demand!r}")
    if kind == "grid":
        net = grid_net(**params)
    elif kind == "manhattan":
        net = manhattan_net(**params)
    else:
        raise ValueError(f"unknown generator {kind!r}: use 'grid' or 'manhattan'")
    return _roadnet(net), _flows(net, rate, horizon, demand, seed)


def materialise(spec: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """Generate the scenario ``spec`` (the arguments of :func:`generate`) into the cache once and
    return its directory; the directory name carries a digest of the spec."""
    from ipgnn.cache import cache_dir as ipgnn_cache

    spec = dict(spec)
    key = json.dumps({"v": GENERATOR_VERSION, **spec}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir else ipgnn_cache("scenarios", temporary_ok=True)  # derived: may fall back
    out = root / f"{spec.get('kind', 'scenario')}-{digest}"
    if (out / "flow.json").is_file():
        return out
    tmp = root / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    kind = spec.pop("kind")
    roadnet, flows = generate(kind, **spec)
    (tmp / "roadnet.json").write_text(json.dumps(roadnet))
    (tmp / "flow.json").write_text(json.dumps(flows))
    (tmp / "spec.json").write_text(key)
    try:
        os.replace(tmp, out)
    except OSError:  # generated concurrently by another process
        shutil.rmtree(tmp, ignore_errors=True)
    return out
