"""The CityFlow -> SUMO conversion and the SUMO engine, on the real Hangzhou 4x4 scenario with the real
simulator (libsumo from the eclipse-sumo/libsumo wheels of the dev extra)."""

import pytest
from test_scenario import need

from ipgnn.traffic import load_scenario
from ipgnn.traffic.controllers import FixedTime, MaxPressure, run_controller
from ipgnn.traffic.sumo_convert import convert
from ipgnn.traffic.sumo_engine import SumoEngine

libsumo = pytest.importorskip("libsumo")


@pytest.fixture(scope="module")
def hangzhou(tmp_path_factory):
    sc = load_scenario(need("hangzhou_4x4"))
    return sc, convert(sc, tmp_path_factory.mktemp("sumo"))


def test_conversion_is_cached(hangzhou, tmp_path):
    sc, conv = hangzhou
    again = convert(sc, conv.net.parent.parent)
    assert again.net == conv.net and again.vehicles == conv.vehicles == 2983  # one per flow entry here


def test_network_loads_and_each_phase_is_one_sumo_phase(hangzhou):
    sc, conv = hangzhou
    log = (conv.net.parent / "netconvert.log").read_text()
    assert "Error" not in log and "Success" in log
    eng = SumoEngine(sc, conv)
    try:
        for a in sc.intersections:
            logic = libsumo.trafficlight.getAllProgramLogics(a.id)[0]
            assert len(logic.phases) == len(a.phases)
            for k, phase in enumerate(logic.phases):
                assert len(phase.state) == len(a.road_links)
                green = {i for i, ch in enumerate(phase.state) if ch in "Gg"}
                assert green == set(a.phases[k]), (a.id, k, phase.state)
            # every lane connection is controlled by the signal of its CityFlow road link
            links = libsumo.trafficlight.getControlledLinks(a.id)
            for k, link in enumerate(a.road_links):
                got = {(f, t) for f, t, _ in links[k]}
                want = {
                    (
                        f"{link.start_road}_{sc.roads[link.start_road].num_lanes - 1 - i}",
                        f"{link.end_road}_{sc.roads[link.end_road].num_lanes - 1 - o}",
                    )
                    for i, o in link.lane_links
                }
                assert got == want, (a.id, k)
    finally:
        eng.close()


def test_left_turns_leave_from_the_innermost_lane(hangzhou):
    """CityFlow lane 0 is the innermost; SUMO's innermost lane is the highest index."""
    sc, conv = hangzhou
    a = sc.intersections[0]
    left = next(l for l in a.road_links if l.kind == "turn_left")
    assert {i for i, _ in left.lane_links} == {0}
    eng = SumoEngine(sc, conv)
    try:
        n = sc.roads[left.start_road].num_lanes
        assert eng.lane_map[f"{left.start_road}_0"] == f"{left.start_road}_{n - 1}"
    finally:
        eng.close()


@pytest.mark.slow
def test_maxpressure_beats_fixed_time_and_inserts_every_vehicle(hangzhou):
    sc, conv = hangzhou
    results = {}
    for name, ctl in (("fixed", FixedTime(sc)), ("maxpressure", MaxPressure(sc))):
        eng = SumoEngine(sc, conv, seed=0)
        try:
            results[name] = run_controller(eng, sc, ctl, 3600) | {"inserted": eng.inserted}
        finally:
            eng.close()
    assert results["maxpressure"]["inserted"] == conv.vehicles  # every vehicle of flow.json entered
    assert results["maxpressure"]["average_travel_time"] < 0.8 * results["fixed"]["average_travel_time"]
    # a faithful conversion agrees with the engines' measured figures (notes/traffic-engines.md:
    # SUMO 586 s / 352 s, CityFlow 591 s / 362 s) to within 10 %
    assert results["fixed"]["average_travel_time"] == pytest.approx(590, rel=0.1)
    assert results["maxpressure"]["average_travel_time"] == pytest.approx(355, rel=0.1)


def test_lower_priority_greens_yield(hangzhou):
    """Right turns merging into a green straight movement yield ('g'); the transition phase keeps only
    the right turns green and shows yellow elsewhere (states read from netconvert's foe matrix)."""
    sc, conv = hangzhou
    states = conv.states["intersection_1_1"]
    assert states[0] == "yyGGyyGyyyGy"
    assert states[1] == "GrGgrrGGrrgr"  # straights 0 and 7 green; right turns 3 and 10 yield to them


def test_open_ended_flows_run_to_the_horizon(tmp_path):
    import json

    from ipgnn.traffic.generate import materialise

    d = materialise({"kind": "grid", "rows": 1, "cols": 1, "rate": 30}, tmp_path / "gen")
    flows = json.loads((d / "flow.json").read_text())
    flows = [flows[0] | {"startTime": 0, "endTime": -1, "interval": 100.0}]  # CityFlow: -1 = no end
    out = tmp_path / "scenario"
    out.mkdir()
    (out / "roadnet.json").write_text((d / "roadnet.json").read_text())
    (out / "flow.json").write_text(json.dumps(flows))
    conv = convert(load_scenario(out), tmp_path / "sumo")
    assert conv.vehicles == 37  # t = 0, 100, ..., 3600
