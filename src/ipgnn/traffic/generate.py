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
- **Limits**, checked by :func:`check_spec` before anything is built or written (:class:`SpecError` names the
  parameter and its range): integers where counts are meant (never booleans), ``rows``/``cols`` (or
  ``streets``/``avenues``) with at most :data:`MAX_INTERSECTIONS` intersections, ``lanes`` 1 to 6, ``block`` and
  the gaps 50 to 5000 m, ``speed`` 1 to 50 m/s, ``rate`` 0.001 to 7200 vehicles/h per entry road, ``horizon`` 1
  to 86400 s, ``seed`` 0 to 2**63 - 1; and the demand those imply: at least one vehicle, at most
  :data:`~ipgnn.traffic.scenario.MAX_VEHICLES`, in a ``flow.json`` the loader accepts
  (:data:`~ipgnn.traffic.scenario.MAX_FILE_BYTES`).
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

from ipgnn.seeding import MAX_SEED
from ipgnn.traffic.scenario import MAX_FILE_BYTES, MAX_VEHICLES

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
MAX_INTERSECTIONS = 10_000  #: signalised intersections a generator may build (a 100 x 100 grid: 52 MB of roadnet)
_FLOW_BYTES = (220, 25)  # measured JSON bytes of a generated flow entry: fixed, and per road of its route

# spec key -> (integer?, lowest, highest): every parameter a generator takes, with its allowed range
_COMMON = {"seed": (True, 0, MAX_SEED), "horizon": (True, 1, 86_400), "rate": (False, 1e-3, 7200.0)}
_PARAMS = {
    "grid": {"rows": (True, 1, MAX_INTERSECTIONS), "cols": (True, 1, MAX_INTERSECTIONS), "block": (False, 50.0, 5000.0),
             "lanes": (True, 1, 6), "speed": (False, 1.0, 50.0)},
    "manhattan": {"streets": (True, 1, MAX_INTERSECTIONS), "avenues": (True, 1, MAX_INTERSECTIONS),
                  "street_gap": (False, 50.0, 5000.0), "avenue_gap": (False, 50.0, 5000.0),
                  "street_lanes": (True, 1, 6), "avenue_lanes": (True, 1, 6), "speed": (False, 1.0, 50.0)},
}  # fmt: skip
_UNITS = {
    "block": " m",
    "street_gap": " m",
    "avenue_gap": " m",
    "speed": " m/s",
    "rate": " vehicles/h",
    "horizon": " s",
}


class SpecError(ValueError):
    """A generator spec that cannot be generated; ``key`` is the parameter at fault and ``str()`` starts with it."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


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


def _check_value(key: str, value: Any, integer: bool, low: float, high: float) -> None:
    what = "an integer" if integer else "a number"
    unit = _UNITS.get(key, "")
    bad = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if bad or not low <= value <= high:  # NaN fails the range
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
        raise SpecError(key, f"expected {what} from {low:g} to {high:g}{unit}, got {shown}")


def _net_of(kind: str, params: dict[str, Any]) -> tuple[_Net, int]:
    """The checked road network of ``kind`` (``params``: its parameters, each in its range, at most
    :data:`MAX_INTERSECTIONS` intersections) and its rows plus columns (the length of a route across it)."""
    if not isinstance(kind, str) or kind not in _PARAMS:
        raise SpecError("kind", f"unknown generator {str(kind)[:40]!r}: use 'grid' or 'manhattan'")
    for key, value in params.items():
        if key not in _PARAMS[kind]:
            valid = ", ".join(["kind", "demand", *_COMMON, *_PARAMS[kind]])
            raise SpecError(str(key)[:40], f"unknown parameter of the '{kind}' generator (valid: {valid})")
        _check_value(key, value, *_PARAMS[kind][key])
    a, b = ("rows", "cols") if kind == "grid" else ("streets", "avenues")
    defaults = {"grid": (None, None), "manhattan": (16, 6)}[kind]
    n, m = params.get(a, defaults[0]), params.get(b, defaults[1])
    if n is None or m is None:
        raise SpecError(a if n is None else b, "required by the 'grid' generator (an integer from 1)")
    if n * m > MAX_INTERSECTIONS:
        raise SpecError(a, f"{a} x {b} = {n} x {m} = {n * m:,} intersections; at most {MAX_INTERSECTIONS:,}")
    return (grid_net(**params) if kind == "grid" else manhattan_net(**params)), n + m


def check_spec(spec: dict[str, Any]) -> _Net:
    """Check a generator spec (the arguments of :func:`generate`, with ``kind``) before anything is built or
    written: every parameter known and in its stated range (:data:`_PARAMS`, ``seed``/``horizon``/``rate``),
    at most :data:`MAX_INTERSECTIONS` intersections, and a demand of at most ``MAX_VEHICLES`` vehicles whose
    ``flow.json`` stays within ``MAX_FILE_BYTES`` (estimated from the rate, the horizon, the entry roads and
    the routes' length). Raises :class:`SpecError` naming the key; returns the road network."""
    params = dict(spec)
    kind = params.pop("kind", None)
    demand = params.pop("demand", "uniform")
    if demand not in ("uniform", "gaussian"):
        raise SpecError("demand", f"expected 'uniform' or 'gaussian', got {str(demand)[:40]!r}")
    common = {k: params.pop(k) for k in list(params) if k in _COMMON}
    for key, value in common.items():
        _check_value(key, value, *_COMMON[key])
    net, across = _net_of(kind, params)
    rate, horizon = common.get("rate", 300.0), common.get("horizon", 3600)
    entries = sum(1 for _, u, _, _, _ in net.roads if u not in net.signalised)
    vehicles = rate * (1.6 if demand == "gaussian" else 1.0) * horizon / 3600 * entries  # the arrivals drawn
    size = vehicles * (_FLOW_BYTES[0] + _FLOW_BYTES[1] * across / 2)  # measured: routes of (rows + cols) / 2 roads
    if vehicles < 1:
        raise SpecError(
            "rate", f"{rate:g} vehicles/h on {entries} entry roads for {horizon} s draws no vehicle; raise it"
        )
    if vehicles > MAX_VEHICLES or size > MAX_FILE_BYTES:
        raise SpecError(
            "rate",
            f"{rate:g} vehicles/h on each of {entries} entry roads for {horizon} s (horizon) draws about "
            f"{vehicles:,.0f} vehicles (~{size / 2**20:,.0f} MiB of flow.json); at most {MAX_VEHICLES:,} vehicles "
            f"and {MAX_FILE_BYTES // 2**20} MiB: lower the rate, the horizon or the network's size",
        )
    return net


def generate(
    kind: str, seed: int = 0, horizon: int = 3600, demand: str = "uniform", rate: float = 300.0, **params: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(roadnet, flows)`` for ``kind`` in ``grid`` (``rows``, ``cols``, ``block``, ``lanes``) or
    ``manhattan`` (``streets``, ``avenues``, ...); a spec outside :func:`check_spec`'s limits raises
    :class:`SpecError` before anything is built."""
    net = check_spec({"kind": kind, "seed": seed, "horizon": horizon, "demand": demand, "rate": rate, **params})
    flows = _flows(net, rate, horizon, demand, seed)
    if not flows:
        raise SpecError("rate", f"{rate:g} vehicles/h drew no vehicle in {horizon} s (seed {seed}); raise the rate")
    return _roadnet(net), flows


def materialise(spec: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """Generate the scenario ``spec`` (the arguments of :func:`generate`) into the cache once and
    return its directory; the directory name carries a digest of the spec."""
    from ipgnn.cache import cache_dir as ipgnn_cache

    spec = dict(spec)
    check_spec(spec)  # a bad spec fails in milliseconds, before the cache is touched
    key = json.dumps({"v": GENERATOR_VERSION, **spec}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir else ipgnn_cache("scenarios", temporary_ok=True)  # derived: may fall back
    out = root / f"{spec.get('kind', 'scenario')}-{digest}"
    if (out / "flow.json").is_file():
        return out
    kind = spec.pop("kind")
    roadnet, flows = generate(kind, **spec)  # before the cache is touched: a failure writes nothing
    tmp = root / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "roadnet.json").write_text(json.dumps(roadnet))
    (tmp / "flow.json").write_text(json.dumps(flows))
    (tmp / "spec.json").write_text(key)
    try:
        os.replace(tmp, out)
    except OSError:  # generated concurrently by another process
        shutil.rmtree(tmp, ignore_errors=True)
    return out
