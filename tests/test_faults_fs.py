"""File-system faults and signals during ``ipgnn-train`` (issue 29, deliverables 1 and 7).

Every fault ends in one ``error:`` line that names the operation, the path and what to do, with exit status 1
(2 for a setting to fix, such as an empty ``IPGNN_CACHE``); the last complete checkpoint is kept and nothing
half-written is left. Faults are real where this machine allows them: a path under a regular file, a directory
deleted or replaced mid-run, ``chmod`` (not as root) or ``chattr +i`` (as root) for a read-only directory, a
small tmpfs for a full disk (as root, where ``mount`` works); where a fault cannot be made, the write raises
the ``OSError`` the kernel would (``simulated`` in the case's id). Signals are real (``os.kill`` of this
process, or of a subprocess), sent at moments a callback or a wrapped write makes exact.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipgnn import cache as ipgnn_cache
from ipgnn import checkpoint as checkpoint_file
from ipgnn.cli import train_main
from ipgnn.training import Callback

from conftest import CONFIGS, REPO, clean_failure, tiny

GOOD = str(CONFIGS / "mpe_spread_small.yaml")
# a run of 20 steps in episodes of 5: checkpoints at steps 5, 10, 15, 20; metrics rows every 5 steps
FAST = [
    "--env.max_steps=5",
    "--train.total_steps=20",
    "--train.learning_starts=10",
    "--train.update_every=5",
    "--train.gradient_steps=1",
    "--train.eval_every=10",
    "--train.checkpoint_every=5",
    "--train.eval_episodes=1",
    "--train.log_every=5",
    "--replay.batch_size=8",
]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def fast(root: Path, *extra: str) -> list[str]:
    return ["--config", GOOD, *tiny(root), *FAST, *extra]


def fault_line(rc, capsys, names: tuple[str, ...], code: int = 1) -> str:
    """A run that failed cleanly: status ``code``, no traceback, exactly one ``error:`` line and it is the
    last, at most 4000 characters, naming each of ``names`` (case-insensitive)."""
    err = capsys.readouterr().err
    if os.environ.get("SHOW_FAULTS"):
        sys.__stderr__.write(f"\n---- {err[-1500:]}\n")
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert rc == code, (rc, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-3000:]
    assert len(errors[0]) <= 4000
    for name in names:
        assert name.lower() in errors[0].lower(), (name, errors[0])
    return errors[0]


def latest_step(run_dir: Path) -> int:
    return int(checkpoint_file.load(run_dir / "checkpoints" / "latest.pt")["env_step"])


def no_tmp_files(run_dir: Path) -> bool:
    return not list(run_dir.rglob("*.tmp*"))


# --- making a directory read-only: really where the machine allows it, else a simulated read-only mount ---

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def simulate_read_only(monkeypatch, root: Path, code: int = errno.EROFS) -> None:
    """Every write under ``root`` (open for writing, create, mkdir, rename, unlink) raises ``OSError(code)``
    naming the path, as a read-only mount (EROFS) or a full disk (ENOSPC) does; reads still work."""
    root = str(Path(root).absolute())

    def under(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(root)
        except TypeError:  # a file descriptor
            return False

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    def wrap_open(real):
        def opener(file, mode="r", *args, **kwargs):
            if under(file) and any(c in mode for c in "wax+"):
                refuse(file)
            return real(file, mode, *args, **kwargs)

        return opener

    def wrap_os_open(real):
        def opener(path, flags, *args, **kwargs):
            if under(path) and flags & _WRITE_FLAGS:
                refuse(path)
            return real(path, flags, *args, **kwargs)

        return opener

    def wrap_path_op(real):
        def op(path, *args, **kwargs):
            if under(path):
                refuse(path)
            return real(path, *args, **kwargs)

        return op

    import builtins

    monkeypatch.setattr(builtins, "open", wrap_open(builtins.open))
    monkeypatch.setattr(io, "open", wrap_open(io.open))
    monkeypatch.setattr(os, "open", wrap_os_open(os.open))
    for name in ("mkdir", "unlink", "rmdir", "replace", "rename"):
        monkeypatch.setattr(os, name, wrap_path_op(getattr(os, name)))


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "-R", flag, str(path)], capture_output=True).returncode == 0


class ReadOnly:
    """Makes directories read-only for one test: ``chmod`` when not root, ``chattr +i`` (immutable) as root
    where the file system allows it, else :func:`simulate_read_only`; undone at teardown."""

    def __init__(self, monkeypatch, mode: str):
        self.monkeypatch, self.mode = monkeypatch, mode
        self.done: list[Path] = []

    def __call__(self, path: Path) -> None:
        if self.mode == "chmod":
            for p in [path, *path.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
        elif self.mode == "chattr":
            assert _chattr("+i", path)
        else:
            simulate_read_only(self.monkeypatch, path)
        self.done.append(path)

    def undo(self) -> None:
        for path in self.done:
            if self.mode == "chmod":
                for p in [path, *path.rglob("*")]:
                    p.chmod(0o755 if p.is_dir() else 0o644)
            elif self.mode == "chattr":
                _chattr("-i", path)


def _read_only_mode(tmp_path: Path) -> str:
    if not IS_ROOT:
        return "chmod"
    probe = tmp_path / "chattr-probe"
    probe.mkdir()
    ok = _chattr("+i", probe)
    if ok:
        ok = not os.access(probe, os.W_OK) or _creating_fails(probe)
        _chattr("-i", probe)
    return "chattr" if ok else "simulated"


def _creating_fails(d: Path) -> bool:
    try:
        (d / "x").write_text("x")
    except OSError:
        return True
    return False


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    ro = ReadOnly(monkeypatch, _read_only_mode(tmp_path))
    yield ro
    ro.undo()


# --- callbacks injected into the trainer ipgnn-train builds -----------------------------------------------


def inject(monkeypatch, *callbacks: Callback) -> None:
    """Every Trainer built from here on gets ``callbacks`` after its own."""
    from ipgnn.trainer import Trainer

    real = Trainer.__init__

    def init(self, *args, callbacks=(), **kwargs):
        real(self, *args, callbacks=[*callbacks, *injected], **kwargs)

    injected = list(callbacks)
    monkeypatch.setattr(Trainer, "__init__", init)


class AtStep(Callback):
    """Runs ``action(trainer)`` once, after environment step ``step`` (before that step's checkpoint)."""

    def __init__(self, step: int, action):
        self.step, self.action, self.done = step, action, False

    def on_step(self, trainer, result) -> None:
        if trainer.env_step == self.step and not self.done:
            self.done = True
            self.action(trainer)


def disk_full_from_now(monkeypatch):
    """From the call on, every ``fsync`` raises ENOSPC without a file name, as a full disk does on a file
    system that allocates at flush time (the checkpoint's write is the first to meet it)."""

    def action(trainer):
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", fsync)

    return action


# --- set-up faults: nothing is written ---------------------------------------------------------------------


def _under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return [f"--logger.run_root={tmp_path / 'file' / 'runs'}"], ("creating the run directory", "not a directory")


def _run_dir_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return [f"--run-dir={tmp_path / 'file'}"], ("creating the run directory", "in the way", "file")


def _config_disk_full(tmp_path, monkeypatch):
    simulate_read_only(monkeypatch, tmp_path / "runs", errno.ENOSPC)
    return [], ("creating the run directory", "disk full")


SETUP = {
    "run_root-under-a-regular-file": _under_a_file,
    "run-dir-is-a-regular-file": _run_dir_is_a_file,
}


@pytest.mark.parametrize("case", list(SETUP))
def test_setup_fault_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    extra, names = SETUP[case](tmp_path)
    rc = train_main(fast(tmp_path, *extra))
    err = clean_failure(rc, capsys, names[0], 1)
    assert all(n.lower() in err.lower() for n in names), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_setup_disk_full_simulated(tmp_path, capsys, monkeypatch):
    extra, names = _config_disk_full(tmp_path, monkeypatch)
    err = clean_failure(train_main(fast(tmp_path, *extra)), capsys, names[1], 1)
    assert "runs" in err and "free space" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where", ["run_root", "run-dir"])
def test_read_only_run_root_or_run_dir(tmp_path, capsys, read_only, where):
    target = tmp_path / "ro"
    target.mkdir()
    read_only(target)
    extra = [f"--logger.run_root={target}"] if where == "run_root" else [f"--run-dir={target}"]
    err = clean_failure(train_main(fast(tmp_path, *extra)), capsys, str(target), 1)
    op = "creating the run directory" if where == "run_root" else "writing the run's config"
    assert op in err and any(w in err for w in ("read-only", "permission denied", "not permitted")), err
    assert "writable" in err
    read_only.undo()
    assert list(target.iterdir()) == []  # nothing written


def test_config_write_fails_and_the_new_run_directory_is_removed(tmp_path, capsys, monkeypatch):
    import ipgnn.trainer

    def full(cfg, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ipgnn.trainer, "save_config", full)
    err = clean_failure(train_main(fast(tmp_path, f"--run-dir={tmp_path / 'run'}")), capsys, "disk full", 1)
    assert "config.yaml" in err and "writing the run's config" in err
    assert not (tmp_path / "run").exists()


# --- the cache directory -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_ipgnn_cache_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("IPGNN_CACHE", value)
    err = clean_failure(train_main(fast(tmp_path)), capsys, "IPGNN_CACHE", 2)
    assert "empty" in err and "unset" in err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ipgnn_cache.CacheDirError, match="empty"):
        ipgnn_cache.cache_dir("scenarios", temporary_ok=True)  # never a cache in the working directory


def _cache_env(kind: str, tmp_path: Path, monkeypatch, read_only) -> Path:
    """Point the cache at an unusable place; the path the error or warning must name."""
    bad = tmp_path / "bad"
    if kind.endswith("file"):
        bad.write_text("not a directory")
    else:
        bad.mkdir()
        read_only(bad)
    if kind.startswith("IPGNN_CACHE"):
        monkeypatch.setenv("IPGNN_CACHE", str(bad))
        return bad
    monkeypatch.delenv("IPGNN_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(bad))
    return bad


CACHE_KINDS = ["IPGNN_CACHE-is-a-file", "IPGNN_CACHE-read-only", "HOME-is-a-file", "HOME-read-only"]


@pytest.mark.parametrize("kind", CACHE_KINDS)
def test_unusable_cache_falls_back_for_derived_files_with_one_warning(tmp_path, monkeypatch, caplog, read_only, kind):
    bad = _cache_env(kind, tmp_path, monkeypatch, read_only)
    monkeypatch.setattr(ipgnn_cache, "_fallbacks", {})
    from ipgnn.references import cache_dir as references_cache
    from ipgnn.traffic.generate import materialise

    with caplog.at_level("WARNING", logger="ipgnn"):
        scenario = materialise({"kind": "grid", "rows": 1, "cols": 2, "rate": 300, "horizon": 60, "seed": 0})
        refs = references_cache()
    assert (scenario / "roadnet.json").is_file() and (scenario / "flow.json").is_file()
    assert not scenario.is_relative_to(bad) and refs.parent == scenario.parent.parent
    os.close(os.open(refs / "probe", os.O_CREAT | os.O_WRONLY))  # the stand-in is writable
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(bad) in warnings[0] and str(refs.parent) in warnings[0], warnings


@pytest.mark.parametrize("kind", CACHE_KINDS)
def test_unusable_cache_is_an_error_for_downloads(tmp_path, monkeypatch, capsys, read_only, kind):
    bad = _cache_env(kind, tmp_path, monkeypatch, read_only)
    from ipgnn.traffic.datasets import main as data_main

    err = clean_failure(data_main(["fetch", "hangzhou_4x4", "--base-url=file:///nonexistent"]), capsys, str(bad), 2)
    assert "cannot be written" in err and "--dest" in err and "IPGNN_CACHE" in err
    assert not list(tmp_path.rglob("*.part"))


# --- faults while training: one line, the last complete checkpoint kept ------------------------------------


def _delete_run_dir(trainer):
    shutil.rmtree(trainer.run_dir)


def _replace_checkpoints_by_a_file(trainer):
    shutil.rmtree(trainer.ckpt_dir)
    trainer.ckpt_dir.write_text("in the way")


MID_RUN = {
    # case: (action at step 7, words of the line, whether latest.pt of step 5 is still there)
    "run-dir-deleted": (lambda mp, ro: _delete_run_dir, ("writing the metrics", "is gone", "start a new run"), False),
    "checkpoints-replaced-by-a-file": (
        lambda mp, ro: _replace_checkpoints_by_a_file,
        ("writing a checkpoint", "in the way", "no checkpoint to resume"),
        False,
    ),
    "disk-full-at-checkpoint-simulated": (
        lambda mp, ro: disk_full_from_now(mp),
        ("writing a checkpoint", "latest.pt", "disk full", "free space", "--resume"),
        True,
    ),
    "run-dir-read-only": (
        lambda mp, ro: lambda trainer: ro(trainer.run_dir),
        ("failed", "kept", "writable", "--resume"),
        True,
    ),
}


@pytest.mark.parametrize("case", list(MID_RUN))
def test_fault_during_training_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path, capsys, monkeypatch, read_only, case
):
    make, names, kept = MID_RUN[case]
    inject(monkeypatch, AtStep(7, make(monkeypatch, read_only)))
    run_dir = tmp_path / "run"
    line = fault_line(train_main(fast(tmp_path, f"--run-dir={run_dir}")), capsys, names)
    assert str(run_dir) in line
    if kept:
        read_only.undo()
        assert latest_step(run_dir) == 5 and no_tmp_files(run_dir)
    if case == "run-dir-deleted":
        assert not run_dir.exists()  # not recreated, half empty, by a later write


def _tmpfs(path: Path, options: str) -> bool:
    path.mkdir()
    if not IS_ROOT or shutil.which("mount") is None:
        return False
    mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
    return subprocess.run(mount, capture_output=True).returncode == 0


def _fill(directory: Path) -> None:
    """Use up a tmpfs: its inodes (empty files) and its bytes (one file grown until the disk is full)."""
    filler = directory / "filler"
    filler.mkdir()
    try:
        with open(filler / "big", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError:
        pass
    n = 0
    try:
        while True:
            (filler / str(n)).touch()
            n += 1
    except OSError:
        pass


def test_full_tmpfs_during_training(tmp_path, capsys, monkeypatch):
    """A real full disk: a small tmpfs (root only), filled at step 7; the next write fails with ENOSPC."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "size=8m,nr_inodes=200"):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount): the simulated full disk covers it")
    try:
        run_dir = disk / "run"
        inject(monkeypatch, AtStep(7, lambda trainer: _fill(disk)))
        line = fault_line(train_main(fast(tmp_path, f"--run-dir={run_dir}")), capsys, ("disk full", str(run_dir)))
        assert "the last complete checkpoint" in line
        shutil.rmtree(disk / "filler")
        assert latest_step(run_dir) == 5
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize("override", [[], ["--train.total_steps=40"]], ids=["plain", "with-override"])
def test_resume_on_a_read_only_run_dir(tmp_path, capsys, monkeypatch, override):
    run_dir = tmp_path / "run"
    assert train_main(fast(tmp_path, f"--run-dir={run_dir}", "--train.total_steps=10")) == 0
    before = (run_dir / "checkpoints" / "latest.pt").read_bytes(), (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    simulate_read_only(monkeypatch, run_dir)  # a read-only mount (chattr +i leaves files themselves writable)
    err = clean_failure(train_main(["--resume", str(run_dir), *override]), capsys, "read-only file system", 1)
    assert str(run_dir) in err and "is kept" in err and "writable" in err
    monkeypatch.undo()
    after = (run_dir / "checkpoints" / "latest.pt").read_bytes(), (run_dir / "config.yaml").read_text()
    assert before == after


# --- signals -----------------------------------------------------------------------------------------------


def kill_self(signum: int, times: int = 1):
    def action(trainer=None):
        for _ in range(times):
            os.kill(os.getpid(), signum)

    return action


def signals_during_saves(monkeypatch, signum: int, times: int, which: int | None = None) -> list[int]:
    """Send ``signum`` ``times`` times to this process during checkpoint writes (each, or only the ``which``-th
    from here, counted from 0); returns the list of env steps of the writes started."""
    from ipgnn.training import checkpointing

    real, started = checkpointing.Checkpointer.save, []

    def save(self, name="latest.pt"):
        started.append(self.trainer.env_step)
        if which is None or len(started) - 1 == which:
            kill_self(signum, times)()
        return real(self, name)

    monkeypatch.setattr(checkpointing.Checkpointer, "save", save)
    return started


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("extra", [1, 4])
def test_signals_during_the_safe_point_checkpoint_wait_for_it(tmp_path, capsys, monkeypatch, signum, extra):
    """First signal at step 7: stop at the next safe point (before step 8); ``extra`` more during that
    checkpoint's write wait for it to commit; the run then ends with the safe point's checkpoint, one line, 130
    or 143."""
    run_dir = tmp_path / "run"
    inject(monkeypatch, AtStep(7, kill_self(signum)))
    started = signals_during_saves(monkeypatch, signum, extra, which=1)  # write 0 is step 5's periodic one
    rc = train_main(fast(tmp_path, f"--run-dir={run_dir}"))
    err = capsys.readouterr().err
    code = 143 if signum == signal.SIGTERM else 130
    assert rc == code and "Traceback" not in err, err[-3000:]
    assert "at a safe point" in err and "a checkpoint is being written" in err
    state = checkpoint_file.load(run_dir / "checkpoints" / "latest.pt")
    assert state["env_step"] == 7 and "cut" in state and started == [5, 7] and no_tmp_files(run_dir)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_third_signal_during_the_re_save_waits_for_it(tmp_path, capsys, monkeypatch, signum):
    """Two signals at step 7 stop at once; a third (and fourth) during the checkpoint of where the run stands
    used to cut it with a traceback: now it commits, and the run ends with one line."""
    run_dir = tmp_path / "run"
    inject(monkeypatch, AtStep(7, kill_self(signum, 2)))
    started = signals_during_saves(monkeypatch, signum, 2, which=1)  # write 0 is step 5's periodic one
    rc = train_main(fast(tmp_path, f"--run-dir={run_dir}"))
    err = capsys.readouterr().err
    assert rc == (143 if signum == signal.SIGTERM else 130) and "Traceback" not in err, err[-3000:]
    assert "checkpoint saved to" in err and "Continue with: ipgnn-train --resume" in err
    assert started == [5, 7] and latest_step(run_dir) == 7 and no_tmp_files(run_dir)


def test_a_signal_waiting_for_a_periodic_checkpoint_stops_with_it(tmp_path, capsys, monkeypatch):
    """A stop asked at step 10 (an episode's end) and a second signal during step 10's periodic checkpoint: the
    run stops with that checkpoint, which resumes exactly (an episode boundary), instead of writing another."""
    run_dir = tmp_path / "run"
    inject(monkeypatch, AtStep(10, kill_self(signal.SIGINT)))
    started = signals_during_saves(monkeypatch, signal.SIGINT, 1, which=1)
    rc = train_main(fast(tmp_path, f"--run-dir={run_dir}"))
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err and "at a safe point" in err, err[-3000:]
    assert started == [5, 10] and latest_step(run_dir) == 10


@pytest.mark.parametrize("times", [1, 2], ids=["one-signal", "two-signals"])
def test_signals_while_the_disk_is_full(tmp_path, capsys, monkeypatch, times):
    """Ctrl-C at step 7 on a full disk: the stop's checkpoint cannot be written; one line says so, the step-5
    checkpoint is kept (one signal: the safe-point stop; two: the stop at once)."""
    run_dir = tmp_path / "run"
    full = disk_full_from_now(monkeypatch)
    inject(monkeypatch, AtStep(7, lambda trainer: (full(trainer), kill_self(signal.SIGINT, times)())))
    line = fault_line(train_main(fast(tmp_path, f"--run-dir={run_dir}")), capsys, ("disk full", "latest.pt"))
    if times == 2:
        assert line.startswith("error: interrupted at step 7")
    monkeypatch.undo()
    assert latest_step(run_dir) == 5 and no_tmp_files(run_dir)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["loading-the-config", "building-the-environment"])
def test_signal_during_setup_is_one_line_and_130_or_143(tmp_path, capsys, monkeypatch, signum, moment):
    import ipgnn.cli
    import ipgnn.trainer

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIG_IGN under nohup's `&`
    if moment == "loading-the-config":
        real = ipgnn.cli.load_config
        monkeypatch.setattr(ipgnn.cli, "load_config", lambda *a: (kill_self(signum, 2)(), real(*a))[1])
    else:
        real_env = ipgnn.trainer.make_env
        monkeypatch.setattr(ipgnn.trainer, "make_env", lambda *a: (kill_self(signum)(), real_env(*a))[1])
    # one torch thread: the thread advice (a WARNING line when the machine is busy, as under CI) cannot fire
    rc = train_main(fast(tmp_path, "--threads=1"))
    err = capsys.readouterr().err
    assert rc == (143 if signum == signal.SIGTERM else 130) and "Traceback" not in err, err
    assert "while setting up" in err and len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert not list(tmp_path.glob("runs/*"))  # the run directory made for it is removed again
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored


@pytest.mark.slow
def test_real_signals_to_a_training_process(tmp_path):
    """A real process: SIGTERM while it sets up, then three quick Ctrl-C while it trains; each ends in one
    line with 143 / 130, no traceback, and a checkpoint that loads."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    cmd = [sys.executable, "-m", "ipgnn.cli_entry", "train", *fast(tmp_path), "--train.total_steps=100000"]

    def start(run_dir):
        return subprocess.Popen(
            [*cmd, f"--run-dir={run_dir}"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, bufsize=1
        )

    proc = start(tmp_path / "a")
    _wait_for(proc, "learner:")  # the trainer is being built
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143 and "Traceback" not in err and "terminated (SIGTERM)" in err, err[-3000:]

    proc = start(tmp_path / "b")
    _wait_for(proc, "run directory:")
    time.sleep(1.0)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    err = proc.communicate(timeout=120)[1]
    # The first Ctrl-C stops at a safe point with a checkpoint; the run then closes its files (curves, the bar),
    # and whether the third Ctrl-C lands before that close ends ("interrupted ... Continue with") or during it
    # ("exiting now", by design) is the machine's timing. Either way: 130, no traceback, a checkpoint kept.
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "Ctrl-C: stopping at the next safe point" in err, err[-3000:]
    assert ("interrupted at step" in err) or ("Ctrl-C: exiting now" in err), err[-3000:]
    assert latest_step(tmp_path / "b") > 0


def _wait_for(proc, text: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    for line in proc.stderr:
        if text in line:
            return
        assert time.time() < deadline
    raise AssertionError(f"the process ended before printing {text!r} (status {proc.wait()})")


def test_describe_names_errno_reasons():
    from ipgnn.training.faults import describe

    exc = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/x/y")
    assert "quota" in describe(exc, None) and "/x/y" in describe(exc, None)
    long = OSError(errno.EIO, os.strerror(errno.EIO), "/" + "a" * 5000)
    assert len(describe(long, None)) < 600  # an echoed path is truncated


def _loading_torch(pid: int) -> bool:
    """Whether process ``pid`` has mapped torch's C library: it is importing torch (or has)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the child import torch")
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_command_starts_is_one_line(tmp_path, signum, status):
    """Importing the commands pulls in torch (seconds on a loaded machine); a signal while it does, before any
    handler of the command itself exists, still ends in one line with 130/143 (ipgnn.cli_entry), and nothing
    is written. The signal goes as soon as the child has mapped libtorch, whatever the machine's load."""
    cmd = [sys.executable, "-m", "ipgnn.cli_entry", "train", "--config", str(CONFIGS / "mpe_spread_small.yaml")]
    cmd += [f"--logger.run_root={tmp_path / 'runs'}", "--logger.mode=disabled"]
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    deadline = time.monotonic() + 120
    while not _loading_torch(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
