"""Checkpoint integrity, resume after edits of config.yaml, and a full disk (issue 29, deliverables 2 and 3).

Real checkpoint files of a real run: one short mpe_spread_small run per module (and one of another seed, for
a foreign replay file), copied per test. Each damaged file is refused by the command that reads it with one
line that names the file; nothing is written; a legacy checkpoint without digests still loads, with a warning.
"""

import errno
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from ipgnn import checkpoint
from ipgnn.cli import eval_main, export_main, train_main

from conftest import CONFIGS, clean_failure, tiny

STEPS = 200  # checkpoints at 100 and 200: latest.pt names replay-200.pt


def _train(root: Path, name: str, seed: int) -> Path:
    run = root / name
    argv = ["--config", str(CONFIGS / "mpe_spread_small.yaml"), *tiny(root), f"--train.total_steps={STEPS}"]
    assert train_main([*argv, f"--seed={seed}", "--run-dir", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs of mpe_spread_small (seeds 0 and 1), to be copied, never changed."""
    root = tmp_path_factory.mktemp("integrity")
    return _train(root, "seed0", 0), _train(root, "seed1", 1)


@pytest.fixture
def run(runs, tmp_path, capsys):
    """A copy of the seed-0 run, for one test to damage or edit."""
    dst = tmp_path / "run"
    shutil.copytree(runs[0], dst)
    capsys.readouterr()  # the module fixture's training output
    return dst


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes: what "nothing written" compares."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flip(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def policy_bias_offset(path: Path) -> int:
    """The offset in ``path`` of a value of the policy's first bias (the bit the issue flipped)."""
    bias = checkpoint.load(path)["algo"]["networks"]["policy.encoder.lins.0.bias"]
    at = path.read_bytes().find(bias.numpy().tobytes())
    assert at > 0
    return at + 4 * (bias.numel() // 2) + 2  # a mantissa byte of the middle value


OFFSETS = {
    "beginning": lambda p: 0,
    "middle": lambda p: p.stat().st_size // 2,
    "end": lambda p: p.stat().st_size - 1,  # in the digest itself
    "digest-marker": lambda p: p.stat().st_size - checkpoint.TRAILER,  # the marker before the digest
    "policy-bias-value": policy_bias_offset,
}


def _resume(run, out):
    return train_main(["--resume", str(run)])


def _eval(run, out):
    return eval_main(["--checkpoint", str(run / "checkpoints" / "latest.pt"), "--episodes", "1"])


def _export(run, out):
    return export_main(["--checkpoint", str(run), "--out", str(out / "agent_step.pt")])


COMMANDS = {"ipgnn-train --resume": _resume, "ipgnn-eval --checkpoint": _eval, "ipgnn-export": _export}


@pytest.mark.parametrize("where", list(OFFSETS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_flipped_bit_in_latest_pt_is_refused_naming_the_file(run, tmp_path, capsys, command, where):
    latest = run / "checkpoints" / "latest.pt"
    flip(latest, OFFSETS[where](latest))
    before, out = snapshot(run), tmp_path / "out"
    out.mkdir()
    err = clean_failure(COMMANDS[command](run, out), capsys, "latest.pt", code=2)
    assert "damaged" in err and ("digest mismatch" in err or "neither an ipgnn digest" in err), err
    assert len(err.strip().splitlines()) == 1, err
    assert snapshot(run) == before and not list(out.iterdir())  # nothing written, nothing repaired


def test_the_flipped_policy_bit_would_have_loaded_without_the_digest(run):
    """The damage the digest catches is real: plain torch.load reads the flipped file without a word."""
    latest = run / "checkpoints" / "latest.pt"
    clean = torch.load(latest, weights_only=True)["algo"]["networks"]["policy.encoder.lins.0.bias"]
    flip(latest, policy_bias_offset(latest), bit=6)
    damaged = torch.load(latest, weights_only=True)["algo"]["networks"]["policy.encoder.lins.0.bias"]
    assert not torch.equal(clean, damaged)
    with pytest.raises(checkpoint.CheckpointDamaged, match="latest.pt' is damaged.*digest mismatch"):
        checkpoint.load(latest)


@pytest.mark.parametrize("where", ["beginning", "middle", "end"])
def test_a_damaged_replay_file_is_refused_and_no_replay_resumes(run, capsys, where):
    replay = run / "checkpoints" / f"replay-{STEPS}.pt"
    flip(replay, OFFSETS[where](replay))
    before = snapshot(run)
    err = clean_failure(train_main(["--resume", str(run)]), capsys, f"replay-{STEPS}.pt", code=2)
    assert "damaged" in err and "digest mismatch" in err and "--no-replay" in err, err
    assert snapshot(run) == before
    assert train_main(["--resume", str(run), "--no-replay"]) == 0
    assert f'"env_step": {STEPS}' in capsys.readouterr().out


@pytest.mark.parametrize("same_size", [True, False], ids=["same-added-count", "other-added-count"])
def test_another_seeds_replay_file_copied_in_place_is_refused_as_foreign(runs, run, capsys, same_size):
    name = f"replay-{STEPS}.pt"
    other = checkpoint.load(runs[1] / "checkpoints" / name)
    assert other["added"] == STEPS
    if same_size:
        shutil.copyfile(runs[1] / "checkpoints" / name, run / "checkpoints" / name)
        words = "foreign"
    else:  # re-saved with another count: refused for its size first
        checkpoint.save(other | {"added": STEPS - 25}, run / "checkpoints" / name)
        words = "holds 175 transitions"
    before = snapshot(run)
    err = clean_failure(train_main(["--resume", str(run)]), capsys, name, code=2)
    assert words in err and "--no-replay" in err, err
    assert snapshot(run) == before


def _make_legacy(run: Path) -> None:
    """Rewrite the run's checkpoint as ipgnn wrote it before digests: plain torch.save, no digests anywhere."""
    latest, replay = run / "checkpoints" / "latest.pt", run / "checkpoints" / f"replay-{STEPS}.pt"
    state = checkpoint.load(latest)
    del state["replay"]["digest"]
    torch.save(state, latest)
    torch.save(checkpoint.load(replay), replay)
    assert checkpoint.stored_digest(latest) is None and checkpoint.stored_digest(replay) is None


def _unverified(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "loaded unverified" in r.getMessage()]


def test_a_legacy_checkpoint_resumes_with_one_warning_per_file(run, capsys, caplog):
    _make_legacy(run)
    caplog.set_level(logging.WARNING, "ipgnn")
    assert train_main(["--resume", str(run), f"--train.total_steps={STEPS + 25}"]) == 0
    warned = _unverified(caplog)
    assert len(warned) == 2 and "latest.pt" in warned[0] and f"replay-{STEPS}.pt" in warned[1], warned
    assert checkpoint.stored_digest(run / "checkpoints" / "latest.pt") is not None  # the next one carries it


def test_a_legacy_checkpoint_evaluates_and_exports_with_a_warning(run, tmp_path, capsys, caplog):
    _make_legacy(run)
    caplog.set_level(logging.WARNING, "ipgnn")
    assert _eval(run, tmp_path) == 0
    assert _export(run, tmp_path) == 0
    warned = _unverified(caplog)
    assert len(warned) == 1 and "latest.pt" in warned[0], warned  # once per file, not once per read
    assert (tmp_path / "agent_step.pt").is_file()


def _edit(run: Path, **changes) -> None:
    """Edit the run's config.yaml as a user would: ``section__key=value``."""
    path = run / "config.yaml"
    raw = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, name = key.split("__")
        if section == "top":
            raw[name] = value
        else:
            raw[section][name] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _saved_config(run: Path) -> dict:
    return checkpoint.load(run / "checkpoints" / "latest.pt")["config"]


@pytest.mark.parametrize(
    "edit,key,value",
    [
        ({"train__total_steps": STEPS + 25}, "train.total_steps", STEPS + 25),
        ({"logger__tags": ["edited"]}, "logger.tags", ["edited"]),
        ({"top__threads": 1}, "threads", 1),
    ],
    ids=["total_steps", "logger.tags", "threads"],
)
def test_a_safe_edit_of_config_yaml_is_applied_and_said(run, capsys, caplog, edit, key, value):
    _edit(run, **edit)
    caplog.set_level(logging.INFO, "ipgnn")
    assert train_main(["--resume", str(run)]) == 0
    said = [r.getMessage() for r in caplog.records if "resuming with the edits of" in r.getMessage()]
    assert len(said) == 1 and "config.yaml" in said[0] and f"{key}: " in said[0] and f"-> {value!r}" in said[0]
    expected = _saved_config(run)  # the checkpoint's config with the edit: what the run continues with
    section, _, name = key.rpartition(".")
    if key == "train.total_steps":  # the run went on to the new length, and its new checkpoint says so
        assert f'"env_step": {value}' in capsys.readouterr().out
        assert expected[section][name] == value
    (expected[section] if section else expected)[name] = value
    assert yaml.safe_load((run / "config.yaml").read_text()) == expected


def test_config_yaml_is_rewritten_with_a_command_line_override_on_top_of_an_edit(run, capsys):
    _edit(run, logger__tags=["edited"])
    assert train_main(["--resume", str(run), f"--train.total_steps={STEPS + 25}"]) == 0
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["logger"]["tags"] == ["edited"] and written["train"]["total_steps"] == STEPS + 25
    assert written == _saved_config(run)


@pytest.mark.parametrize(
    "edit,lines",
    [
        ({"model__hidden": 64}, ["model.hidden: 32 -> 64"]),
        ({"model__hidden": 64, "train__total_steps": STEPS + 25}, ["model.hidden: 32 -> 64"]),
        ({"top__seed": 7, "algo__gamma": 0.5}, ["seed: 0 -> 7", "algo.gamma: 0.95 -> 0.5"]),
        (
            {"env__max_steps": 50, "top__name": "x" * 300},
            ["name: 'mpe_spread_small' -> 'xxxxxxx", "x... (", "env.max_steps: 25 -> 50"],
        ),
    ],
    ids=["model.hidden", "unsafe-with-a-safe-one", "two-unsafe", "long-value-truncated"],
)
def test_an_unsafe_edit_of_config_yaml_is_refused_with_the_diff(run, capsys, edit, lines):
    _edit(run, **edit)
    before = snapshot(run)
    err = clean_failure(train_main(["--resume", str(run)]), capsys, "config.yaml was edited", code=2)
    for line in lines:
        assert line in err, err
    assert "train.total_steps" not in err.split("config.yaml value):")[1]  # the safe edit is not in the diff
    assert "revert the edit" in err and f"--config {run / 'config.yaml'}" in err
    assert max(len(line) for line in err.splitlines()) < 400
    assert snapshot(run) == before


def test_a_long_diff_is_cut(run, capsys):
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["env"]["options"] = {f"opt{i}": i for i in range(40)}
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    err = clean_failure(train_main(["--resume", str(run)]), capsys, "env.options.opt0: '<absent>' -> 0", code=2)
    assert "... and 28 more" in err and "opt39" not in err


def test_a_shorter_run_in_config_yaml_is_refused(run, capsys):
    _edit(run, train__total_steps=STEPS - 100)
    before = snapshot(run)
    err = clean_failure(train_main(["--resume", str(run)]), capsys, "config.yaml sets train.total_steps: 100", code=2)
    assert f"smaller than the run's {STEPS}" in err
    assert snapshot(run) == before


def test_a_deleted_config_yaml_is_written_back_from_the_checkpoint(run, capsys, caplog):
    (run / "config.yaml").unlink()
    caplog.set_level(logging.WARNING, "ipgnn")
    assert train_main(["--resume", str(run)]) == 0
    assert any("config.yaml is missing" in r.getMessage() for r in caplog.records)
    assert yaml.safe_load((run / "config.yaml").read_text()) == _saved_config(run)


@pytest.mark.parametrize(
    "text,names",
    [
        ("model: {hidden: [32\n", "not valid YAML"),
        ("model:\n  hidden: wide\n", "model.hidden"),
        ("- just\n- a list\n", "expected a mapping"),
        ("", "empty"),
        (b"\xff\xfe\x00binary", "not a text file"),
    ],
    ids=["invalid-yaml", "invalid-value", "not-a-mapping", "empty", "binary"],
)
def test_an_unusable_config_yaml_is_one_clear_line(run, capsys, text, names):
    path = run / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(run)
    err = clean_failure(train_main(["--resume", str(run)]), capsys, names, code=2)
    assert "config.yaml" in err and "delete it to resume with the config saved in the checkpoint" in err
    assert len(err.strip().splitlines()) == 1, err
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------- writing


def test_the_digest_is_hashed_while_writing_and_plain_torch_load_still_reads_the_file(tmp_path):
    path = checkpoint.save({"a": torch.arange(1000.0), "n": 3}, tmp_path / "c.pt")
    data = path.read_bytes()
    assert data[-checkpoint.TRAILER :].startswith(checkpoint.MAGIC)
    digest = "sha256:" + hashlib.sha256(data[: -checkpoint.TRAILER]).hexdigest()
    assert checkpoint.stored_digest(path) == digest == checkpoint.read(path)[1]
    assert torch.load(path, weights_only=True)["n"] == 3


class FullAfter:
    """A file that takes ``limit`` bytes and then fails as a full disk does."""

    def __init__(self, f, limit: int) -> None:
        self.f, self.left = f, limit

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if n > self.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= n
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _old_and_big(tmp_path: Path) -> tuple[Path, dict]:
    path = checkpoint.save({"a": torch.ones(2)}, tmp_path / "c.pt")
    return path, {"a": torch.zeros(1 << 18)}  # 1 MiB of tensor


def _kept(path: Path) -> None:
    """The previous checkpoint is intact and no temporary file is left."""
    assert torch.equal(checkpoint.load(path)["a"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("how", ["OSError from write", "torch's unexpected pos"])
def test_a_full_disk_mid_write_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, how):
    path, big = _old_and_big(tmp_path)
    if how == "OSError from write":  # torch wraps it: RuntimeError(... unexpected pos ...) from the OSError
        monkeypatch.setattr(
            checkpoint, "_HashingWriter", lambda f, real=checkpoint._HashingWriter: real(FullAfter(f, 4096))
        )
    else:  # torch writing to a path on a full disk: its RuntimeError alone, and the disk shows the space is gone

        def unexpected_pos(obj, f):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(torch, "save", unexpected_pos)
        monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage._replace(free=(1 << 20) + 100))
    with pytest.raises(OSError, match=r"no space left on device writing .*c\.pt \(1\.0 MiB needed, .* MiB free\)") as e:
        checkpoint.save(big, path)
    assert e.value.errno == errno.ENOSPC and "free space or move the run" in str(e.value)
    _kept(path)


def test_a_checkpoint_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
    path, big = _old_and_big(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage._replace(free=1 << 19))
    monkeypatch.setattr(torch, "save", lambda *a: pytest.fail("wrote to a disk it cannot fit on"))
    with pytest.raises(OSError, match=r"1\.0 MiB needed, 0\.5 MiB free"):
        checkpoint.save(big, path)
    _kept(path)


def test_another_write_fault_names_the_path_and_the_operation(tmp_path, monkeypatch):
    path, big = _old_and_big(tmp_path)

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=r"cannot create a temporary file for .*c\.pt: Permission denied"):
        checkpoint.save(big, path)
    _kept(path)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB tmpfs (where this machine lets the tests mount one: root in a container that allows it)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:200]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_real_full_disk_says_so_and_keeps_the_previous_checkpoint(small_tmpfs):
    path = checkpoint.save({"a": torch.ones(2)}, small_tmpfs / "c.pt")
    free = shutil.disk_usage(small_tmpfs).free
    many = {f"t{i}": torch.zeros((free - 2048) // 4 // 128) for i in range(128)}  # fits, but not with the archive
    with pytest.raises(OSError, match=r"no space left on device writing .*c\.pt \(.* MiB needed") as e:
        checkpoint.save(many, path)
    assert e.value.errno == errno.ENOSPC
    _kept(path)
    with pytest.raises(OSError, match=r"2\.0 MiB needed"):  # larger than the disk: refused before writing
        checkpoint.save({"a": torch.zeros(1 << 19)}, path)
    _kept(path)


def test_a_failed_commit_removes_the_replay_file_it_added(tmp_path, monkeypatch):
    """A checkpoint whose ``latest.pt`` cannot be written (a full disk) leaves the checkpoint directory as it
    was: the replay file it wrote first is removed again, and the previous pair stays."""
    from ipgnn.config import load_config
    from ipgnn.trainer import Trainer

    cfg = load_config(CONFIGS / "mpe_spread_small.yaml", [*tiny(tmp_path), "--train.total_steps=100"])
    trainer = Trainer.from_config(cfg)
    trainer.train()
    before = {p.name: p.read_bytes() for p in trainer.ckpt_dir.iterdir()}
    assert "replay-100.pt" in before
    trainer.env_step += 25  # a later checkpoint: replay-125.pt
    real = checkpoint.save

    def full_at_the_commit(obj, path):
        if Path(path).name == "latest.pt":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(obj, path)

    monkeypatch.setattr(checkpoint, "save", full_at_the_commit)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint()
    trainer.close()
    assert {p.name: p.read_bytes() for p in trainer.ckpt_dir.iterdir()} == before
