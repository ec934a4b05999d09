import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")  # never reach a server from tests

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def pytest_configure(config):
    """Under load (other processes on the cores), fewer torch threads: with two threads on two busy cores each
    learning test ran ~20x slower (21-22 min against 1-2 min). On a quiet machine torch's default stays."""
    from ipgnn.cpu import plan_threads

    plan = plan_threads("auto")
    if plan.warning:
        torch.set_num_threads(plan.free)
    config._ipgnn_threads = (torch.get_num_threads(), plan)


def pytest_report_header(config):
    threads, plan = config._ipgnn_threads
    return f"ipgnn: {threads} torch thread(s); {plan.free} core(s) looked free at start (load average, affinity)"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def tiny(root: Path) -> list[str]:
    """Overrides that make any config a seconds-long CPU run writing under ``root``."""
    return [
        "--model.hidden=32",
        "--replay.batch_size=32",
        "--train.learning_starts=50",
        "--train.update_every=25",
        "--train.gradient_steps=2",
        "--train.eval_every=100",
        "--train.eval_episodes=2",
        "--train.checkpoint_every=100",
        "--train.log_every=25",
        f"--logger.run_root={root / 'runs'}",
        "--logger.progress=false",
        "--logger.mode=disabled",
    ]


@pytest.fixture
def tiny_overrides(tmp_path):
    """:func:`tiny` under tmp_path."""
    return tiny(tmp_path)


def learned_and_random_returns(cfg, run_dir, episodes: int) -> tuple[float, float]:
    """Train ``cfg`` in ``run_dir``; return the greedy policy's evaluation return and that of uniformly random
    actions on the same evaluation episodes (the comparison every learning test makes)."""
    from ipgnn.runs import evaluate, random_policy
    from ipgnn.trainer import Trainer

    trainer = Trainer.from_config(cfg, run_dir)
    learned = trainer.train()["eval/episode_return"]
    torch.manual_seed(0)
    rand = evaluate(random_policy(trainer.eval_env), trainer.eval_env, episodes, cfg.seed)["eval/episode_return"]
    trainer.close()
    return learned, rand


class SimulatedCrash(RuntimeError):
    """The failure :func:`crash_at` injects (a power cut, an OOM kill): no handler of the trainer's runs."""


def crash_at(env_step: int):
    """A trainer callback that raises :class:`SimulatedCrash` once the environment reaches ``env_step``
    (``Trainer.from_config(cfg, run_dir, callbacks=[crash_at(160)])``)."""
    from ipgnn.training import Callback

    class CrashAt(Callback):
        def on_step(self, trainer, result):
            if trainer.env_step == env_step:
                raise SimulatedCrash(f"simulated crash at environment step {env_step}")

    return CrashAt()


def comparable_rows(run_dir) -> list[dict]:
    """A run's metric rows without its wall-clock rates (``charts/...``): what two runs of one seed share."""
    from ipgnn.logger import read_metrics

    return [
        {k: v for k, v in r.items() if not k.startswith("charts/")} for r in read_metrics(run_dir / "metrics.jsonl")
    ]


def assert_same_run(a, b) -> None:
    """Two trainers ended as one run: the same metric rows and the same learner state, bit for bit."""
    assert comparable_rows(a.run_dir) == comparable_rows(b.run_dir)
    for (k, pa), pb in zip(a.algo.state_dict().items(), b.algo.state_dict().values()):
        assert torch.equal(pa, pb), k


def _cityflow_importable() -> bool:
    try:
        import cityflow  # noqa: F401
    except ImportError:
        return False
    return True


#: Every traffic test that takes an engine runs on both. CityFlow is built by ``.ci/run`` (from
#: ../shared/vendor) or ``ipgnn-data build-cityflow``; where it is not importable its cases are skipped,
#: with the reason in the report.
ENGINES = [
    "sumo",
    pytest.param(
        "cityflow",
        marks=pytest.mark.skipif(
            not _cityflow_importable(), reason="CityFlow not importable: ipgnn-data build-cityflow"
        ),
    ),
]


def clean_failure(rc, capsys, names: str, code: int | None = None) -> str:
    """Assert a command-line call failed cleanly: a non-zero exit (``code`` exactly, when given), stderr that
    starts with ``error:`` and holds no traceback, at most 4000 characters of it (echoed input is truncated),
    and ``names`` (case-insensitive) in it. The fuzz tests of issue 29 (``tests/test_fuzz_*.py``) all use it.
    A warning about the machine (its load, its threads) may precede the error on stderr; the error is what
    counts."""
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True) if not line.startswith("WARNING:"))
    assert rc not in (0, None), err
    if code is not None:
        assert rc == code, (rc, err)
    assert "Traceback" not in err and err.strip().startswith("error:"), err
    assert len(err) <= 4000, f"{len(err)} characters of error text"
    assert names.lower() in err.lower(), (names, err)
    return err
