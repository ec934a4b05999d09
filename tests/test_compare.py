"""The comparison runner (``ipgnn-compare``) and the W&B sweep files in configs/sweeps/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ipgnn.compare import (
    ablation_finals,
    grid_axes,
    mean_std,
    parse_seeds,
    plan,
    read_tuned,
    select_best,
    summarize,
    sweep_configs,
    sweep_grid,
)
from ipgnn.config import ConfigError, load_config

from conftest import CONFIGS, REPO

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    return subprocess.run(
        [sys.executable, "-m", "ipgnn.cli_entry", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_there_are_sweeps():
    names = {p.stem for p in SWEEPS}
    assert {"knn_k", "hop_size", "graph_grid7x7", "graph_grid10x10"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_parameters_are_valid_config_keys(path: Path):
    """Every value of every parameter loads as a valid config on the sweep's own experiment file."""
    spec = yaml.safe_load(path.read_text())
    configs = [str(REPO / c) for c in sweep_configs(path)]
    assert configs, f"{path}: its command names no --config"
    for name, p in spec["parameters"].items():
        for value in p.get("values", [p.get("value")]):
            cfg = load_config(configs, [f"--{name}={value}"]).to_dict()
            node = cfg
            for part in name.split("."):
                node = node[part]
            assert node == value, f"{path}: --{name}={value} did not reach the config"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_command_line_is_accepted(path: Path):
    """The command ``wandb agent`` runs (``${program}`` + flags + ``${args}`` as ``--key=value``)."""
    spec = yaml.safe_load(path.read_text())
    args = [f"--{k}={v.get('values', [v.get('value')])[-1]}" for k, v in spec["parameters"].items()]
    cmd: list[str] = []
    for part in spec["command"]:
        if part == "${program}":
            assert spec["program"] == "ipgnn-train"
            cmd += ["train"]
        elif part == "${args}":
            cmd += args
        elif part == "${env}":
            continue
        else:
            cmd.append(part)
    res = _cli(*cmd, "--print-config")
    assert res.returncode == 0, res.stderr
    printed = yaml.safe_load(res.stdout)
    for a in args:
        key, value = a[2:].split("=", 1)
        node = printed
        for part in key.split("."):
            node = node[part]
        assert str(node) == value


def test_sweep_grid_and_errors(tmp_path: Path):
    grid = sweep_grid(CONFIGS / "sweeps" / "knn_k.yaml")
    assert len(grid) == 5 * 3 and {g["env.graph.k"] for g in grid} == {3, 4, 6, 8, 10}  # Fig. 6(c)'s k, 3 seeds
    assert {g["algo.lr"] for g in grid} == {0.003}  # IP-SAC's tuned lr on the task, a setting in every run
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters:\n  model.rounds:\n    distribution: int_uniform\n    min: 1\n    max: 3\n")
    with pytest.raises(ConfigError, match="parameters.model.rounds: only 'values'"):
        sweep_grid(bad)
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]


def test_a_tuning_sweep_runs_every_method_on_its_grid():
    """The lr tuning sweep: methods and seeds become the runner's axes (directories <algo>/lr=<v>/seed100),
    the one-valued engine a setting of every run, and every run loads with its method's own file."""
    path = CONFIGS / "sweeps" / "lr_hangzhou16.yaml"
    variants, seeds, algos, fixed = grid_axes(sweep_grid(path))
    assert algos == ["ipsac", "iql", "dgn", "qmix", "maddpg", "maddpg_s", "pic"] and seeds == [100]
    assert variants == [{"algo.lr": 0.0003}, {"algo.lr": 0.001}, {"algo.lr": 0.003}]
    assert fixed == ["--env.options.engine=cityflow"]
    assert grid_axes([{"a.b": 1}]) == ([{}], [], [], ["--a.b=1"])
    assert grid_axes([{"a.b": 1, "c.d": 2}, {"a.b": 3, "c.d": 2}])[0] == [{"a.b": 1}, {"a.b": 3}]


def _fake_run(out: Path, algo: str, lr: float, atts: list[float], seed: int = 100) -> None:
    import json

    rd = out / "hangzhou16" / algo / f"lr={lr}" / f"seed{seed}"
    rd.mkdir(parents=True)
    spec = {"scenario": "hangzhou16", "algo": algo, "seed": seed, "variant": {"algo.lr": lr}}
    (rd / "result.json").write_text(json.dumps({"spec": spec}))
    rows = [
        {"env_step": 1000 * (k + 1), "eval/episode_return": -a, "eval/average_travel_time": a}
        for k, a in enumerate(atts)
    ]
    (rd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_select_best_picks_each_methods_setting_by_its_last_three_evaluations(tmp_path: Path):
    """Traffic: the lowest mean ATT over the last three evaluations, per method; one lucky final
    evaluation does not win. The tuned file then gives each method its own lr in a comparison's plan."""
    _fake_run(tmp_path, "ipsac", 0.001, [400, 300, 290, 280])
    _fake_run(tmp_path, "ipsac", 0.003, [400, 350, 340, 270])  # best final, worse tail mean (320 > 290)
    _fake_run(tmp_path, "pic", 0.001, [400, 390, 380, 370])
    _fake_run(tmp_path, "pic", 0.003, [400, 300, 310, 320])
    best = select_best(tmp_path)
    assert best == {"ipsac": {"algo.lr": 0.001}, "pic": {"algo.lr": 0.003}}
    assert read_tuned(tmp_path / "tuned.yaml") == best
    assert "ipsac: algo.lr=0.001 290, algo.lr=0.003 320" in (tmp_path / "tuned.yaml").read_text()
    runs = plan([str(CONFIGS / "hangzhou16.yaml")], ["ipsac", "pic"], [0], [{}], [], (), best)
    cfgs = {r.algo: load_config(r.configs, r.config_overrides()) for r in runs}
    assert cfgs["ipsac"].algo.lr == 0.001 and cfgs["pic"].algo.lr == 0.003
    (over,) = plan([str(CONFIGS / "hangzhou16.yaml")], ["pic"], [0], [{}], ["--algo.lr=0.01"], (), best)
    assert load_config(over.configs, over.config_overrides()).algo.lr == 0.01  # a user override still wins


def test_summary_statistics(tmp_path: Path):
    """Mean and std over seeds of final and best evaluations, from metric rows."""
    rows = lambda final, best: [
        {"env_step": 10, "eval/episode_return": best, "eval/average_travel_time": 300.0},
        {"env_step": 20, "eval/episode_return": final, "eval/average_travel_time": 200.0},
    ]
    runs = [
        ({"scenario": "s", "algo": "a", "seed": 0}, rows(-10.0, -5.0)),
        ({"scenario": "s", "algo": "a", "seed": 1}, rows(-20.0, -15.0)),
    ]
    (row,) = summarize(runs, tmp_path)
    assert row["final/episode_return/mean"] == pytest.approx(-15.0)
    assert row["final/episode_return/std"] == pytest.approx(5.0)
    assert row["best/episode_return/mean"] == pytest.approx(-10.0)  # max for returns
    assert row["best/average_travel_time/mean"] == pytest.approx(200.0)  # min for travel time
    assert "-15 ± 5" in (tmp_path / "summary.md").read_text()


def test_mean_std_is_the_population_std_unless_asked():
    """Every table's ± is ddof 0; the BenchMARL race asks for ddof 1 (a single value then has std 0)."""
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert mean_std([1.0, 3.0], ddof=1) == pytest.approx((2.0, 2**0.5))
    assert mean_std([4.0], ddof=1) == (4.0, 0.0) and mean_std([4.0]) == (4.0, 0.0)


def test_summary_has_the_reference_controllers_and_plots_minus_att(tmp_path: Path):
    """Traffic summaries carry a row per reference controller (from the runs' step-0 ``reference/*`` rows,
    mean ± std over seeds), and the curves plot the paper's value, -ATT, with those lines."""

    def rows(att, ref):
        return [
            {
                "env_step": 0,
                "reference/MaxPressure/average_travel_time": ref,
                "reference/FixedTime/average_travel_time": ref + 40.0,
            },
            {"env_step": 100, "eval/episode_return": -1.0, "eval/average_travel_time": att},
        ]

    runs = [
        ({"scenario": "hz", "algo": "ipsac", "seed": 0}, rows(250.0, 270.0)),
        ({"scenario": "hz", "algo": "ipsac", "seed": 1}, rows(260.0, 274.0)),
    ]
    table = summarize(runs, tmp_path)
    by = {r["algo"]: r for r in table}
    assert set(by) == {"ipsac", "MaxPressure (reference)", "FixedTime (reference)"}
    assert by["MaxPressure (reference)"]["final/average_travel_time/mean"] == pytest.approx(272.0)
    assert by["MaxPressure (reference)"]["final/average_travel_time/std"] == pytest.approx(2.0)
    assert by["ipsac"]["final/average_travel_time/mean"] == pytest.approx(255.0)
    md = (tmp_path / "summary.md").read_text()
    assert "MaxPressure (reference) | - | 2 | 272 ± 2" in md
    assert md.index("average_travel_time") < md.index("episode_return")  # ATT first for traffic
    assert (tmp_path / "curves_hz.png").stat().st_size > 0


def test_reference_rows_count_seeds_not_runs(tmp_path: Path):
    """Three methods on two seeds: FixedTime's row is over the 2 seeds' episodes (each once), not 6 runs."""

    def rows(ref):
        return [
            {"env_step": 0, "reference/FixedTime/average_travel_time": ref},
            {"env_step": 100, "eval/episode_return": -1.0, "eval/average_travel_time": 250.0},
        ]

    runs = [
        ({"scenario": "hz", "algo": algo, "seed": seed}, rows(300.0 + 10 * seed))
        for algo in ("ipsac", "iql", "pic")
        for seed in (0, 1)
    ]
    runs.append(({"scenario": "hz", "algo": "dgn", "seed": 0}, rows(300.0)))  # a method with one seed only
    by = {r["algo"]: r for r in summarize(runs, tmp_path)}
    ref = by["FixedTime (reference)"]
    assert ref["seeds"] == 2
    assert ref["final/average_travel_time/mean"] == pytest.approx(305.0)
    assert ref["final/average_travel_time/std"] == pytest.approx(5.0)


def test_an_ablation_is_plotted_against_its_one_swept_parameter(tmp_path: Path):
    """A k sweep (Fig. 6c): each seed's *last* evaluation per k, and a figure against k; a categorical sweep
    (the graph kind, Fig. 6a) gets one too; two parameters varied together get none (no single axis)."""

    def rows(first, last):
        return [{"env_step": 10, "eval/episode_return": first}, {"env_step": 20, "eval/episode_return": last}]

    runs = [
        ({"scenario": "nav", "algo": "ipsac", "seed": s, "variant": {"env.graph.k": k}}, rows(-900.0, -10.0 * k - s))
        for k in (3, 8)
        for s in (0, 1)
    ]
    assert ablation_finals(runs, "env.graph.k") == {"ipsac": {3: [-30.0, -31.0], 8: [-80.0, -81.0]}}
    summarize(runs, tmp_path)
    assert (tmp_path / "against_k_nav.png").stat().st_size > 0
    kinds = [
        (
            {"scenario": "grid", "algo": "ipsac", "seed": 0, "variant": {"env.graph.kind": kind}},
            [
                {"env_step": 0, "reference/FixedTime/average_travel_time": 330.0},
                {"env_step": 5, "eval/episode_return": -1.0, "eval/average_travel_time": att},
            ],
        )
        for kind, att in (("env", 217.0), ("full", 230.0))
    ]
    assert ablation_finals(kinds, "env.graph.kind") == {"ipsac": {"env": [217.0], "full": [230.0]}}  # the ATT
    summarize(kinds, tmp_path / "kinds")
    assert (tmp_path / "kinds" / "against_kind_grid.png").stat().st_size > 0
    both = [
        (
            {"scenario": "nav", "algo": "ipsac", "seed": 0, "variant": {"env.graph.k": k, "model.rounds": m}},
            rows(-1.0, -2.0),
        )
        for k, m in ((3, 1), (8, 2))
    ]
    summarize(both, tmp_path / "both")
    assert not list((tmp_path / "both").glob("against_*.png"))


def test_runs_on_two_engines_are_never_averaged_together(tmp_path: Path, capsys):
    """The same scenario on SUMO and CityFlow: two rows, one per engine, each against its own engine's
    references, and a warning in summary.md and on stderr."""

    def rows(att, ref):
        return [
            {"env_step": 0, "reference/MaxPressure/average_travel_time": ref},
            {"env_step": 100, "eval/episode_return": -1.0, "eval/average_travel_time": att},
        ]

    runs = [
        ({"scenario": "hz", "algo": "ipsac", "seed": 0, "engine": "sumo"}, rows(250.0, 270.0)),
        ({"scenario": "hz", "algo": "ipsac", "seed": 0, "engine": "cityflow"}, rows(280.0, 290.0)),
    ]
    by = {(r["scenario"], r["algo"]): r["final/average_travel_time/mean"] for r in summarize(runs, tmp_path)}
    assert by == {
        ("hz-sumo", "ipsac"): 250.0,
        ("hz-cityflow", "ipsac"): 280.0,
        ("hz-sumo", "MaxPressure (reference)"): 270.0,
        ("hz-cityflow", "MaxPressure (reference)"): 290.0,
    }
    md = (tmp_path / "summary.md").read_text()
    assert "Engine: hz ran on cityflow, sumo." in md and "WARNING: hz ran on more than one engine" in md
    assert "more than one engine" in capsys.readouterr().err
    one = summarize(runs[:1], tmp_path / "one")
    assert {r["scenario"] for r in one} == {"hz"} and "Engine: hz ran on sumo." in (
        tmp_path / "one" / "summary.md"
    ).read_text()


@pytest.mark.slow
def test_compare_ip_against_two_baselines_with_three_seeds(tmp_path):
    """The runner end to end on a small task: 3 algorithms x 3 seeds as ipgnn-train processes, the summary
    table and curves, and a second call that skips every completed run."""
    out = tmp_path / "cmp"
    tiny = [
        "--train.total_steps=100",
        "--train.learning_starts=50",
        "--train.update_every=50",
        "--train.gradient_steps=1",
        "--replay.batch_size=8",
        "--model.hidden=8",
        "--train.eval_every=50",
        "--train.eval_episodes=1",
        "--train.checkpoint_every=0",
        "--env.max_steps=10",
        "--logger.mode=disabled",
    ]
    args = [
        "compare",
        "--config",
        str(CONFIGS / "mpe_spread_small.yaml"),
        "--algos",
        "ipsac,iql,qmix",
        "--seeds",
        "0-2",
        "--out",
        str(out),
        "--workers",
        "2",
        *tiny,
    ]
    res = _cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    table = (out / "summary.md").read_text()
    for algo in ("ipsac", "iql", "qmix"):
        assert f"| mpe_spread_small | {algo} | - | 3 |" in table
    with open(out / "summary.csv") as f:
        rows = list(__import__("csv").DictReader(f))
    assert {r["algo"] for r in rows} == {"ipsac", "iql", "qmix"} and all(r["seeds"] == "3" for r in rows)
    from ipgnn.logger import read_metrics

    for r in rows:  # each row is its three seeds' last evaluations, mean and population std
        finals = [
            [
                m["eval/episode_return"]
                for m in read_metrics(out / "mpe_spread_small" / r["algo"] / f"seed{k}" / "metrics.jsonl")
                if "eval/episode_return" in m
            ][-1]
            for k in range(3)
        ]
        mean = sum(finals) / 3
        assert float(r["final/episode_return/mean"]) == pytest.approx(mean)
        assert float(r["final/episode_return/std"]) == pytest.approx((sum((x - mean) ** 2 for x in finals) / 3) ** 0.5)
    from PIL import Image

    with Image.open(out / "curves_mpe_spread_small.png") as img:
        img.verify()
    assert (out / "mpe_spread_small" / "qmix" / "seed2" / "result.json").is_file()
    import json

    assert json.loads((out / "mpe_spread_small" / "qmix" / "seed2" / "result.json").read_text())["wall_s"] > 0
    # --algos qmix ran QMIX as configs/algos/qmix.yaml defines it: the run's resolved config is the one of
    # layering that file by hand (with the same seed and overrides)
    for algo in ("iql", "qmix"):
        resolved = load_config(out / "mpe_spread_small" / algo / "seed2" / "config.yaml")
        by_hand = load_config(
            [CONFIGS / "mpe_spread_small.yaml", CONFIGS / "algos" / f"{algo}.yaml"],
            ["--seed=2", *tiny, "--logger.progress=false"],
        )  # the runner turns bars off
        assert resolved == by_hand, algo
        assert (
            resolved.algo.options == yaml.safe_load((CONFIGS / "algos" / f"{algo}.yaml").read_text())["algo"]["options"]
        )
    stamp = (out / "mpe_spread_small" / "iql" / "seed0" / "result.json").stat().st_mtime_ns
    again = _cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "9 runs, 9 already complete, 0 to run" in again.stdout
    assert (out / "mpe_spread_small" / "iql" / "seed0" / "result.json").stat().st_mtime_ns == stamp


def test_every_step_of_the_paper_campaign_plans(tmp_path):
    """benchmarks/paper_campaign.sh in a dry run: every step's grid loads (configs, sweep files, tuned.yaml),
    with the run counts the README states, each method at its own tuned lr, and the ablations at IP-SAC's."""
    steps = {
        "tune-traffic": 21,
        "hangzhou16": 21,
        "manhattan96": 21,
        "grid7x7": 21,
        "tune-spread30": 21,
        "spread30": 21,
        "hetero100": 21,
        "ablate-k": 15,
        "ablate-hops": 9,
        "ablate-graph7": 6,
        "ablate-graph10": 6,
        **{f"bench-{d}": 6 for d in ("jn1", "jn2", "jn3", "hz1", "hz2")},  # IP-SAC and CoLight x 3 seeds
        "bench-hz1-u1": 6,  # the same at one gradient step per decision
        **{f"bench-{d}-running": 3 for d in ("jn1", "jn2", "jn3", "hz1", "hz2")},  # IP-SAC + 'running' x 3 seeds
        **{f"bench-{d}-long": 3 for d in ("jn1", "jn2", "jn3", "hz1", "hz2")},  # IP-SAC at 200 episodes x 3 seeds
    }
    env = dict(os.environ, DRY_RUN="1")
    res = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "paper_campaign.sh"), *steps, "interpret"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    counts = [int(line.split()[0]) for line in res.stdout.splitlines() if line.endswith("(dry run: nothing was run)")]
    assert counts == list(steps.values())
    lines = res.stdout.splitlines()
    pic = next(x for x in lines if "/spread30/mpe_spread30/pic/seed0" in x)
    assert "--algo.lr=0.001" in pic  # results/paper/tuning/spread30/tuned.yaml
    k3 = next(x for x in lines if "ablations/knn_k/mpe_spread30/ipsac/k=3/seed2" in x)
    assert "--env.graph.k=3" in k3 and "--algo.lr=0.003" in k3
    full = next(x for x in lines if "ablations/graph_grid10x10/grid10x10/ipsac/kind=full/seed0" in x)
    assert "--env.graph.kind=full" in full and "--env.options.engine=cityflow" in full
    colight = next(x for x in lines if "benchmark/learned/hz2/colight/seed2" in x)
    assert "--algo.name=colight" in colight and "--seed=2" in colight
    assert "--train.gradient_steps" not in colight  # the shared schedule: the config's 8 per 100
    u1 = next(x for x in lines if "benchmark/learned_u1/hz1/colight/seed2" in x)
    assert "--train.gradient_steps=100" in u1 and "--algo.name=colight" in u1
    running = next(x for x in lines if "benchmark/learned_running/jn2/ipsac/seed1" in x)
    assert "--env.options.features=[phase,count,waiting,pressure,running]" in running
    long = next(x for x in lines if "benchmark/learned_long/jn3/ipsac/seed0" in x)
    assert "--train.total_steps=72000" in long and "--algo.name=ipsac" in long
    bad = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "paper_campaign.sh"), "nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert bad.returncode == 2 and "unknown step 'nope'" in bad.stderr


def test_the_traffic_benchmark_table_reads_runs_and_rules(tmp_path: Path):
    """benchmarks/traffic_table.py: a learned cell is the mean ± std over seeds of each run's last evaluation; a
    run still training is left out unless --partial, and then marked; the best cell of a column is bold; the
    figure is written."""
    runs, rules = tmp_path / "learned", tmp_path / "rules.csv"
    rules.write_text(
        "dataset,interval_s,rule,average_travel_time,average_travel_time_arrived,throughput,wall_s\n"
        + "".join(f"hz1,{i},{r},{v},0,0,0\n" for i in (10, 15) for r, v in [("FixedTime", 575.6 + i),
                  ("MaxPressure", 365.1), ("Advanced-MP", 320.1), ("SOTL", 354.1)])
    )  # fmt: skip
    for algo, seed, atts, done in [
        ("ipsac", 0, [900.0, 330.0, 310.0], True),
        ("ipsac", 1, [800.0, 300.0, 330.0], True),
        ("colight", 0, [700.0, 400.0], False),
    ]:
        d = runs / "hz1" / algo / f"seed{seed}"
        d.mkdir(parents=True)
        lines = [
            f'{{"env_step": {3600 * (i + 1)}, "eval/average_travel_time": {a}, "eval/episode_return": {-a}}}'
            for i, a in enumerate(atts)
        ]
        (d / "metrics.jsonl").write_text("\n".join(['{"env_step": 100, "train/episode": 1}', *lines]) + "\n")
        if done:
            (d / "result.json").write_text("{}")
        per_episode = 720 if algo == "colight" else 360  # the episode length is each run's own env.max_steps
        (d / "config.yaml").write_text(
            f"env:\n  max_steps: {per_episode}\n"
            "train:\n  total_steps: 36000\n  update_every: 100\n  gradient_steps: 8\n"
        )
    script = REPO / "benchmarks" / "traffic_table.py"
    base = [sys.executable, str(script), "--runs", str(runs), "--rules", str(rules), "--datasets", "hz1"]
    res = subprocess.run([*base, "--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "a" / "table.md").read_text()
    assert "| IP-SAC | **320.0 ± 10.0 (n=2)** |" in md  # the last evaluations 310 and 330; best of the column
    assert "| CoLight | — |" in md and "| Advanced-MP | 320.1 |" in md and "| FixedTime | 585.6 |" in md
    assert "(IP-SAC and CoLight: 36000 decisions = 100 episodes, 8 gradient steps every 100 decisions)" in md
    assert (tmp_path / "a" / "att_vs_episodes.png").stat().st_size > 10_000
    res = subprocess.run([*base, "--out", str(tmp_path / "b"), "--partial"], capture_output=True, text=True, cwd=REPO)
    md = (tmp_path / "b" / "table.md").read_text()
    assert res.returncode == 0 and "| CoLight | 400.0 ± 0.0 (n=1; 1 still training, at ≥ 10 of 50 episodes) |" in md
    # a variant's runs in a folder beside (learned_running) are a row of their own under their method's
    d = tmp_path / "learned_running" / "hz1" / "ipsac" / "seed0"
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text('{"env_step": 36000, "eval/average_travel_time": 300.5}\n')
    (d / "result.json").write_text("{}")
    (d / "config.yaml").write_text(
        "env:\n  max_steps: 360\ntrain:\n  total_steps: 36000\n  update_every: 100\n  gradient_steps: 8\n"
    )
    res = subprocess.run([*base, "--out", str(tmp_path / "v")], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "v" / "table.md").read_text()
    assert "| IP-SAC | 320.0 ± 10.0 (n=2) |\n| IP-SAC + running | **300.5 ± 0.0 (n=1)** |\n| CoLight | — |" in md
    assert "+ running rows: 36000 decisions" in md and "1 step/decision" not in md
    # a data set with neither runs nor rules yet is an empty column and an empty panel, not a failure
    res = subprocess.run(
        [*base[:-1], "hz1,jn1", "--out", str(tmp_path / "c")], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "c" / "table.md").read_text()
    assert "| method | HZ1 | JN1 |" in md and "| Advanced-MP | 320.1 | — |" in md
