"""Malformed traffic scenarios, generator specs and traffic options: each ends in one clear error that names the
file or the key, before any engine starts, in milliseconds, and with nothing written to the cache or a run; and the
valid edge cases next to them are accepted. Scenario files are mutated copies of a real generated grid; the CLI
cases run ``ipgnn-train`` in-process on the real CityFlow engine where it is built."""

import json
import shutil
import time

import pytest

from ipgnn.cli import train_main
from ipgnn.traffic import ScenarioError, load_scenario
from ipgnn.traffic.generate import SpecError, check_spec, materialise

from conftest import CONFIGS, clean_failure, tiny

HANGZHOU = str(CONFIGS / "hangzhou16.yaml")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every case writes its cache under tmp_path/cache, so that "nothing written" can be checked."""
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A real 2 x 2 generated scenario (4 agents, routes with turns), outside every test's cache."""
    return materialise({"kind": "grid", "rows": 2, "cols": 2, "rate": 200, "seed": 1}, tmp_path_factory.mktemp("src"))


def nothing_written(tmp_path):
    """No cache entry and no run output: not even a run directory (Trainer.from_config removes the one it made
    when the run cannot start)."""
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))
    runs = tmp_path / "runs"
    left = list(runs.rglob("*")) if runs.exists() else []
    assert not left, left


def signal(rn):
    return next(i for i in rn["intersections"] if not i["virtual"])


def _set(d, k, v):
    d[k] = v


def _u_turn(rn, fl):
    """flow[0] turns back on its first road: the two roads meet, but no road link joins them."""
    first = next(r for r in rn["roads"] if r["id"] == fl[0]["route"][0])
    back = next(r for r in rn["roads"] if (r["startIntersection"], r["endIntersection"]) == (
        first["endIntersection"], first["startIntersection"]))  # fmt: skip
    fl[0]["route"] = [first["id"], back["id"]]


# id -> (file, mutation of (roadnet, flows), what the message must name)
MUTATIONS = {
    "zero-length-road": ("roadnet.json", lambda rn, fl: _set(rn["roads"][0], "points", [rn["roads"][0]["points"][0]] * 2), "length 0 m"),  # noqa: E501
    "infinite-length-road": ("roadnet.json", lambda rn, fl: _set(rn["roads"][0]["points"][1], "x", float("inf")), "finite number"),  # noqa: E501
    "self-loop-road": ("roadnet.json", lambda rn, fl: _set(rn["roads"][0], "endIntersection", rn["roads"][0]["startIntersection"]), "self-loop"),  # noqa: E501
    "lane-index-bool": ("roadnet.json", lambda rn, fl: _set(signal(rn)["roadLinks"][0]["laneLinks"][0], "startLaneIndex", True), "'startLaneIndex' should be int, got bool"),  # noqa: E501
    "lane-index-float": ("roadnet.json", lambda rn, fl: _set(signal(rn)["roadLinks"][0]["laneLinks"][0], "endLaneIndex", 0.0), "'endLaneIndex' should be int, got float"),  # noqa: E501
    "lane-index-string": ("roadnet.json", lambda rn, fl: _set(signal(rn)["roadLinks"][0]["laneLinks"][0], "startLaneIndex", "0"), "'startLaneIndex' should be int, got str"),  # noqa: E501
    "phase-index-float": ("roadnet.json", lambda rn, fl: _set(signal(rn)["trafficLight"]["lightphases"][1], "availableRoadLinks", [1.5]), "availableRoadLinks[0] should be an integer index"),  # noqa: E501
    "phase-index-string": ("roadnet.json", lambda rn, fl: _set(signal(rn)["trafficLight"]["lightphases"][1], "availableRoadLinks", [0, "0"]), "availableRoadLinks[1] should be an integer index"),  # noqa: E501
    "phase-index-bool": ("roadnet.json", lambda rn, fl: _set(signal(rn)["trafficLight"]["lightphases"][1], "availableRoadLinks", [True]), "availableRoadLinks[0] should be an integer index"),  # noqa: E501
    "route-u-turn-without-road-link": ("flow.json", _u_turn, "no road link at intersection"),
    "route-roads-apart": ("flow.json", lambda rn, fl: _set(fl[0], "route", [fl[0]["route"][0], fl[0]["route"][0]]), "route is not connected"),  # noqa: E501
    "route-road-not-a-string": ("flow.json", lambda rn, fl: _set(fl[0], "route", [["x"]]), "unknown road"),
    "flow-interval-tiny": ("flow.json", lambda rn, fl: fl[0].update(interval=1e-9, endTime=3600), "at most 200,000"),
    "flow-interval-tiny-until-the-end": ("flow.json", lambda rn, fl: fl[0].update(interval=1e-6, endTime=-1), "flow[0] alone"),  # noqa: E501
}  # fmt: skip


def mutated(grid, tmp_path, case):
    """A copy of ``grid`` in tmp_path/bad with MUTATIONS[case] applied; returns (directory, file, names)."""
    name, mutate, names = MUTATIONS[case]
    d = tmp_path / "bad"
    shutil.copytree(grid, d)
    rn, fl = json.loads((d / "roadnet.json").read_text()), json.loads((d / "flow.json").read_text())
    mutate(rn, fl)
    (d / "roadnet.json").write_text(json.dumps(rn))
    (d / "flow.json").write_text(json.dumps(fl))
    return d, name, names


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_malformed_scenario_is_refused_by_the_loader(grid, tmp_path, case):
    d, name, names = mutated(grid, tmp_path, case)
    start = time.perf_counter()
    with pytest.raises(ScenarioError) as e:
        load_scenario(d)
    assert time.perf_counter() - start < 2.0  # counted, never enumerated
    msg = str(e.value)
    assert str(d / name) in msg and names in msg and "\n" not in msg, msg
    assert len(msg) < 600


def _binary(path):
    path.write_bytes(bytes(range(128, 256)) * 4)


def _huge(path):
    with path.open("wb") as fh:  # sparse: 129 MiB on paper, nothing on disk, refused before a byte is read
        fh.truncate(129 * 2**20)


def _deep(path):
    path.write_text("[" * 200_000 + "]" * 200_000)


UNREADABLE = {
    "binary-roadnet": ("roadnet.json", _binary, "not UTF-8 text (byte 0x80 at offset 0)"),
    "binary-flow": ("flow.json", _binary, "not UTF-8 text"),
    "huge-roadnet": ("roadnet.json", _huge, "larger than 128 MiB"),
    "huge-flow": ("flow.json", _huge, "larger than 128 MiB"),
    "deeply-nested-flow": ("flow.json", _deep, "nested too deeply"),
    "roadnet-is-a-directory": ("roadnet.json", lambda p: (p.unlink(), p.mkdir()), "is not a regular file"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_scenario_file_is_named(grid, tmp_path, case):
    name, spoil, names = UNREADABLE[case]
    d = tmp_path / "bad"
    shutil.copytree(grid, d)
    spoil(d / name)
    with pytest.raises(ScenarioError) as e:
        load_scenario(d)
    assert str(d / name) in str(e.value) and names in str(e.value), str(e.value)


def train(tmp_path, *overrides):
    """ipgnn-train on the Hangzhou config made tiny, with ``overrides`` (CityFlow, 5 decisions unless overridden)."""
    return train_main(
        [
            "--config",
            HANGZHOU,
            *tiny(tmp_path),
            "--train.total_steps=20",
            "--env.max_steps=5",
            "--env.options.engine=cityflow",
            *overrides,
        ]
    )


@pytest.fixture
def cityflow():
    pytest.importorskip("cityflow", reason="CityFlow not importable: ipgnn-data build-cityflow")


@pytest.mark.parametrize("case", ["zero-length-road", "self-loop-road", "route-u-turn-without-road-link"])
def test_malformed_scenario_fails_ipgnn_train(grid, tmp_path, capsys, cityflow, case):
    d, name, names = mutated(grid, tmp_path, case)
    rc = train(tmp_path, f"--env.options.scenario={d}", "--env.num_agents=4")
    err = clean_failure(rc, capsys, names, 2)
    assert "env.options.scenario" in err and name in err
    nothing_written(tmp_path)


def _shift_flows(d, start, end=None):
    fl = json.loads((d / "flow.json").read_text())
    for f in fl:
        f["startTime"], f["endTime"] = start, start if end is None else end
    (d / "flow.json").write_text(json.dumps(fl))


def test_demand_after_the_episode_fails_naming_max_steps(grid, tmp_path, capsys, cityflow):
    """5 decisions of 10 s simulate 50 s; every flow starts at 50 s: refused (all metrics would be 0)."""
    d = tmp_path / "late"
    shutil.copytree(grid, d)
    _shift_flows(d, 50)
    err = clean_failure(
        train(tmp_path, f"--env.options.scenario={d}", "--env.num_agents=4"), capsys, "env.max_steps", 2
    )
    assert "starts at 50 s" in err and "at least 6" in err and str(d / "flow.json") in err
    nothing_written(tmp_path)


def test_vehicles_of_one_episode_are_bounded(grid, tmp_path, capsys, cityflow):
    """A flow of one vehicle every 0.02 s until the end: 180 000 in the file's hour (accepted), 500 000 in an
    episode of 1000 decisions of 10 s (refused before an engine starts)."""
    d = tmp_path / "dense"
    shutil.copytree(grid, d)
    fl = json.loads((d / "flow.json").read_text())
    fl[0].update(interval=0.02, startTime=0, endTime=-1)
    (d / "flow.json").write_text(json.dumps(fl))
    load_scenario(d)
    start = time.perf_counter()
    rc = train(tmp_path, f"--env.options.scenario={d}", "--env.num_agents=4", "--env.max_steps=1000")
    err = clean_failure(rc, capsys, "env.max_steps", 2)
    assert time.perf_counter() - start < 30 and "at most 200,000" in err and "flow[0]" in err
    nothing_written(tmp_path)


@pytest.mark.parametrize(
    "start,end",
    [(49, 49), (0, 50)],
    ids=["flow-starting-in-the-last-second", "flow-ending-exactly-at-the-horizon"],
)
def test_demand_at_the_edge_of_the_episode_is_accepted(grid, tmp_path, cityflow, start, end):
    from ipgnn.config import EnvConfig, GraphConfig
    from ipgnn.envs import make_env

    d = tmp_path / "edge"
    shutil.copytree(grid, d)
    _shift_flows(d, start, end)
    opts = {"scenario": str(d), "engine": "cityflow"}
    env = make_env(EnvConfig(task="traffic", num_agents=4, max_steps=5, graph=GraphConfig(kind="env"), options=opts))
    env.reset(seed=0)
    env.close()


# generator parameters: (override of env.options.scenario, the key the message names, and a word of the range)
SPECS = {
    "rows-zero": ("{kind: grid, rows: 0, cols: 2}", "env.options.scenario.rows", "from 1 to 10000"),
    "rows-negative": ("{kind: grid, rows: -3, cols: 2}", "env.options.scenario.rows", "got -3"),
    "rows-bool": ("{kind: grid, rows: true, cols: 2}", "env.options.scenario.rows", "got True"),
    "rows-string": ("{kind: grid, rows: '3', cols: 2}", "env.options.scenario.rows", "expected an integer"),
    "rows-float": ("{kind: grid, rows: 2.5, cols: 2}", "env.options.scenario.rows", "expected an integer"),
    "cols-missing": ("{kind: grid, rows: 2}", "env.options.scenario.cols", "required"),
    "grid-too-large": ("{kind: grid, rows: 1000, cols: 1000}", "env.options.scenario.rows", "at most 10,000"),
    "cols-absurd": ("{kind: grid, rows: 2, cols: 1000000000}", "env.options.scenario.cols", "from 1 to 10000"),
    "rate-zero": ("{kind: grid, rows: 2, cols: 2, rate: 0}", "env.options.scenario.rate", "vehicles/h"),
    "rate-negative": ("{kind: grid, rows: 2, cols: 2, rate: -300}", "env.options.scenario.rate", "vehicles/h"),
    "rate-nan": ("{kind: grid, rows: 2, cols: 2, rate: .nan}", "env.options.scenario.rate", "got nan"),
    "rate-string": ("{kind: grid, rows: 2, cols: 2, rate: fast}", "env.options.scenario.rate", "'fast'"),
    "rate-absurd": ("{kind: grid, rows: 2, cols: 2, rate: 1.0e+12}", "env.options.scenario.rate", "to 7200"),
    "vehicles-too-many": (
        "{kind: grid, rows: 100, cols: 100, rate: 7200, horizon: 86400}",
        "env.options.scenario.rate",
        "at most 200,000 vehicles",
    ),
    "horizon-zero": ("{kind: grid, rows: 2, cols: 2, horizon: 0}", "env.options.scenario.horizon", "from 1 to 86400"),
    "lanes-zero": ("{kind: grid, rows: 2, cols: 2, lanes: 0}", "env.options.scenario.lanes", "from 1 to 6"),
    "block-zero": ("{kind: grid, rows: 2, cols: 2, block: 0}", "env.options.scenario.block", "from 50 to 5000 m"),
    "speed-negative": ("{kind: grid, rows: 2, cols: 2, speed: -1}", "env.options.scenario.speed", "m/s"),
    "seed-negative": ("{kind: grid, rows: 2, cols: 2, seed: -1}", "env.options.scenario.seed", "from 0"),
    "seed-beyond-64-bits": ("{kind: grid, rows: 2, cols: 2, seed: 36893488147419103232}", "scenario.seed", "from 0"),
    "demand-unknown": ("{kind: grid, rows: 2, cols: 2, demand: chaos}", "env.options.scenario.demand", "gaussian"),
    "kind-unknown": ("{kind: hexagon}", "env.options.scenario.kind", "'grid' or 'manhattan'"),
    "key-unknown": ("{kind: grid, rows: 2, cols: 2, colz: 3}", "env.options.scenario.colz", "valid: kind"),
    "manhattan-streets-zero": ("{kind: manhattan, streets: 0}", "env.options.scenario.streets", "from 1"),
    "manhattan-too-large": ("{kind: manhattan, streets: 200, avenues: 60}", "scenario.streets", "at most 10,000"),
}


@pytest.mark.parametrize("case", list(SPECS))
def test_bad_generator_spec_fails_in_milliseconds(tmp_path, capsys, case):
    spec, key, words = SPECS[case]
    start = time.perf_counter()
    rc = train_main(["--config", HANGZHOU, *tiny(tmp_path), f"--env.options.scenario={spec}", "--env.num_agents=4"])
    err = clean_failure(rc, capsys, key, 2)
    assert words in err, err
    assert time.perf_counter() - start < 10  # the limits are checked before anything is built (seconds: imports)
    nothing_written(tmp_path)


def test_generator_limits_are_checked_before_the_network_is_built():
    start = time.perf_counter()
    with pytest.raises(SpecError) as e:
        check_spec({"kind": "grid", "rows": 100, "cols": 100, "rate": 7200, "horizon": 86400})
    assert time.perf_counter() - start < 2.0 and e.value.key == "rate"


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "grid", "rows": 1, "cols": 1, "rate": 7200, "horizon": 60, "block": 50, "lanes": 1, "speed": 50},
        {"kind": "manhattan", "streets": 1, "avenues": 1, "street_gap": 50, "avenue_gap": 50, "avenue_lanes": 6},
    ],
    ids=["1x1-grid-at-the-limits", "1x1-manhattan-at-the-limits"],
)
def test_smallest_generated_scenarios_run_on_cityflow(tmp_path, cityflow, spec):
    from ipgnn.traffic.cityflow_engine import CityFlowEngine

    sc = load_scenario(materialise(spec))
    assert sc.num_agents == 1 and sc.flows
    eng = CityFlowEngine(sc, 0)
    for _ in range(120):
        eng.next_step()
    assert eng.throughput > 0
    eng.close()


# traffic options: (overrides, the key the message names, a word of what is expected)
OPTIONS = {
    "yellow-negative": (["--env.options.yellow=-1"], "env.options.yellow", "from 0 to 9"),
    "yellow-equal-to-interval": (["--env.options.yellow=10"], "env.options.yellow", "from 0 to 9"),
    "yellow-longer-than-interval": (["--env.options.action_interval=4", "--env.options.yellow=5"], "yellow", "0 to 3"),
    "yellow-bool": (["--env.options.yellow=true"], "env.options.yellow", "expected int"),
    "interval-zero": (["--env.options.action_interval=0", "--env.options.yellow=0"], "action_interval", "from 1"),
    "interval-negative": (["--env.options.action_interval=-10"], "env.options.action_interval", "from 1 to 3600"),
    "interval-absurd": (["--env.options.action_interval=100000000"], "env.options.action_interval", "to 3600"),
    "interval-float": (["--env.options.action_interval=2.5"], "env.options.action_interval", "expected int"),
    "features-empty": (["--env.options.features=[]"], "env.options.features", "non-empty"),
    "features-unknown": (["--env.options.features=[speed]"], "env.options.features", "phase"),
    "reward-unknown": (["--env.options.reward=speed"], "env.options.reward", "travel_time"),
    "engine-unknown": (["--env.options.engine=warp"], "env.options.engine", "cityflow"),
}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_bad_traffic_option_is_refused_before_the_scenario_is_generated(tmp_path, capsys, case):
    overrides, key, words = OPTIONS[case]
    spec = "--env.options.scenario={kind: grid, rows: 2, cols: 2, rate: 100}"
    rc = train_main(["--config", HANGZHOU, *tiny(tmp_path), spec, "--env.num_agents=4", *overrides])
    err = clean_failure(rc, capsys, key, 2)
    assert words in err, err
    nothing_written(tmp_path)


@pytest.mark.parametrize("yellow", [0, 9], ids=["no-yellow", "yellow-one-second-short-of-the-interval"])
def test_yellow_at_the_edges_of_its_range_is_accepted(grid, cityflow, yellow):
    from ipgnn.config import EnvConfig, GraphConfig
    from ipgnn.envs import make_env

    opts = {"scenario": str(grid), "engine": "cityflow", "yellow": yellow}
    env = make_env(EnvConfig(task="traffic", num_agents=4, max_steps=5, graph=GraphConfig(kind="env"), options=opts))
    env.close()


def test_a_damaged_file_after_loading_is_named_by_cityflow(grid, tmp_path, cityflow):
    """CityFlow reports an unreadable file only on stderr and builds an empty engine: the adapter turns that into an
    error naming the files."""
    from ipgnn.traffic.cityflow_engine import CityFlowEngine

    d = tmp_path / "changed"
    shutil.copytree(grid, d)
    sc = load_scenario(d)
    (d / "flow.json").write_bytes(b"\x00garbage")
    with pytest.raises(ScenarioError, match="CityFlow could not read") as e:
        CityFlowEngine(sc, 0)
    assert str(d / "flow.json") in str(e.value)
