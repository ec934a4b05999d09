"""Traffic-signal control end to end: generated scenarios, the PettingZoo environment on the real SUMO
simulator (and the real CityFlow engine, where it is built), the classic controllers from the CLI and
the main job's config. CityFlow's adapter has its own tests in test_cityflow.py."""

import json
import subprocess
import sys

import networkx as nx
import pytest
from pettingzoo.test import parallel_api_test

from ipgnn.config import ConfigError, EnvConfig, GraphConfig
from ipgnn.envs import make_env
from ipgnn.logger import read_metrics
from ipgnn.traffic import load_scenario
from ipgnn.traffic.generate import generate, materialise

from conftest import CONFIGS, ENGINES, REPO

pytest.importorskip("libsumo")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path_factory.getbasetemp() / "ipgnn-cache"))


def traffic_cfg(scenario, n, engine="sumo", **kw):
    opts = {"scenario": scenario, "engine": engine} | kw.pop("options", {})
    return EnvConfig(
        task="traffic",
        num_agents=n,
        max_steps=kw.pop("max_steps", 5),
        graph=GraphConfig(kind="env"),
        options=opts,
        **kw,
    )


def test_generation_is_deterministic_and_cached(tmp_path):
    spec = {"kind": "grid", "rows": 2, "cols": 3, "rate": 200, "seed": 4}
    a, b = generate(**spec), generate(**spec)
    assert a == b
    assert generate(**(spec | {"seed": 5}))[1] != a[1]
    d1 = materialise(spec, tmp_path)
    stamp = (d1 / "flow.json").stat().st_mtime_ns
    assert materialise(spec, tmp_path) == d1 and (d1 / "flow.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("size", [7, 10])
def test_grids_have_the_papers_sizes(tmp_path, size):
    sc = load_scenario(materialise({"kind": "grid", "rows": size, "cols": size, "rate": 60}, tmp_path))
    assert sc.num_agents == size * size
    assert nx.is_isomorphic(sc.to_networkx(), nx.grid_2d_graph(size, size))
    kinds = {l.kind for a in sc.intersections for l in a.road_links}
    assert kinds == {"go_straight", "turn_left", "turn_right"}
    assert all(a.transition_phase == 0 and len(a.action_phases) == 4 for a in sc.intersections)
    assert {len(f["route"]) for f in sc.flows} != {2}  # routes cross the grid, with turns


def test_manhattan96_is_irregular(tmp_path):
    sc = load_scenario(materialise({"kind": "manhattan", "rate": 100}, tmp_path))
    assert sc.num_agents == 96
    streets = [r for r in sc.roads.values() if r.id.startswith("street_")]
    avenues = [r for r in sc.roads.values() if r.id.startswith("avenue_")]
    # one-way streets: no street has a reverse twin; two-way avenues: every avenue block has one
    pairs = {(r.start, r.end) for r in streets}
    assert not any((e, s) in pairs for s, e in pairs)
    apairs = {(r.start, r.end) for r in avenues}
    assert all((e, s) in apairs for s, e in apairs)
    # alternating directions
    y_dir = {}
    for r in streets:
        y = sc.points[r.start][1]
        y_dir.setdefault(y, set()).add(sc.points[r.end][0] > sc.points[r.start][0])
    assert all(len(d) == 1 for d in y_dir.values()) and len({next(iter(d)) for d in y_dir.values()}) == 2
    # short street blocks, long avenue blocks
    assert min(r.length for r in avenues) < min(r.length for r in streets)
    degrees = {len(a.incoming_lanes) for a in sc.intersections}
    assert len(degrees) == 1  # 1 street x 2 lanes + 2 avenues x 3 lanes


@pytest.mark.parametrize("engine", ENGINES)
def test_parallel_api(tmp_path, engine):
    env = make_env(traffic_cfg({"kind": "grid", "rows": 2, "cols": 2, "rate": 300}, 4, engine, max_steps=6)).env
    parallel_api_test(env, num_cycles=10)
    env.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_graph_env_step_and_metrics(tmp_path, engine):
    env = make_env(traffic_cfg({"kind": "grid", "rows": 2, "cols": 2, "rate": 300}, 4, engine, max_steps=3))
    obs = env.reset(seed=0)
    assert obs.x.shape == (4, 4 + 2 * 12 + 4) and obs.edge_index.shape == (2, 8)  # phase, counts, pressures
    assert obs.action_mask.all()
    for _ in range(3):
        res = env.step(env.random_action(obs))
        obs = res.obs
    assert res.done and res.truncated.all() and not res.terminated.any()
    for k in ("episode_return", "average_travel_time", "queue_length", "throughput", "delay"):
        assert k in res.episode
    assert res.episode["episode_return"] <= 0
    full = make_env(
        EnvConfig(
            task="traffic",
            num_agents=4,
            max_steps=3,
            graph=GraphConfig(kind="full"),
            options={"scenario": {"kind": "grid", "rows": 2, "cols": 2, "rate": 300}, "engine": engine},
        )
    )
    assert full.reset(seed=0).edge_index.shape == (2, 12)
    env.close()
    full.close()


def test_traffic_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="env.num_agents: the scenario has 4"):
        make_env(traffic_cfg({"kind": "grid", "rows": 2, "cols": 2}, 5))
    with pytest.raises(ConfigError, match="env.options.scenario: no roadnet.json"):
        make_env(traffic_cfg(str(tmp_path), 4))
    with pytest.raises(ConfigError, match="env.options.reward"):
        make_env(traffic_cfg({"kind": "grid", "rows": 2, "cols": 2}, 4, options={"reward": 3}))
    with pytest.raises(ConfigError, match=r"env\.options\.reward: .*'speed'"):
        make_env(traffic_cfg({"kind": "grid", "rows": 2, "cols": 2}, 4, options={"reward": "speed"}))
    with pytest.raises(ConfigError, match="'knn'"):
        make_env(EnvConfig(task="traffic", num_agents=4, options={"scenario": {"kind": "grid", "rows": 2, "cols": 2}}))


def cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "ipgnn.cli_entry", *args], capture_output=True, text=True, cwd=REPO, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


@pytest.mark.slow
def test_maxpressure_beats_fixed_time_on_manhattan96_from_the_cli():
    config = str(CONFIGS / "manhattan96.yaml")
    mp = cli("eval", "--config", config, "--controller", "maxpressure", "--episodes", "1")
    ft = cli("eval", "--config", config, "--controller", "fixedtime", "--episodes", "1")
    assert mp["eval/average_travel_time"] < ft["eval/average_travel_time"]
    assert mp["eval/throughput"] > 0 and mp["eval/episode_length"] == 100


@pytest.mark.slow
def test_manhattan96_trains_from_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    out = cli(
        "train",
        "--config",
        str(CONFIGS / "manhattan96.yaml"),
        "--model.hidden=32",
        "--replay.batch_size=8",
        "--train.learning_starts=50",
        "--train.update_every=10",
        "--train.gradient_steps=2",
        "--train.total_steps=200",
        "--train.eval_every=200",
        "--train.checkpoint_every=200",
        "--train.log_every=50",
        "--logger.mode=disabled",
        "--logger.progress=false",
        f"--run-dir={run_dir}",
    )
    assert out["env_step"] == 200 and "eval/average_travel_time" in out
    rows = read_metrics(run_dir / "metrics.jsonl")
    episodes = [r for r in rows if "train/episode_return" in r]
    assert len(episodes) == 2 and all("train/average_travel_time" in r for r in episodes)
    assert any("losses/q_loss" in r for r in rows)


def test_hangzhou16_config_runs_on_the_real_data():
    from test_scenario import need

    from ipgnn.config import load_config

    cfg = load_config(
        CONFIGS / "hangzhou16.yaml", [f"--env.options.scenario={need('hangzhou_4x4')}", "--env.options.engine=sumo"]
    )
    env = make_env(cfg.env)
    obs = env.reset(seed=0)
    assert obs.x.shape[0] == 16 and obs.edge_index.shape == (2, 48)
    res = env.step(env.random_action(obs))
    assert res.reward.shape == (16,) and (res.reward <= 0).all()
    env.close()
