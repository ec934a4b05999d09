"""Advanced-MP and SOTL: each rule against a hand computation on a constructed state of a real intersection
(Hangzhou 4x4's intersection_2_2), and each policy driving the real engines (CityFlow and SUMO).

intersection_2_2's road links (start road -> end road, kind, start lanes) and action phases, read from the
data set's roadnet.json; W, S, E, N are the approaches (road_1_2_0 comes from the west, and so on):

    0 road_1_2_0 -> road_2_2_0 straight [1]     slot 0 (phase 1): W straight (0), E straight (7)
    1 road_1_2_0 -> road_2_2_1 left     [0]     slot 1 (phase 2): S straight (4), N straight (11)
    4 road_2_1_1 -> road_2_2_1 straight [1]     slot 2 (phase 3): W left (1), E left (8)
    5 road_2_1_1 -> road_2_2_2 left     [0]     slot 3 (phase 4): S left (5), N left (9)
    7 road_3_2_2 -> road_2_2_2 straight [1]     slot 4 (phase 5): W straight and left (0, 1)
    8 road_3_2_2 -> road_2_2_3 left     [0]     slot 5 (phase 6): E straight and left (7, 8)
    9 road_2_3_3 -> road_2_2_0 left     [0]     slot 6 (phase 7): S straight and left (4, 5)
   11 road_2_3_3 -> road_2_2_3 straight [1]     slot 7 (phase 8): N straight and left (9, 11)

and right turns (lane 2 of each incoming road) green in every phase. Every road has 3 lanes.
"""

from pathlib import Path

import numpy as np
import pytest

from ipgnn.traffic.controllers import AdvancedMaxPressure, SelfOrganizingLights
from ipgnn.traffic.scenario import load_scenario

from conftest import ENGINES

HANGZHOU = Path(__file__).resolve().parents[2] / "shared" / "data" / "cityflow" / "hangzhou_4x4"
if not HANGZHOU.is_dir():  # the data set is packaged with ../shared, not with the package
    pytest.skip(f"Hangzhou 4x4 not found at {HANGZHOU}", allow_module_level=True)

AGENT = 5  # intersection_2_2 in file order


@pytest.fixture(scope="module")
def scenario():
    sc = load_scenario(HANGZHOU)
    assert sc.intersections[AGENT].id == "intersection_2_2"
    return sc


@pytest.fixture(scope="module")
def lanes(scenario):
    return sorted(f"{r.id}_{k}" for r in scenario.roads.values() for k in range(r.num_lanes))


def state(lanes, **vehicles):
    """A lane vector with ``road_x_y_d__k=v`` for v vehicles on lane k of road_x_y_d."""
    v = np.zeros(len(lanes))
    for key, n in vehicles.items():
        v[lanes.index(key.replace("__", "_"))] = n
    return v


def current(scenario, slot):
    c = np.zeros(scenario.num_agents, np.int64)
    c[AGENT] = slot
    return c


# halted vehicles: W straight 6, W left 2, W right 100 (right turns are no phase's movement: ignored), N left 4;
# the east exit road_2_2_0 holds 3 on one lane (mean 1), the north exit road_2_2_1 3 on one lane (mean 1).
# Efficient pressure per movement: W straight 6 - 1 = 5, W left 2 - 1 = 1, S straight 0 - 1 = -1, N left 4 - 1 = 3,
# the others 0. Per slot: 0: 5, 1: -1, 2: 1, 3: 3, 4: 5 + 1 = 6, 5: 0, 6: -1, 7: 3 -> the best is slot 4 (6).
HALTED = dict(road_1_2_0__1=6, road_1_2_0__0=2, road_1_2_0__2=100, road_2_3_3__0=4, road_2_2_0__0=3, road_2_2_1__2=3)


@pytest.mark.parametrize(
    "slot,running,weight,expected",
    [
        (1, {"road_2_1_1__1": 5}, 1.0, 4),  # slot 1 demand 5 < 6: switch to the best pressure
        (1, {"road_2_1_1__1": 6}, 1.0, 1),  # 6 >= 6: keep
        (1, {"road_2_1_1__1": 3, "road_2_3_3__1": 3}, 1.0, 1),  # both start lanes of slot 1 count: 6 >= 6
        (1, {"road_2_1_1__1": 3}, 2.0, 1),  # W = 2: 2 * 3 >= 6
        (1, {"road_2_1_1__2": 50}, 1.0, 4),  # vehicles on a right-turn lane are no demand of slot 1
        (4, {}, 1.0, 4),  # already on the best phase: kept, with no demand at all
        (7, {"road_2_3_3__0": 2, "road_2_3_3__1": 3}, 1.0, 4),  # slot 7 (N straight and left): 5 < 6: switch
        (7, {"road_2_3_3__0": 2, "road_2_3_3__1": 4}, 1.0, 7),  # 6 >= 6: keep
    ],
)
def test_advanced_mp_against_a_hand_computation(scenario, lanes, slot, running, weight, expected):
    rule = AdvancedMaxPressure(scenario, lanes, max(len(a.action_phases) for a in scenario.intersections), weight)
    out = rule(state(lanes, **HALTED), state(lanes, **running), current(scenario, slot))
    assert out[AGENT] == expected


def test_advanced_mp_efficient_pressure_values(scenario, lanes):
    rule = AdvancedMaxPressure(scenario, lanes, 8)
    p = rule.pressure(state(lanes, **HALTED))[AGENT]
    np.testing.assert_allclose(p, [5, -1, 1, 3, 6, 0, -1, 3])


# SOTL at slot 0 (phase 1: W and E straight, and every right turn): the green start lanes are road_1_2_0_1,
# road_3_2_2_1 and the four right-turn lanes; every other incoming lane is red.
@pytest.mark.parametrize(
    "slot,halted,seconds,expected",
    [
        (0, dict(road_1_2_0__1=2, road_2_1_1__2=1, road_2_3_3__0=4, road_2_1_1__1=3), 10, 1),  # g 3 <= 3, red 7 > 6
        (0, dict(road_1_2_0__1=2, road_2_1_1__2=1, road_2_3_3__0=4, road_2_1_1__1=2), 10, 0),  # red 6: not > 6
        (0, dict(road_1_2_0__1=4, road_2_3_3__0=9), 10, 0),  # g 4 > 3: keep
        (0, dict(road_2_3_3__0=1), 10, 1),  # g 0 and red 1 > 0
        (0, dict(road_2_3_3__0=9), 4, 0),  # under t_min (5 s): keep
        (0, dict(road_2_3_3__0=9), 5, 1),  # at t_min
        (7, dict(road_1_2_0__0=9), 10, 0),  # slot 7 (N): g 0, red 9: the next phase wraps to slot 0
        (0, {}, 10, 0),  # nobody waiting: keep
    ],
)
def test_sotl_against_a_hand_computation(scenario, lanes, slot, halted, seconds, expected):
    rule = SelfOrganizingLights(scenario, lanes, 8)
    seconds_in_phase = np.full(scenario.num_agents, seconds)
    assert rule(state(lanes, **halted), current(scenario, slot), seconds_in_phase)[AGENT] == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_rules_drive_the_real_engines(engine, tmp_path, monkeypatch):
    """Advanced-MP and SOTL run episodes on both engines: the moving-vehicle read never exceeds the moving
    vehicles on a lane, and both rules beat FixedTime's travel time on a generated grid."""
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path))
    from ipgnn.config import EnvConfig, GraphConfig
    from ipgnn.envs import make_env
    from ipgnn.runs import evaluate
    from ipgnn.traffic.controllers import advanced_max_pressure_policy, fixed_time_policy, sotl_policy

    cfg = EnvConfig(
        task="traffic",
        num_agents=4,
        max_steps=30,
        graph=GraphConfig(kind="env"),
        options={"scenario": {"kind": "grid", "rows": 2, "cols": 2, "rate": 600, "seed": 1}, "engine": engine},
    )
    env = make_env(cfg)
    raw = env.env
    try:
        att = {}
        for name, make in [("fixed", fixed_time_policy), ("amp", advanced_max_pressure_policy), ("sotl", sotl_policy)]:
            metrics = evaluate(make(raw), env, 1, 0)
            att[name] = metrics["eval/average_travel_time"]
            assert 0 < metrics["eval/average_travel_time_arrived"] < 300  # 30 decisions of 10 s
        raw.reset_arrays(seed=0)
        for _ in range(10):
            raw.step_arrays(np.zeros(4, np.int64))
        counts, halted = raw._read_lanes()
        moving = raw.moving_near_stop_line(1e9)
        assert (moving <= counts - halted + 1e-9).all() and moving.sum() > 0
        assert (raw.moving_near_stop_line(0.0) <= moving).all()
    finally:
        env.close()
    print(engine, att)
    assert att["amp"] < att["fixed"] and att["sotl"] < att["fixed"], att


@pytest.mark.parametrize("engine", ENGINES)
def test_the_running_feature_is_the_moving_vehicles_near_each_incoming_stop_line(engine, tmp_path, monkeypatch):
    """``features: [..., running]`` appends, per incoming lane, the vehicles moving within 167 m of its stop
    line (what Advanced-MP reads), padded with zeros; the other blocks are those of the default observation
    of the same episode, and the default stays the four features."""
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path))
    from ipgnn.config import EnvConfig, GraphConfig
    from ipgnn.envs import make_env
    from ipgnn.traffic.simulator_env import DEFAULT_FEATURES

    def env_with(features):
        options = {"scenario": {"kind": "grid", "rows": 2, "cols": 2, "rate": 900, "seed": 1}, "engine": engine}
        if features is not None:
            options["features"] = features
        cfg = EnvConfig(task="traffic", num_agents=4, max_steps=30, graph=GraphConfig(kind="env"), options=options)
        return make_env(cfg)

    actions = [np.full(4, t // 4 % 2, np.int64) for t in range(12)]
    plain = env_with(None)  # one after the other: libsumo runs one simulation per process
    try:
        a = plain.env
        assert a.features == DEFAULT_FEATURES
        a.reset_arrays(seed=0)
        default_obs, dim = [a.step_arrays(act)[0] for act in actions], a.obs_dim
    finally:
        plain.close()
    full = env_with([*DEFAULT_FEATURES, "running"])
    try:
        b = full.env
        assert b.obs_dim == dim + b.max_lanes
        b.reset_arrays(seed=0)
        seen = 0.0
        for act, x_a in zip(actions, default_obs, strict=True):
            x_b, *_ = b.step_arrays(act)
            assert np.array_equal(x_b[:, :dim], x_a)  # the first blocks: the default observation
            moving = np.append(b.moving_near_stop_line(167.0), 0.0)[b._in_idx]  # padded lanes -> 0
            assert np.array_equal(x_b[:, dim:], moving.astype(np.float32))
            counts, halted = b._read_lanes()
            lane_count = np.append(counts - halted, 0.0)[b._in_idx]
            assert (x_b[:, dim:] <= lane_count + 1e-6).all()  # moving vehicles of that very lane
            seen += float(x_b[:, dim:].sum())
        assert seen > 0
    finally:
        full.close()
