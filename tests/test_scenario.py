"""The CityFlow scenario loader on the real data sets in ../shared/data/cityflow/ (skipped when absent)
and on deliberately broken copies."""

import copy
import json

import networkx as nx
import pytest

from ipgnn.traffic import ScenarioError, load_scenario

from conftest import REPO

DATA = REPO.parent / "shared" / "data" / "cityflow"
SCENARIOS = ["hangzhou_4x4", "syn_4x4_gaussian"]


def need(name):
    path = DATA / name
    if not (path / "roadnet.json").is_file():
        pytest.skip(f"{path} not present (the shared data sets are optional)")
    return path


@pytest.mark.parametrize("name", SCENARIOS)
def test_real_4x4_scenarios_load_as_a_grid_of_16_agents(name):
    sc = load_scenario(need(name))
    assert sc.num_agents == 16
    g = sc.to_networkx()
    assert nx.is_isomorphic(g, nx.grid_2d_graph(4, 4))  # the road graph between signalised intersections
    ei = sc.edge_index()
    assert ei.shape == (2, 48) and not (ei[0] == ei[1]).any()
    a = sc.intersections[0]
    assert len(a.incoming_lanes) == 12 and len(a.outgoing_lanes) == 12  # 4 approaches x 3 lanes
    # lightphases[0] keeps only the always-green right turns: the transition phase, not an action
    assert a.transition_phase == 0 and a.action_phases == list(range(1, 9))
    kinds = {a.road_links[i].kind for i in set(a.phases[0])}
    assert kinds == {"turn_right"}
    assert sc.padded()["action_mask"].shape == (16, 8) and sc.padded()["action_mask"].all()
    assert sc.positions().shape == (16, 2)
    assert len(sc.flows) > 1000


def write_broken(tmp_path, mutate, name="hangzhou_4x4"):
    src = need(name)
    road = json.loads((src / "roadnet.json").read_text())
    flow = json.loads((src / "flow.json").read_text())
    road, flow = mutate(copy.deepcopy(road), copy.deepcopy(flow))
    (tmp_path / "roadnet.json").write_text(json.dumps(road))
    (tmp_path / "flow.json").write_text(json.dumps(flow))
    return tmp_path


def first_signal(road):
    return next(i for i in road["intersections"] if not i["virtual"])


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda r, f: (r | {"roads": r["roads"][1:]}, f), r"unknown road|route names unknown road"),
        (
            lambda r, f: (first_signal(r)["trafficLight"]["lightphases"][1]["availableRoadLinks"].append(99) or r, f),
            r"intersection 'intersection_1_1': trafficLight.lightphases\[1\]: availableRoadLinks \[99\]",
        ),
        (
            lambda r, f: (first_signal(r).pop("roadLinks") and r, f),
            r"intersection 'intersection_1_1': missing key 'roadLinks'",
        ),
        (
            lambda r, f: (r, [f[0] | {"route": [f[0]["route"][0], f[0]["route"][-1]]}] + f[1:]),
            r"flow\[0\]: route is not connected",
        ),
        (lambda r, f: (r, [f[0] | {"interval": "often"}] + f[1:]), r"flow\[0\]: 'interval' should be"),
    ],
)
def test_malformed_files_name_file_element_and_problem(tmp_path, mutate, expected):
    path = write_broken(tmp_path, mutate)
    with pytest.raises(ScenarioError, match=expected) as e:
        load_scenario(path)
    assert str(path) in str(e.value)


def test_lane_link_out_of_range(tmp_path):
    def mutate(r, f):
        first_signal(r)["roadLinks"][0]["laneLinks"][0]["startLaneIndex"] = 7
        return r, f

    with pytest.raises(ScenarioError, match=r"roadLinks\[0\]: laneLinks\[0\] lane 7->"):
        load_scenario(write_broken(tmp_path, mutate))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path)
    (tmp_path / "roadnet.json").write_text("{not json")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        load_scenario(tmp_path)
