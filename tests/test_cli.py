"""The real command-line tools, run as a user runs them (subprocesses, tiny budgets)."""

import json
import subprocess
import sys

import pytest
import torch

from ipgnn.logger import read_metrics

from conftest import CONFIGS, REPO
from wandb_records import history_rows

CONFIG = str(CONFIGS / "mpe_spread_small.yaml")


def run(*args, cwd=None, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "ipgnn.cli_entry", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def last_json(stdout):
    return json.loads(stdout[stdout.index("{") :])


@pytest.mark.slow
@pytest.mark.parametrize("continuous", [False, True])
def test_train_then_eval(tmp_path, tiny_overrides, continuous):
    run_dir = tmp_path / "run"
    out = run(
        "train",
        "--config",
        CONFIG,
        *tiny_overrides,
        "--train.total_steps=200",
        f"--run-dir={run_dir}",
        f"--env.continuous_actions={str(continuous).lower()}",
    )
    result = last_json(out.stdout)
    assert result["env_step"] == 200 and "eval/episode_return" in result
    from ipgnn.cpu import huge_page_env

    if huge_page_env({}) is not None:  # this machine offers huge pages on request: the CLI re-executed for them
        assert "huge pages on (GLIBC_TUNABLES)" in out.stderr, out.stderr[-2000:]
    assert "allocator: " in out.stderr  # the first gradient step decided about freed memory, and said so
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "latest.pt").is_file()
    rows = read_metrics(run_dir / "metrics.jsonl")
    keys = set().union(*rows)
    for k in (
        "train/episode_return",
        "eval/episode_return",
        "losses/q_loss",
        "losses/value_loss",
        "losses/policy_loss",
        "losses/entropy",
        "losses/alpha",
        "losses/q1",
        "losses/v",
        "losses/grad_norm/policy",
        "charts/env_steps_per_s",
        "charts/updates_per_s",
    ):
        assert k in keys, k
    steps = [r["env_step"] for r in rows]
    assert steps == sorted(steps)
    from PIL import Image

    with Image.open(run_dir / "curves.png") as img:  # the learning curves open as an image
        assert img.format == "PNG" and img.size[0] > 500
    ev = run("eval", "--checkpoint", str(run_dir / "checkpoints" / "latest.pt"), "--episodes", "2")
    metrics = last_json(ev.stdout)
    assert metrics["episodes"] == 2 and metrics["env_step"] == 200 and metrics["eval/episode_length"] == 25


@pytest.mark.slow
def test_eval_takes_dotted_overrides_for_a_checkpoint_and_a_config(tmp_path):
    """ipgnn-eval accepts ipgnn-train's --section.key=value overrides: a traffic checkpoint trained on SUMO
    is evaluated with another episode length and, where CityFlow is built, on the other engine; a change
    the networks cannot take is one clear error."""
    pytest.importorskip("libsumo")
    from ipgnn.traffic.cityflow_engine import cityflow_available

    grid = '--env.options.scenario={"kind": "grid", "rows": 2, "cols": 2, "rate": 300}'
    run_dir = tmp_path / "run"
    run(
        "train",
        "--config",
        str(CONFIGS / "manhattan96.yaml"),
        grid,
        "--env.num_agents=4",
        "--env.max_steps=5",
        "--env.options.engine=sumo",
        "--model.hidden=8",
        "--replay.batch_size=4",
        "--train.total_steps=10",
        "--train.learning_starts=10",
        "--train.eval_every=0",
        "--train.checkpoint_every=0",
        "--logger.mode=disabled",
        "--logger.progress=false",
        f"--run-dir={run_dir}",
    )
    ckpt = str(run_dir / "checkpoints" / "latest.pt")
    out = last_json(run("eval", "--checkpoint", ckpt, "--episodes", "1", "--stochastic", "--env.max_steps=3").stdout)
    assert out["eval/episode_length"] == 3 and out["engine"] == "sumo"
    if cityflow_available():
        out = last_json(run("eval", "--checkpoint", ckpt, "--episodes", "1", "--env.options.engine=cityflow").stdout)
        assert out["engine"] == "cityflow" and out["eval/episode_length"] == 5
    out = last_json(
        run(
            "eval",
            "--controller",
            "maxpressure",
            "--config",
            str(CONFIGS / "manhattan96.yaml"),
            grid,
            "--env.num_agents=4",
            "--env.max_steps=2",
            "--env.options.engine=sumo",
            "--episodes",
            "1",
        ).stdout
    )
    assert out["eval/episode_length"] == 2 and out["controller"] == "maxpressure"
    bad = run("eval", "--checkpoint", ckpt, "--env.options.features=[phase,count]", check=False)
    assert bad.returncode == 2 and "do not fit this task" in bad.stderr and "Traceback" not in bad.stderr
    bad = run("eval", "--checkpoint", ckpt, "--env.max_stepz=3", check=False)
    assert bad.returncode == 2 and "max_stepz" in bad.stderr and "Traceback" not in bad.stderr


def test_eval_random_controller():
    out = run("eval", "--controller", "random", "--config", CONFIG, "--episodes", "2")
    assert last_json(out.stdout)["eval/episode_return"] < 0


def test_config_error_is_one_clear_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden: wide\n")
    out = run("train", "--config", str(bad), check=False)
    assert out.returncode == 2
    assert "bad.yaml: model.hidden" in out.stderr and "Traceback" not in out.stderr
    out = run("train", "--config", CONFIG, "--model.hopz=2", check=False)
    assert out.returncode == 2 and "--model.hopz" in out.stderr and "Traceback" not in out.stderr
    out = run("train", "--config", str(tmp_path / "missing.yaml"), check=False)
    assert out.returncode == 2 and "missing.yaml' does not exist" in out.stderr
    out = run("eval", "--checkpoint", str(tmp_path / "none.pt"), check=False)
    assert out.returncode == 2 and "none.pt" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_resume_continues_from_checkpoint_step_with_same_config(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    run("train", "--config", CONFIG, *tiny_overrides, "--train.total_steps=200", f"--run-dir={run_dir}")
    saved = (run_dir / "config.yaml").read_text()
    out = run("train", "--resume", str(run_dir), "--train.total_steps=300")
    assert "resuming" in out.stderr and "at step 200" in out.stderr
    assert last_json(out.stdout)["env_step"] == 300
    now = (run_dir / "config.yaml").read_text()
    assert now.replace("total_steps: 300", "total_steps: 200") == saved  # nothing else changed
    rows = read_metrics(run_dir / "metrics.jsonl")
    steps = [r["env_step"] for r in rows]
    assert steps == sorted(steps) and steps[-1] == 300
    ck = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert ck["env_step"] == 300
    bad = run("train", "--resume", str(run_dir), "--model.hidden=8", check=False)
    assert bad.returncode == 2 and "only train.total_steps" in bad.stderr


@pytest.mark.slow
def test_wandb_offline_run_contains_logged_keys(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith("--logger.mode")]
    run(
        "train",
        "--config",
        CONFIG,
        *overrides,
        "--logger.mode=offline",
        "--train.total_steps=150",
        f"--run-dir={run_dir}",
    )
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    rows = history_rows(files[0])
    keys = set().union(*rows)
    for k in (
        "env_step",
        "train/episode_return",
        "eval/episode_return",
        "losses/q_loss",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/alpha",
        "charts/env_steps_per_s",
    ):
        assert k in keys, k
    logged = [json.loads(r["train/episode_return"]) for r in rows if "train/episode_return" in r]
    local = [r["train/episode_return"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/episode_return" in r]
    assert logged == pytest.approx(local)


@pytest.mark.slow
def test_a_diverging_run_stops_with_a_diagnosis_and_keeps_the_last_good_checkpoint(tmp_path, tiny_overrides):
    """lr 1e6: every loss turns non-finite at the first updates. The run stops (exit 1) naming the loss, the
    step and the last finite values; the checkpoint taken before learning started is untouched and finite."""
    run_dir = tmp_path / "run"
    out = run(
        "train",
        "--config",
        CONFIG,
        *tiny_overrides,
        "--train.total_steps=400",
        "--train.learning_starts=150",
        "--algo.lr=1e6",
        f"--run-dir={run_dir}",
        check=False,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    assert "training diverged at environment step" in out.stderr and "last finite values" in out.stderr
    assert "Traceback" not in out.stderr and "step 100" in out.stderr
    saved = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert saved["env_step"] == 100
    for k, v in saved["algo"]["networks"].items():
        assert torch.isfinite(v).all(), k
    bad = run("train", "--config", CONFIG, "--algo.lr=.inf", check=False)
    assert bad.returncode == 2 and "algo.lr" in bad.stderr and "finite" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_sigterm_checkpoints_like_ctrl_c_and_the_run_resumes(tmp_path, tiny_overrides):
    import signal
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ipgnn.cli_entry",
            "train",
            "--config",
            CONFIG,
            *tiny_overrides,
            "--train.total_steps=2000",
            f"--run-dir={run_dir}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (run_dir / "metrics.jsonl").is_file() or len(read_metrics(run_dir / "metrics.jsonl")) < 3:
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # at whatever point the run is: a safe point follows within a step
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM) at step" in err and "at a safe point" in err and "Traceback" not in err
    step = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)["env_step"]
    assert 0 < step < 2000
    out = run("train", "--resume", str(run_dir))
    assert last_json(out.stdout)["env_step"] == 2000
    # and it is the uninterrupted run, bit for bit (wall-clock rates aside)
    full = run(
        "train", "--config", CONFIG, *tiny_overrides, "--train.total_steps=2000", f"--run-dir={tmp_path / 'full'}"
    )
    assert last_json(out.stdout) | {"run_dir": ""} == last_json(full.stdout) | {"run_dir": ""}

    def rows(d):
        return [{k: v for k, v in r.items() if not k.startswith("charts/")} for r in read_metrics(d / "metrics.jsonl")]

    assert rows(run_dir) == rows(tmp_path / "full")
