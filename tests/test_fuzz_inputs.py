"""Malformed input of every kind a user can hand the command-line tools: config files, overrides,
checkpoints and arguments. Each one must end in a clean error (no traceback) that names the file, key or
argument at fault, and nothing may start training. Run in-process through the real entry points."""

import pytest
import torch

from ipgnn.cli import eval_main, train_main
from ipgnn.compare import main as compare_main

from conftest import CONFIGS, clean_failure

GOOD = str(CONFIGS / "mpe_spread_small.yaml")

# (file contents, what the message must name)
BAD_FILES = [
    ("", "empty"),
    ("[]\n", "mapping"),
    ("just a string\n", "mapping"),
    ("model:\n  hidden: wide\n", "model.hidden"),
    ("model:\n  hidden: -3\n", "model.hidden"),
    ("model:\n  hidden: 64\nmodel:\n  rounds: 3\n", "appears twice"),
    ("modle:\n  hidden: 64\n", "modle"),
    ("model:\n  hiden: 64\n", "model.hiden"),
    ("model: [1, 2]\n", "model"),
    ("env: 3\n", "env"),
    ("env:\n  task: chess\n", "env.task"),
    ("env:\n  graph:\n    kind: ring\n", "env.graph.kind"),
    ("env:\n  num_agents: 0\n", "env.num_agents"),
    ("env:\n  max_steps: 0\n", "env.max_steps"),
    ("algo:\n  name: ppo\n", "algo.name"),
    ("algo:\n  lr: .inf\n", "algo.lr"),
    ("algo:\n  lr: .nan\n", "algo.lr"),
    ("algo:\n  alpha: .inf\n", "algo.alpha"),
    ("algo:\n  gamma: 1.5\n", "algo.gamma"),
    ("algo:\n  lr: fast\n", "algo.lr"),
    ("model:\n  hidden: 100\n  heads: 3\n", "heads"),
    ("train:\n  total_steps: -1\n", "train.total_steps"),
    ("replay:\n  capacity: lots\n", "replay.capacity"),
    ("replay:\n  batch_size: 0\n", "replay.batch_size"),
    ("seed: -1\n", "seed"),
    ("device: tpu\n", "device"),
    ("logger:\n  mode: loud\n", "logger.mode"),
    ("model:\n\thidden: 3\n", "not valid YAML"),
    ("model: {hidden: 3\n", "not valid YAML"),
    ("!!python/object:os.system {}\n", "not valid YAML"),
]

BAD_OVERRIDES = [
    (["--model.hopz=2"], "model.hopz"),
    (["--model=3"], "model"),
    (["--model.hidden"], "--model.hidden"),
    (["--=3"], "empty key"),
    (["--model..hidden=3"], "empty key"),
    (["--algo.lr=abc"], "algo.lr"),
    (["--algo.lr=.inf"], "algo.lr"),
    (["--algo.lr=-1"], "algo.lr"),
    (["--env.task=none"], "env.task"),
    (["--seed=-3"], "seed"),
    (["--model.heads=3"], "model.heads"),
    (["--train.gradient_steps=-1"], "train.gradient_steps"),
    (["--env.graph.k=0"], "env.graph.k"),
    (["--model.rounds=[1]"], "model.rounds"),
]


@pytest.mark.parametrize("text,names", BAD_FILES)
def test_malformed_config_files(tmp_path, capsys, text, names):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    clean_failure(train_main(["--config", str(path), f"--logger.run_root={tmp_path}"]), capsys, names)
    assert not list(tmp_path.glob("*/metrics.jsonl"))  # nothing started


def test_binary_and_directory_configs(tmp_path, capsys):
    path = tmp_path / "bin.yaml"
    path.write_bytes(bytes(range(256)))
    clean_failure(train_main(["--config", str(path)]), capsys, "bin.yaml")
    clean_failure(train_main(["--config", str(tmp_path)]), capsys, "is a directory")


@pytest.mark.parametrize("overrides,names", BAD_OVERRIDES)
def test_malformed_overrides(tmp_path, capsys, overrides, names):
    clean_failure(train_main(["--config", GOOD, f"--logger.run_root={tmp_path}", *overrides]), capsys, names)


def checkpoints(tmp_path):
    """Files handed to ipgnn-eval --checkpoint that are not usable checkpoints, and what the error names."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    evil = tmp_path / "evil.pt"
    torch.save({"evil": torch.nn.Linear}, evil)
    no_config = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(2)}, no_config)
    bad_config = tmp_path / "badcfg.pt"
    torch.save({"config": {"model": {"hidden": "wide"}}, "algo": {}}, bad_config)
    return [
        (tmp_path / "missing.pt", "missing.pt"),
        (empty, "empty"),
        (junk, "damaged"),
        (evil, "objects other"),
        (no_config, "weights.pt"),
        (bad_config, "model.hidden"),
        (tmp_path, str(tmp_path)),
    ]


def test_malformed_checkpoints(tmp_path, capsys):
    for path, names in checkpoints(tmp_path):
        err = clean_failure(eval_main(["--checkpoint", str(path), "--episodes", "1"]), capsys, names)
        assert "weights_only=False" not in err  # never advise unpickling an untrusted file


@pytest.mark.parametrize(
    "argv,names",
    [
        (["--controller", "random", "--config", GOOD, "--episodes", "0"], "--episodes"),
        (["--controller", "maxpressure", "--config", GOOD, "--episodes", "1"], "traffic"),
        (["--controller", "random"], "--config"),
        (["--controller", "random", "--config", GOOD, "--seed", "-1"], "--seed"),
    ],
)
def test_malformed_eval_arguments(capsys, argv, names):
    clean_failure(eval_main(argv), capsys, names)


@pytest.mark.parametrize("seeds", ["a-b", "4-0", "1,x", "-3", ""])
def test_malformed_compare_seeds(tmp_path, capsys, seeds):
    clean_failure(compare_main(["--config", GOOD, "--seeds", seeds, "--out", str(tmp_path / "o")]), capsys, "--seeds")


def test_resume_errors(tmp_path, capsys):
    clean_failure(train_main(["--resume", str(tmp_path / "nowhere")]), capsys, "no checkpoint")
    clean_failure(train_main(["--resume", str(tmp_path), "--config", GOOD]), capsys, "--resume")
    clean_failure(train_main([]), capsys, "--config")


def _grid(tmp_path):
    from ipgnn.traffic.generate import materialise

    return materialise({"kind": "grid", "rows": 2, "cols": 2, "rate": 100, "seed": 1}, tmp_path / "src")


def _mutations():
    """(file, mutation of its parsed JSON, what the error must name): the malformed scenarios a user meets."""

    def lanes(f):
        return lambda rn: [f(l) for r in rn["roads"] for l in r["lanes"]]

    def first_flow(f):
        return lambda fl: f(fl[0])

    def set_(d, k, v):
        d[k] = v

    return [
        ("roadnet.json", lanes(lambda l: set_(l, "width", -3.5)), "'width' should be > 0"),
        ("roadnet.json", lanes(lambda l: set_(l, "width", "wide")), "'width' should be int or float"),
        ("roadnet.json", lanes(lambda l: set_(l, "maxSpeed", -11.1)), "'maxSpeed' should be > 0"),
        ("roadnet.json", lambda rn: set_(rn["roads"][0]["points"][0], "x", float("nan")), "finite number"),
        ("roadnet.json", lambda rn: rn["intersections"].append(dict(rn["intersections"][0])), "used twice"),
        ("roadnet.json", lambda rn: rn["roads"].append(dict(rn["roads"][0])), "used twice"),
        (
            "roadnet.json",
            lambda rn: [
                set_(p, "time", -5)
                for i in rn["intersections"]
                if not i["virtual"]
                for p in i["trafficLight"]["lightphases"]
            ],
            "'time' should be >= 0",
        ),
        ("flow.json", first_flow(lambda f: set_(f["vehicle"], "length", -5.0)), "'length' should be > 0"),
        ("flow.json", first_flow(lambda f: set_(f, "interval", 0)), "'interval' should be > 0"),
        ("flow.json", first_flow(lambda f: set_(f, "interval", -2.0)), "'interval' should be > 0"),
        ("flow.json", first_flow(lambda f: (set_(f, "startTime", 500), set_(f, "endTime", 100))), "before startTime"),
        ("flow.json", lambda fl: fl.clear(), "no flows"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_malformed_scenarios_fail_before_any_engine_starts(tmp_path, capsys, case):
    """Each bad scenario file is refused by the loader with the file, the element and the expectation,
    through ipgnn-eval (the engine would otherwise meet it: libsumo tracebacks or silent zero metrics)."""
    import json
    import shutil

    name, mutate, names = _mutations()[case]
    src = _grid(tmp_path)
    d = tmp_path / "bad"
    shutil.copytree(src, d)
    data = json.loads((d / name).read_text())
    mutate(data)
    (d / name).write_text(json.dumps(data))
    err = clean_failure(
        eval_main(
            [
                "--controller",
                "fixedtime",
                "--config",
                str(CONFIGS / "hangzhou16.yaml"),
                f"--env.options.scenario={d}",
                "--env.num_agents=4",
                "--env.options.engine=sumo",
                "--episodes",
                "1",
            ]
        ),
        capsys,
        names,
    )
    assert name in err
