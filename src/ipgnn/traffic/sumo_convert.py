"""Convert a CityFlow-format scenario to SUMO (``netconvert`` + a route file), once, with a cache.

The conversion follows the measured pitfalls of running CityFlow scenarios on SUMO:

1. **Lane order is reversed**: CityFlow's lane 0 is the innermost (leftmost); SUMO's lane 0 is the
   rightmost, so SUMO lane = ``n - 1 -`` CityFlow lane.
2. **Phase k is CityFlow's ``lightphases[k]``**: every connection's ``linkIndex`` is pinned to its
   road link's index in ``roadLinks`` (all lane links of a road link share it), so the state string of
   SUMO phase k has one character per road link.
3. **Greens yield by CityFlow's priority** (straight > left > right): where two road links green in
   the same phase conflict (netconvert's own foe matrix, read after a first build), the lower-priority
   one gets ``g``; the net is then built again with those states.
4. **The transition phase** (green only for always-green links) shows ``y`` where other phases are
   green, not ``r``.
5. **Vehicle types** map ``usualPosAcc``/``usualNegAcc``/``maxNegAcc``/``headwayTime`` to
   ``accel``/``decel``/``emergencyDecel``/``tau``, ``sigma = 0``; turning connections run at 8.333 m/s;
   no turnarounds; vehicles depart at speed 0 on the best lane at their scheduled time.

Run options that belong with the conversion (no teleporting, so congestion is not flattered) are in
:data:`SUMO_OPTIONS`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ipgnn.cache import cache_dir as ipgnn_cache_dir
from ipgnn.traffic.scenario import Scenario, ScenarioError, scenario_digest

TURN_SPEED = 8.333  # m/s, CityFlow's turning speed
PRIORITY = {"go_straight": 3, "turn_left": 2, "turn_right": 1}
SUMO_OPTIONS = [
    "--time-to-teleport",
    "-1",
    "--no-step-log",
    "true",
    "--no-warnings",
    "true",
    "--collision.action",
    "warn",
]
CONVERTER_VERSION = "2"


def sumo_binary(name: str) -> str:
    """Path of a SUMO tool (``netconvert``, ``sumo``) from the ``eclipse-sumo`` wheel or ``SUMO_HOME``."""
    homes = []
    try:
        import sumo  # the eclipse-sumo wheel

        homes.append(Path(sumo.SUMO_HOME))
    except ImportError:
        pass
    if os.environ.get("SUMO_HOME"):
        homes.append(Path(os.environ["SUMO_HOME"]))
    for home in homes:
        exe = home / "bin" / name
        if exe.is_file():
            return str(exe)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(
        f"SUMO's '{name}' was not found: install the traffic extra "
        "(pip install 'ipgnn[traffic]', which brings eclipse-sumo and libsumo) or set SUMO_HOME"
    )


@dataclass
class SumoScenario:
    """Paths of a converted scenario."""

    net: Path
    routes: Path
    vehicles: int  # vehicles scheduled by flow.json
    states: dict[str, list[str]]  # tls id -> SUMO state string per CityFlow phase


def _sumo_lane(road_lanes: int, cityflow_lane: int) -> int:
    return road_lanes - 1 - cityflow_lane


def _write_plain(sc: Scenario, out: Path, states: dict[str, list[str]] | None) -> None:
    agents = {a.id for a in sc.intersections}
    nodes = ET.Element("nodes")
    for nid, (x, y) in sc.points.items():
        attrs = {"id": nid, "x": f"{x:.2f}", "y": f"{y:.2f}"}
        if nid in agents:
            attrs |= {"type": "traffic_light", "tl": nid}
        else:
            attrs["type"] = "priority"
        ET.SubElement(nodes, "node", attrs)
    ET.ElementTree(nodes).write(out / "nodes.nod.xml")

    edges = ET.Element("edges")
    for r in sc.roads.values():
        attrs = {
            "id": r.id,
            "from": r.start,
            "to": r.end,
            "numLanes": str(r.num_lanes),
            "speed": f"{max(r.max_speed):.3f}",
            "width": f"{r.lane_width[0]:.2f}",
            "priority": "1",
        }
        if len(r.points) > 2:
            attrs["shape"] = " ".join(f"{x:.2f},{y:.2f}" for x, y in r.points)
        ET.SubElement(edges, "edge", attrs)
    ET.ElementTree(edges).write(out / "edges.edg.xml")

    cons = ET.Element("connections")
    for a in sc.intersections:
        for link in a.road_links:
            n_in, n_out = sc.roads[link.start_road].num_lanes, sc.roads[link.end_road].num_lanes
            for lane_in, lane_out in link.lane_links:
                attrs = {
                    "from": link.start_road,
                    "to": link.end_road,
                    "fromLane": str(_sumo_lane(n_in, lane_in)),
                    "toLane": str(_sumo_lane(n_out, lane_out)),
                }
                if link.kind != "go_straight":
                    attrs["speed"] = f"{TURN_SPEED}"
                ET.SubElement(cons, "connection", attrs)
    ET.ElementTree(cons).write(out / "connections.con.xml")

    # signal groups: netconvert honours a connection's linkIndex only inside the tllogic file
    tls = ET.Element("tlLogics")
    for a in sc.intersections:
        logic = ET.SubElement(tls, "tlLogic", {"id": a.id, "programID": "0", "offset": "0", "type": "static"})
        for k, t in enumerate(a.phase_times):
            state = states[a.id][k] if states else _states_all_major(a)[k]
            ET.SubElement(logic, "phase", {"duration": f"{max(t, 1.0):g}", "state": state})
    for a in sc.intersections:
        for k, link in enumerate(a.road_links):
            n_in, n_out = sc.roads[link.start_road].num_lanes, sc.roads[link.end_road].num_lanes
            for lane_in, lane_out in link.lane_links:
                ET.SubElement(
                    tls,
                    "connection",
                    {
                        "from": link.start_road,
                        "to": link.end_road,
                        "fromLane": str(_sumo_lane(n_in, lane_in)),
                        "toLane": str(_sumo_lane(n_out, lane_out)),
                        "tl": a.id,
                        "linkIndex": str(k),
                    },
                )
    ET.ElementTree(tls).write(out / "tls.tll.xml")


def _states_all_major(a) -> list[str]:
    """First-pass states: green ``G`` where CityFlow's phase is green, ``y`` in the transition phase
    for links green elsewhere, ``r`` otherwise."""
    ever_green = set().union(*map(set, a.phases))
    out = []
    for k, phase in enumerate(a.phases):
        green = set(phase)
        chars = []
        for i in range(len(a.road_links)):
            if i in green:
                chars.append("G")
            elif k == a.transition_phase and i in ever_green:
                chars.append("y")
            else:
                chars.append("r")
        out.append("".join(chars))
    return out


def _netconvert(out: Path) -> Path:
    net = out / "network.net.xml"
    cmd = [
        sumo_binary("netconvert"),
        "--node-files",
        str(out / "nodes.nod.xml"),
        "--edge-files",
        str(out / "edges.edg.xml"),
        "--connection-files",
        str(out / "connections.con.xml"),
        "--tllogic-files",
        str(out / "tls.tll.xml"),
        "--no-turnarounds",
        "true",
        "--junctions.corner-detail",
        "0",
        "--output-file",
        str(net),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ScenarioError(f"netconvert failed on {out}: {proc.stderr.strip()[-2000:]}")
    (out / "netconvert.log").write_text(proc.stdout + proc.stderr)
    return net


def _tls_foes(net: Path) -> dict[str, set[tuple[int, int]]]:
    """Pairs of conflicting TLS link indices per traffic light, from netconvert's junction foe matrix.

    A junction's ``request`` index ``i`` is its ``i``-th internal lane (``intLanes``); the connection
    whose ``via`` is that lane carries the TLS ``linkIndex``."""
    root = ET.parse(net).getroot()
    via_to_link = {
        c.get("via"): int(c.get("linkIndex"))
        for c in root.iter("connection")
        if c.get("via") and c.get("tl") and c.get("linkIndex") is not None
    }
    foes: dict[str, set[tuple[int, int]]] = {}
    for j in root.iter("junction"):
        if j.get("type") != "traffic_light":
            continue
        lanes = j.get("intLanes", "").split()
        mapping = {i: via_to_link[lane] for i, lane in enumerate(lanes) if lane in via_to_link}
        pairs: set[tuple[int, int]] = set()
        for req in j.iter("request"):
            a = int(req.get("index"))
            bits = req.get("foes", "")[::-1]  # rightmost character is request index 0
            for b, bit in enumerate(bits):
                if bit == "1" and a in mapping and b in mapping and mapping[a] != mapping[b]:
                    pairs.add((mapping[a], mapping[b]))
        foes[j.get("id")] = pairs
    return foes


def _yielding_states(sc: Scenario, foes: dict[str, set[tuple[int, int]]]) -> dict[str, list[str]]:
    states = {}
    for a in sc.intersections:
        base = _states_all_major(a)
        pairs = foes.get(a.id, set())
        out = []
        for k, phase in enumerate(a.phases):
            chars = list(base[k])
            green = set(phase)
            for i, j in pairs:
                if i in green and j in green:
                    pi, pj = PRIORITY.get(a.road_links[i].kind, 0), PRIORITY.get(a.road_links[j].kind, 0)
                    if pi <= pj:
                        chars[i] = "g"  # i yields to j (both yield when equal)
            out.append("".join(chars))
        states[a.id] = out
    return states


def _write_routes(sc: Scenario, path: Path, horizon: float | None = None) -> int:
    """One ``<vehicle>`` per scheduled CityFlow vehicle (startTime + k*interval <= endTime), in
    departure order, with a vType per distinct vehicle parameter set. CityFlow's ``endTime: -1``
    ("until the simulation ends") runs to ``horizon``: by default the latest finite time in the file,
    and at least one hour."""
    if horizon is None:
        finite = [float(f["endTime"]) for f in sc.flows if float(f["endTime"]) >= 0]
        finite += [float(f["startTime"]) for f in sc.flows]
        horizon = max([3600.0, *finite])
    root = ET.Element("routes")
    vtypes: dict[str, str] = {}
    departures = []
    for k, f in enumerate(sc.flows):
        v = f["vehicle"]
        key = json.dumps(v, sort_keys=True)
        if key not in vtypes:
            vid = f"t{len(vtypes)}"
            vtypes[key] = vid
            ET.SubElement(
                root,
                "vType",
                {
                    "id": vid,
                    "length": str(v.get("length", 5.0)),
                    "width": str(v.get("width", 2.0)),
                    "minGap": str(v.get("minGap", 2.5)),
                    "maxSpeed": str(v.get("maxSpeed", 11.111)),
                    "accel": str(v.get("usualPosAcc", 2.0)),
                    "decel": str(v.get("usualNegAcc", 4.5)),
                    "emergencyDecel": str(v.get("maxNegAcc", 4.5)),
                    "tau": str(v.get("headwayTime", 1.5)),
                    "sigma": "0",
                },
            )
        start, end, interval = float(f["startTime"]), float(f["endTime"]), float(f["interval"])
        if end < 0:
            end = horizon
        t, n = start, 0
        while t <= end + 1e-9:
            departures.append((t, k, n))
            n += 1
            if interval <= 0:
                break
            t = start + n * interval
    departures.sort()
    for t, k, n in departures:
        veh = ET.SubElement(
            root,
            "vehicle",
            {
                "id": f"flow_{k}_{n}",
                "type": vtypes[json.dumps(sc.flows[k]["vehicle"], sort_keys=True)],
                "depart": f"{t:.2f}",
                "departSpeed": "0",
                "departLane": "best",
            },
        )
        ET.SubElement(veh, "route", {"edges": " ".join(sc.flows[k]["route"])})
    ET.ElementTree(root).write(path)
    return len(departures)


def default_cache_dir() -> Path:
    """``<cache>/sumo`` (:func:`ipgnn.cache.cache_dir`; scenario data sets are often read-only): conversions
    can be made again, so an unwritable cache falls back to a temporary one, with a warning."""
    return ipgnn_cache_dir("sumo", temporary_ok=True)


def _digest(sc: Scenario) -> str:
    return scenario_digest(sc, salt=CONVERTER_VERSION)  # the same keys as before this helper existed


def convert(sc: Scenario, cache_dir: str | Path | None = None) -> SumoScenario:
    """Convert ``sc`` to SUMO, reusing ``<cache_dir>/<digest>/`` when the same files were converted
    before (the digest covers the roadnet, the flows and the converter's version)."""
    out = (Path(cache_dir) if cache_dir else default_cache_dir()) / _digest(sc)
    meta = out / "conversion.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        return SumoScenario(out / "network.net.xml", out / "routes.rou.xml", m["vehicles"], m["states"])
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_plain(sc, tmp, None)
        net = _netconvert(tmp)  # first build: learn the foes
        states = _yielding_states(sc, _tls_foes(net))
        _write_plain(sc, tmp, states)
        _netconvert(tmp)  # second build with yielding greens
        vehicles = _write_routes(sc, tmp / "routes.rou.xml")
        (tmp / "conversion.json").write_text(json.dumps({"vehicles": vehicles, "states": states}))
    except BaseException:  # a failed conversion leaves no half-written directory in the cache
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, out)  # atomic publish of the whole directory
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
    return SumoScenario(out / "network.net.xml", out / "routes.rou.xml", vehicles, states)
