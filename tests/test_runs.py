"""ipgnn.runs: a trained run loaded back from its directory or its checkpoint plays exactly the evaluation the
trainer logged; overrides apply; unusable paths fail with a message that names them."""

import ast
import json
import re

import pytest
import torch

from ipgnn.config import ConfigError, load_config
from ipgnn.logger import read_metrics
from ipgnn.runs import (
    SavedRun,
    evaluate,
    greedy_policy,
    load_run,
    random_policy,
    read_checkpoint,
    resolve_device,
)

from conftest import CONFIGS, REPO, tiny

STEPS = 300


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real run of mpe_spread_small (300 steps, two update phases, evaluations at 100, 200 and 300):
    its run directory and the final greedy evaluation the trainer returned and logged."""
    from ipgnn.trainer import Trainer

    root = tmp_path_factory.mktemp("runs")
    cfg = load_config([str(CONFIGS / "mpe_spread_small.yaml")], [*tiny(root), f"--train.total_steps={STEPS}"])
    trainer = Trainer.from_config(cfg, root / "run")
    try:
        final = trainer.train()
    finally:
        trainer.close()
    return root / "run", final


@pytest.mark.slow
@pytest.mark.parametrize("where", ["run directory", "checkpoint"])
def test_a_loaded_run_replays_the_evaluation_the_trainer_logged(trained, where):
    run_dir, final = trained
    ckpt = run_dir / "checkpoints" / "latest.pt"
    logged = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/episode_return" in r]
    assert logged[-1]["env_step"] == STEPS and logged[-1]["eval/episode_return"] == final["eval/episode_return"]
    with load_run(run_dir if where == "run directory" else ckpt) as run:
        cfg, env, algo = run  # unpacks as three
        assert run.path == ckpt and run.env_step == STEPS and run.device == torch.device("cpu")
        assert cfg.device == "cpu" and cfg.train.total_steps == STEPS and not algo.training
        assert run.evaluate() == final  # bit for bit: same networks, same evaluation episodes
        assert evaluate(greedy_policy(algo), env, cfg.train.eval_episodes, cfg.seed) == final
        other = run.evaluate(seed=cfg.seed + 1)
        assert other != final  # the seed chooses the episodes
        rand = evaluate(random_policy(env), env, 1, cfg.seed)
        assert set(rand) == set(final)


@pytest.mark.slow
def test_ipgnn_eval_prints_the_logged_evaluation(trained, capsys):
    from ipgnn.cli import eval_main

    run_dir, final = trained
    assert eval_main(["--checkpoint", str(run_dir), "--episodes", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env_step"] == STEPS and {k: out[k] for k in final} == final


@pytest.mark.slow
def test_overrides_change_the_task_not_the_networks(trained):
    run_dir, _ = trained
    with load_run(run_dir, ["--env.max_steps=5", "--seed=7"]) as run:
        assert run.cfg.env.max_steps == 5 and run.cfg.seed == 7
        assert run.evaluate(episodes=1)["eval/episode_length"] == 5
    with pytest.raises(ValueError, match=r"do not fit this task .*an override \(--model.hidden=8\)"):
        load_run(run_dir, ["--model.hidden=8"])
    with pytest.raises(ConfigError, match="max_stepz"):
        load_run(run_dir, ["--env.max_stepz=3"])
    saved = read_checkpoint(run_dir)  # the file read and its config checked, nothing built
    assert isinstance(saved, SavedRun) and saved.env_step == STEPS and saved.cfg.model.hidden == 32
    with load_run(saved, device=None) as run:  # the config's device ('auto': CUDA when torch sees one)
        assert run.device == resolve_device(saved.cfg.device) and run.cfg.device == saved.cfg.device


def test_unusable_paths_fail_with_a_message_that_names_them(tmp_path):
    """The files ipgnn-eval is fuzzed with (tests/test_fuzz_inputs.py), a directory that is not a run, and the
    exception each raises; ConfigError (a saved config that no longer validates) is a ValueError."""
    from test_fuzz_inputs import checkpoints as malformed_checkpoints

    (tmp_path / "not_a_run").mkdir()
    cases = [*malformed_checkpoints(tmp_path), (tmp_path / "not_a_run", "directory without checkpoints/latest.pt")]
    for path, names in cases:
        kind = FileNotFoundError if not path.is_file() else ValueError
        with pytest.raises(kind, match=re.escape(names)):
            load_run(path)
    with pytest.raises(ValueError, match="holds no config and networks: not a checkpoint written by ipgnn-train"):
        load_run(tmp_path / "weights.pt")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_nothing_imports_the_trainer_to_read_a_run():
    """Only ipgnn-train (cli.train_main) imports ipgnn.trainer; reading a run goes through ipgnn.runs, which
    imports no module above it (trainer, cli, analysis and the commands import it, not the reverse)."""
    importers, runs_imports = [], []
    for path in sorted((REPO / "src" / "ipgnn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n == "ipgnn.trainer" for n in names):
                importers.append(path.relative_to(REPO / "src").as_posix())
            if path.name == "runs.py":
                runs_imports += names
    assert importers == ["ipgnn/cli.py"]
    above = ("ipgnn.trainer", "ipgnn.cli", "ipgnn.analysis", "ipgnn.interpret", "ipgnn.robustness", "ipgnn.compare")
    assert not [n for n in runs_imports if n.startswith(above)]
