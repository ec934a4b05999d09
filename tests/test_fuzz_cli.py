"""Bad arguments to the command-line tools other than a config: ipgnn-eval's seed, counts, link settings and
--config beside --checkpoint; ipgnn-export's target; ipgnn-robustness's checkpoints, lists and --out; W&B
online mode without credentials. Each case runs in-process through the real entry point against a real
checkpoint (one tiny MPE run per module) and asserts the exit code, the key words of the one-line error and
that nothing was written (issue 29, deliverable 6)."""

import errno
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from ipgnn.cli import MAX_DELAY, MAX_EPISODES, MAX_PROCESSES, eval_main, export_main, train_main
from ipgnn.robustness import main as robustness_main
from ipgnn.seeding import MAX_SEED

from conftest import CONFIGS, clean_failure, tiny

GOOD = str(CONFIGS / "mpe_spread_small.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint: 200 steps of mpe_spread_small (3 agents, IP-SAC)."""
    root = tmp_path_factory.mktemp("trained")
    run_dir = root / "run"
    assert train_main(["--config", GOOD, *tiny(root), "--train.total_steps=200", f"--run-dir={run_dir}"]) == 0
    return run_dir / "checkpoints" / "latest.pt"


def snapshot(*dirs: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``dirs``, with its size and modification time: equal before and after
    a refused command when it wrote nothing."""
    out = {}
    for d in dirs:
        for p in [d, *d.rglob("*")]:
            st = p.stat()
            out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


# ----------------------------------------------------------------------------------------------- ipgnn-eval
EVAL_CASES = {
    "config-with-checkpoint": (["--config", GOOD], "--config is for --controller"),
    "config-with-checkpoint-random": (["--config", GOOD, "--controller", "random"], "--env.options.engine"),
    "config-with-checkpoint-maxpressure": (["--config", GOOD, "--controller", "maxpressure"], "without a checkpoint"),
    "seed-2**63": (["--seed", str(MAX_SEED + 1)], "--seed must be an integer from 0 to 9223372036854775807"),
    "seed-huge": (["--seed", "9" * 40], "--seed"),
    "seed-negative": (["--seed", "-1"], "--seed"),
    "episodes-0": (["--episodes", "0"], "--episodes must be an integer from 1"),
    "episodes-negative": (["--episodes", "-5"], "--episodes"),
    "episodes-above-limit": (["--episodes", str(MAX_EPISODES + 1)], f"to {MAX_EPISODES}"),
    "episodes-huge": (["--episodes", "1" + "0" * 30], "--episodes"),
    "processes-negative": (["--decentralised", "--processes", "-1"], "--processes"),
    "processes-huge": (["--decentralised", "--processes", str(10**12)], f"to {MAX_PROCESSES}"),
    "processes-above-agents": (["--decentralised", "--processes", "4"], "one per agent"),
    "drop-nan": (["--decentralised", "--drop", "nan"], "--drop: a probability in [0, 1]"),
    "drop-inf": (["--decentralised", "--drop", "inf"], "--drop"),
    "drop-negative": (["--decentralised", "--drop", "-0.1"], "--drop"),
    "drop-above-1": (["--decentralised", "--drop", "1.5"], "--drop"),
    "delay-negative": (["--decentralised", "--delay", "-1"], "--delay"),
    "delay-huge": (["--decentralised", "--delay", str(10**20)], f"to {MAX_DELAY}"),
    "drop-without-decentralised": (["--drop", "0.5"], "only apply with --decentralised"),
    "decentralised-stochastic": (["--decentralised", "--stochastic"], "--stochastic"),
}


@pytest.mark.parametrize("extra,names", EVAL_CASES.values(), ids=EVAL_CASES.keys())
def test_eval_refuses(checkpoint, tmp_path, capsys, extra, names):
    before = snapshot(tmp_path, checkpoint.parent.parent)
    t0 = time.perf_counter()
    rc = eval_main(["--checkpoint", str(checkpoint), "--episodes", "1", *extra])
    clean_failure(rc, capsys, names, 2)
    assert time.perf_counter() - t0 < 20  # refused before any episode is played
    assert snapshot(tmp_path, checkpoint.parent.parent) == before


def test_eval_takes_the_largest_seed(checkpoint, capsys):
    """The bounds are the real ones: seed 2**63 - 1 evaluates (torch.manual_seed takes it)."""
    assert eval_main(["--checkpoint", str(checkpoint), "--episodes", "1", "--seed", str(MAX_SEED)]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1


# --------------------------------------------------------------------------------------------- ipgnn-export
def _file(tmp_path: Path) -> Path:
    f = tmp_path / "afile"
    f.write_text("not a directory\n")
    return f


def _json_dir(tmp_path: Path) -> Path:
    (tmp_path / "step.json").mkdir()
    return tmp_path / "step.pt"


EXPORT_TARGETS = {
    "out-is-a-directory": (lambda t: t, "is a directory"),
    "out-under-a-file": (lambda t: _file(t) / "step.pt", "is a file, not a directory"),
    "out-deep-under-a-file": (lambda t: _file(t) / "a" / "b" / "step.pt", "is a file, not a directory"),
    "out-is-the-json": (lambda t: t / "step.json", "name the export .pt"),
    "json-beside-is-a-directory": (_json_dir, "step.json beside it is a directory"),
}


@pytest.mark.parametrize("target,names", EXPORT_TARGETS.values(), ids=EXPORT_TARGETS.keys())
def test_export_refuses_a_bad_target_up_front(checkpoint, tmp_path, capsys, target, names):
    out = target(tmp_path)
    before = snapshot(tmp_path)
    clean_failure(export_main(["--checkpoint", str(checkpoint), "--out", str(out)]), capsys, names, 2)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only directory")
def test_export_refuses_an_unwritable_directory(checkpoint, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc = export_main(["--checkpoint", str(checkpoint), "--out", str(ro / "sub" / "step.pt")])
        clean_failure(rc, capsys, "permission denied", 2)
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


def _fail_json(monkeypatch):
    """The second file of the pair cannot be written: a full disk while the .json is written."""
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.endswith(".json.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def _fail_pt(monkeypatch):
    """The TorchScript file cannot be written (torch reports a full disk as a RuntimeError)."""
    import torch

    def save(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch.jit, "save", save)


def _fail_rename(monkeypatch):
    """The second rename fails: the first file of the pair, already in place, is removed again."""
    real = Path.replace

    def replace(self, target):
        if str(target).endswith(".json"):
            raise OSError(errno.EIO, "Input/output error", str(target))
        return real(self, target)

    monkeypatch.setattr(Path, "replace", replace)


WRITE_FAULTS = {
    "json-disk-full": (_fail_json, "No space"),
    "pt-write": (_fail_pt, "enforce fail"),
    "rename": (_fail_rename, "Input/output"),
}


@pytest.mark.parametrize("fault,names", WRITE_FAULTS.values(), ids=WRITE_FAULTS.keys())
def test_export_leaves_nothing_when_a_write_fails(checkpoint, tmp_path, capsys, monkeypatch, fault, names):
    """A simulated OSError or torch error during the write: exit 1, no .pt, no .json, no .tmp and no
    directory of those the export created."""
    fault(monkeypatch)
    err = clean_failure(
        export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "new" / "sub" / "step.pt")]),
        capsys,
        names,
        1,
    )
    assert "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_export_writes_the_pair_and_no_temporary_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "new" / "step.pt"
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["step.json", "step.pt"]
    assert json.loads(out.with_suffix(".json").read_text())["hidden"] == 32


# ----------------------------------------------------------------------------------------- ipgnn-robustness
ROBUSTNESS_CASES = {
    "non-traffic-checkpoint": ([], "ipgnn-eval --checkpoint CKPT --decentralised"),
    "drop-nan": (["--drop", "0", "nan"], "--drop"),
    "drop-above-1": (["--drop", "1.5"], "--drop: a probability in [0, 1]"),
    "drop-negative": (["--drop", "-0.1"], "--drop"),
    "delay-negative": (["--delay", "1", "-1"], "--delay"),
    "delay-huge": (["--delay", str(MAX_DELAY + 1)], f"to {MAX_DELAY}"),
    "episodes-0": (["--episodes", "0"], "--episodes"),
    "episodes-huge": (["--episodes", str(10**9)], f"to {MAX_EPISODES}"),
    "processes-negative": (["--processes", "-1"], "--processes"),
    "processes-huge": (["--processes", str(10**9)], f"to {MAX_PROCESSES}"),
}


@pytest.mark.parametrize("extra,names", ROBUSTNESS_CASES.values(), ids=ROBUSTNESS_CASES.keys())
def test_robustness_refuses_before_building_an_environment(checkpoint, tmp_path, capsys, extra, names):
    out = tmp_path / "sweep"
    t0 = time.perf_counter()
    rc = robustness_main(["--checkpoints", str(checkpoint), "--out", str(out), *extra])
    clean_failure(rc, capsys, names, 2)
    assert time.perf_counter() - t0 < 5  # no environment, no episode (the KeyError came after 12 s)
    assert list(tmp_path.iterdir()) == []


def test_robustness_names_a_missing_checkpoint(checkpoint, tmp_path, capsys):
    rc = robustness_main(["--checkpoints", str(checkpoint), str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    clean_failure(rc, capsys, "missing.pt", 2)
    assert list(tmp_path.iterdir()) == []


def test_robustness_needs_checkpoints(tmp_path, capsys):
    clean_failure(robustness_main(["--out", str(tmp_path / "o")]), capsys, "--checkpoints", 2)
    assert list(tmp_path.iterdir()) == []


ROBUSTNESS_OUT = {
    "out-is-a-file": (lambda t: _file(t), "is a file, not a directory"),
    "out-under-a-file": (lambda t: _file(t) / "sweep", "is a file, not a directory"),
}


@pytest.mark.parametrize("target,names", ROBUSTNESS_OUT.values(), ids=ROBUSTNESS_OUT.keys())
def test_robustness_refuses_a_bad_out(checkpoint, tmp_path, capsys, target, names):
    out = target(tmp_path)
    before = snapshot(tmp_path)
    clean_failure(robustness_main(["--checkpoints", str(checkpoint), "--out", str(out)]), capsys, names, 2)
    assert snapshot(tmp_path) == before


def _garbage_summary(t: Path) -> Path:
    (t / "summary.csv").write_text("a,b\n1,2\n")
    (t / "summary.md").write_text("no title\n")
    (t / "runs.csv").write_text("x\n1\n")
    return t


REPLOT = {
    "replot-empty-directory": (lambda t: t, "earlier sweep"),
    "replot-out-is-a-file": (lambda t: _file(t), "earlier sweep"),
    "replot-foreign-files": (_garbage_summary, "ipgnn-robustness"),
}


@pytest.mark.parametrize("target,names", REPLOT.values(), ids=REPLOT.keys())
def test_robustness_replot_refuses_what_is_not_a_sweep(tmp_path, capsys, target, names):
    out = target(tmp_path)
    before = snapshot(tmp_path)
    clean_failure(robustness_main(["--replot", "--out", str(out)]), capsys, names, 2)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------- ipgnn-compare, ipgnn-interpret
COMPARE_CASES = {
    "seeds-range-huge": (lambda t: ["--seeds", "0-100000000000000"], "at most 1000 seeds"),
    "seed-beyond-64-bits": (lambda t: ["--seeds", "9" * 30], "--seeds: seeds are integers from 0"),
    "seeds-range-beyond-64-bits": (lambda t: ["--seeds", f"{MAX_SEED}-{MAX_SEED + 1}"], "--seeds"),
    "workers-0": (lambda t: ["--workers", "0"], "--workers must be an integer from 1"),
    "workers-negative": (lambda t: ["--workers", "-3"], "--workers"),
    "workers-huge": (lambda t: ["--workers", str(10**9)], "--workers"),
    "out-is-a-file": (lambda t: ["--out", str(_file(t))], "is a file, not a directory"),
    "out-under-a-file": (lambda t: ["--out", str(_file(t) / "results")], "is a file, not a directory"),
}


@pytest.mark.parametrize("extra,names", COMPARE_CASES.values(), ids=COMPARE_CASES.keys())
def test_compare_refuses(tmp_path, capsys, extra, names):
    from ipgnn.compare import main as compare_main

    argv = ["--config", GOOD, "--out", str(tmp_path / "results"), *extra(tmp_path), "--dry-run"]
    before = snapshot(tmp_path)
    clean_failure(compare_main(argv), capsys, names, 2)
    assert snapshot(tmp_path) == before


INTERPRET_CASES = {
    "episodes-0": (lambda t: ["--episodes", "0"], "--episodes"),
    "episodes-huge": (lambda t: ["--episodes", str(10**12)], f"to {MAX_EPISODES}"),
    "seed-beyond-64-bits": (lambda t: ["--seed", str(2**64)], "--seed"),
    "seed-negative": (lambda t: ["--seed", "-2"], "--seed"),
    "epsilon-nan": (lambda t: ["--epsilon", "nan"], "--epsilon"),
    "epsilon-negative": (lambda t: ["--epsilon", "-1"], "--epsilon"),
    "out-is-a-file": (lambda t: ["--out", str(_file(t))], "is a file, not a directory"),
    "non-traffic-checkpoint": (lambda t: [], "traffic"),
}


@pytest.mark.parametrize("extra,names", INTERPRET_CASES.values(), ids=INTERPRET_CASES.keys())
def test_interpret_refuses(checkpoint, tmp_path, capsys, extra, names):
    from ipgnn.interpret import main as interpret_main

    argv = ["--checkpoint", str(checkpoint), *extra(tmp_path)]
    before = snapshot(tmp_path, checkpoint.parent.parent)
    clean_failure(interpret_main(argv), capsys, names, 2)
    assert snapshot(tmp_path, checkpoint.parent.parent) == before


# ------------------------------------------------------------------------------------ W&B without a login
@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """A HOME and W&B config directory of its own, with no key anywhere: no real credentials are found and
    no network is reached (the refusal comes before wandb is imported)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


def _netrc_other_host(home: Path) -> None:
    (home / ".netrc").write_text("machine example.com login user password secret\n")


def _netrc_damaged(home: Path) -> None:
    (home / ".netrc").write_text("machine\n")


def _home_is_a_file(home: Path) -> None:
    shutil.rmtree(home)
    home.write_text("")


WANDB_HOMES = {
    "no-netrc": lambda home: None,
    "netrc-for-another-host": _netrc_other_host,
    "damaged-netrc": _netrc_damaged,
    "home-is-a-file": _home_is_a_file,
}


@pytest.mark.parametrize("setup", WANDB_HOMES.values(), ids=WANDB_HOMES.keys())
def test_wandb_online_without_credentials_is_refused_before_the_run_directory(no_wandb_login, tmp_path, capsys, setup):
    setup(no_wandb_login)
    rc = train_main(["--config", GOOD, *tiny(tmp_path), "--logger.mode=online", f"--run-dir={tmp_path / 'run'}"])
    err = clean_failure(rc, capsys, "wandb login", 2)
    assert "WANDB_API_KEY" in err and "--logger.mode=offline" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_wandb_online_on_resume_without_credentials_leaves_the_run_as_it_was(
    checkpoint, no_wandb_login, tmp_path, capsys
):
    run_dir = shutil.copytree(checkpoint.parent.parent, tmp_path / "run")
    before = snapshot(run_dir)
    rc = train_main(["--resume", str(run_dir), "--logger.mode=online", "--train.total_steps=400"])
    clean_failure(rc, capsys, "--logger.mode=offline", 2)
    assert snapshot(run_dir) == before  # config.yaml not rewritten


def test_wandb_modes_resolve_from_the_credentials_found(no_wandb_login, monkeypatch):
    from ipgnn.logger import WandbLoginRequired, resolve_wandb_mode

    assert resolve_wandb_mode("auto") == "offline" and resolve_wandb_mode("disabled") == "disabled"
    with pytest.raises(WandbLoginRequired, match="wandb login"):
        resolve_wandb_mode("online")
    (no_wandb_login / "netrc").write_text("machine api.wandb.ai login user password k\n")
    monkeypatch.setenv("NETRC", str(no_wandb_login / "netrc"))  # where wandb looks first
    assert resolve_wandb_mode("online") == "online" and resolve_wandb_mode("auto") == "online"
