"""Reproducibility, exact resume and checkpoint safety of the training loop (in-process, CPU)."""

import pytest
import torch

from ipgnn import checkpoint
from ipgnn.config import ConfigError, load_config
from ipgnn.logger import read_metrics
from ipgnn.trainer import Trainer
from ipgnn.training import Callback

from conftest import CONFIGS, SimulatedCrash, assert_same_run, comparable_rows, crash_at

CONFIG = CONFIGS / "mpe_spread_small.yaml"


def train(tmp_path, name, overrides, steps=300, callbacks=()):
    cfg = load_config(CONFIG, overrides + [f"--train.total_steps={steps}"])
    t = Trainer.from_config(cfg, tmp_path / name, callbacks=callbacks)
    t.train()
    t.close()
    return t


@pytest.mark.slow
@pytest.mark.parametrize("continuous", [False, True])
def test_same_seed_same_run(tmp_path, tiny_overrides, continuous):
    ov = tiny_overrides + [f"--env.continuous_actions={continuous}"]
    a, b = train(tmp_path, "a", ov), train(tmp_path, "b", ov)
    rows_a = comparable_rows(a.run_dir)
    assert rows_a == comparable_rows(b.run_dir)
    assert any("losses/q_loss" in r for r in rows_a)
    for (k, pa), pb in zip(a.algo.state_dict().items(), b.algo.state_dict().values()):
        assert torch.equal(pa, pb), k
    c = train(tmp_path, "c", ov + ["--seed=1"])
    assert comparable_rows(c.run_dir) != rows_a


@pytest.mark.slow
@pytest.mark.parametrize("log_every", [25, 40])
def test_crash_and_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_overrides, log_every):
    """log_every 40: the checkpoint (step 100) falls inside a logging window, whose loss sums are saved with
    it, so the first loss row after the resume (step 120) equals the uninterrupted run's."""
    tiny_overrides = tiny_overrides + [f"--train.log_every={log_every}"]
    full = train(tmp_path, "full", tiny_overrides)

    cfg = load_config(CONFIG, tiny_overrides + ["--train.total_steps=300"])
    crashed = Trainer.from_config(cfg, tmp_path / "crashed", callbacks=[crash_at(160)])
    with pytest.raises(SimulatedCrash):
        crashed.train()
    crashed.close()
    saved = checkpoint.load(tmp_path / "crashed" / "checkpoints" / "latest.pt")
    assert saved["env_step"] == 100  # the last episode boundary after checkpoint_every=100

    resumed = Trainer.resume(tmp_path / "crashed")
    assert resumed.env_step == 100 and resumed.cfg == full.cfg.model_copy(update={})
    resumed.train()
    resumed.close()
    assert_same_run(full, resumed)


class Killed(BaseException):
    """A kill -9 at one write boundary (BaseException: nothing in the trainer may swallow it)."""


@pytest.mark.slow
@pytest.mark.parametrize("boundary", ["mid-replay-write", "replay-written", "latest-written"])
def test_a_kill_at_every_checkpoint_write_boundary_resumes_exactly(tmp_path, tiny_overrides, monkeypatch, boundary):
    """The checkpoint at step 200 is killed (a) halfway through writing its replay file, (b) after the replay
    file and before latest.pt, (c) after latest.pt and before the old files are removed. Each time the run
    resumes from a consistent pair (step 100's, or step 200's) and ends exactly as the uninterrupted run.
    A kill inside a write has no hook: the writes themselves (``checkpoint.save``, ``Checkpointer.clean``) are
    patched."""
    from ipgnn.training.checkpointing import Checkpointer

    full = train(tmp_path, "full", tiny_overrides)
    cfg = load_config(CONFIG, tiny_overrides + ["--train.total_steps=300"])
    run = Trainer.from_config(cfg, tmp_path / "killed")
    real_save, real_clean = checkpoint.save, Checkpointer.clean

    def save(obj, path):
        if run.env_step == 200:
            if boundary == "mid-replay-write" and path.name.startswith("replay"):
                (path.parent / f".{path.name}.123.tmp").write_bytes(b"partial")  # what a kill mid-write leaves
                raise Killed()
            if boundary == "replay-written" and path.name == "latest.pt":
                raise Killed()
        return real_save(obj, path)

    def clean(self, keep=None):
        if self.trainer.env_step == 200 and keep is not None and boundary == "latest-written":
            raise Killed()
        return real_clean(self, keep)

    monkeypatch.setattr(checkpoint, "save", save)
    monkeypatch.setattr(Checkpointer, "clean", clean)
    with pytest.raises(Killed):
        run.train()
    run.close()
    monkeypatch.undo()
    saved = checkpoint.load(tmp_path / "killed" / "checkpoints" / "latest.pt")
    assert saved["env_step"] == (200 if boundary == "latest-written" else 100)
    resumed = Trainer.resume(tmp_path / "killed")
    assert not list((tmp_path / "killed" / "checkpoints").glob(".*.tmp"))  # interrupted writes cleaned up
    resumed.train()
    resumed.close()
    names = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert names == ["latest.pt", "replay-300.pt"]
    assert_same_run(full, resumed)


@pytest.mark.slow
def test_resume_refuses_a_replay_file_that_is_not_its_own_and_never_truncates(tmp_path, tiny_overrides):
    from ipgnn.trainer import ResumeError

    train(tmp_path, "run", tiny_overrides, steps=200)
    ckpt = tmp_path / "run" / "checkpoints"
    replay = checkpoint.load(ckpt / "replay-200.pt")
    checkpoint.save(replay | {"added": replay["added"] - 25}, ckpt / "replay-200.pt")  # another step's buffer
    with pytest.raises(ResumeError, match="holds 175 transitions but .*latest.pt was saved with 200.*--no-replay"):
        Trainer.resume(tmp_path / "run")
    (ckpt / "replay-200.pt").write_bytes(b"")  # damaged
    with pytest.raises(ResumeError, match="could not be read.*--no-replay"):
        Trainer.resume(tmp_path / "run")
    (ckpt / "replay-200.pt").unlink()
    with pytest.raises(ResumeError, match="replay-200.pt, which is missing.*--no-replay"):
        Trainer.resume(tmp_path / "run")
    without = Trainer.resume(tmp_path / "run", ["--train.total_steps=250"], with_replay=False)
    assert without.env_step == 200 and len(without.replay) == 0
    without.close()
    with pytest.raises(ResumeError, match="smaller than the run's 200"):
        Trainer.resume(tmp_path / "run", ["--train.total_steps=100"], with_replay=False)


class Boom:
    """Fails while being written, like a full disk mid-save."""

    def __reduce__(self):
        raise RuntimeError("disk full")


def test_checkpoint_is_atomic_and_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save({"a": torch.ones(2)}, path)
    with pytest.raises(RuntimeError):
        checkpoint.save({"a": Boom()}, path)
    assert torch.equal(checkpoint.load(path)["a"], torch.ones(2))  # the old file survived intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind
    torch.save({"evil": Boom}, tmp_path / "evil.pt")  # an arbitrary class: refused by weights_only
    with pytest.raises(ValueError, match="could not be read"):
        checkpoint.load(tmp_path / "evil.pt")


def test_resume_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer.resume(tmp_path)


def test_replay_too_big_for_memory_is_refused_early(tmp_path, tiny_overrides):
    cfg = load_config(CONFIG, tiny_overrides + ["--replay.capacity=100000000000", "--train.total_steps=100000000000"])
    with pytest.raises(ConfigError, match="replay.capacity.*GiB"):
        Trainer.from_config(cfg, tmp_path / "big")


def test_slow_config_warns_on_cpu(tmp_path, tiny_overrides, capsys):
    cfg = load_config(CONFIG, tiny_overrides + ["--replay.batch_size=8192", "--train.total_steps=10"])
    t = Trainer.from_config(cfg, tmp_path / "slow")
    t.close()
    out, err = capsys.readouterr()
    assert "paper's defaults are for GPUs" in err
    assert "WARNING" not in out  # stdout stays clean for the commands that print JSON there


@pytest.mark.parametrize("native", [True, False])
def test_precision_advice_follows_the_cpu(tmp_path, tiny_overrides, capsys, monkeypatch, native):
    """A slow fp32 config on a CPU with native bfloat16 is told about algo.precision: bf16; asking for bf16 on a
    CPU without it is warned off. What this machine has decides ``native`` only through the patched probe."""
    import ipgnn.precision

    monkeypatch.setattr(ipgnn.precision, "native_bf16", lambda: native)
    for precision in ("fp32", "bf16"):
        cfg = load_config(
            CONFIG,
            tiny_overrides + ["--replay.batch_size=8192", "--train.total_steps=10", f"--algo.precision={precision}"],
        )
        Trainer.from_config(cfg, tmp_path / precision).close()
        printed = "".join(capsys.readouterr())
        assert ("--algo.precision=bf16 makes each update about 2x" in printed) == (native and precision == "fp32")
        assert ("has no native bfloat16" in printed) == (not native and precision == "bf16")


def test_long_run_eta_warning(tmp_path, tiny_overrides, capsys):
    cfg = load_config(CONFIG, tiny_overrides + ["--train.total_steps=10"])
    t = Trainer.from_config(cfg, tmp_path / "eta")
    t.cfg.train.total_steps = 10**9
    t.eta.report(t, 0.5)
    t.close()
    printed = "".join(capsys.readouterr())
    assert "updates alone will take about" in printed and " h on cpu" in printed


@pytest.mark.slow
def test_partial_metrics_line_and_finished_run_resume(tmp_path, tiny_overrides):
    """A kill mid-write leaves half a line at the end of metrics.jsonl: resume drops it and continues; a
    finished run resumed prints its final evaluation instead of nothing."""
    run = train(tmp_path, "run", tiny_overrides, steps=200)
    final = [r for r in read_metrics(run.run_dir / "metrics.jsonl") if "eval/episode_return" in r][-1]
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write('{"env_step": 200, "eval/epis')
    assert read_metrics(run.run_dir / "metrics.jsonl")[-1]["env_step"] == 200  # readers skip the partial line
    again = Trainer.resume(run.run_dir)
    out = again.train()
    again.close()
    assert out["eval/episode_return"] == final["eval/episode_return"]
    assert '"eval/epis\n' not in (run.run_dir / "metrics.jsonl").read_text() + "\n"


class StopAt(Callback):
    """Ask to stop (as the first Ctrl-C or SIGTERM does) after environment step ``at`` (``where='step'``), or after
    gradient step ``at`` of the run (``where='update'``, counted from 0); records the hooks that follow."""

    def __init__(self, where: str, at: int):
        self.where, self.at, self.seen = where, at, []

    def on_step(self, trainer, result):
        if self.where == "step" and trainer.env_step == self.at:
            trainer.request_stop("SIGTERM")

    def on_update(self, trainer, stats):
        if self.where == "update" and trainer.algo.num_updates == self.at + 1:
            trainer.request_stop("Ctrl-C")

    def on_stop(self, trainer, stop):
        self.seen.append(("stop", stop.reason, stop.path))

    def on_train_end(self, trainer, final_eval):
        self.seen.append(("end", final_eval))


@pytest.mark.slow
@pytest.mark.parametrize("where,at", [("step", 137), ("update", 13)])
def test_a_stop_inside_an_episode_resumes_bit_for_bit(tmp_path, tiny_overrides, where, at):
    """The first Ctrl-C or SIGTERM stops at a safe point: between two iterations (mid-episode: step 137 of
    25-step episodes), or between two gradient steps of an update phase (gradient step 13 of 3-step phases
    every 20 steps: at step 140).
    The resumed run replays the cut episode and finishes the cut phase, and ends as the uninterrupted run:
    the same metric rows and the same parameters. The stop is asked by a user callback, as the signal handler of
    ``ipgnn-train`` asks it."""
    from ipgnn.trainer import StopRequested

    ov = tiny_overrides + ["--train.gradient_steps=3", "--train.log_every=40", "--train.update_every=20"]
    full = train(tmp_path, "full", ov)
    cfg = load_config(CONFIG, ov + ["--train.total_steps=300"])
    hook = StopAt(where, at)
    stopped = Trainer.from_config(cfg, tmp_path / "stopped", callbacks=[hook])
    with pytest.raises(StopRequested) as stop:
        stopped.train()
    stopped.close()
    reason = "SIGTERM" if where == "step" else "Ctrl-C"
    assert hook.seen == [("stop", reason, stop.value.path), ("end", None)]  # on_stop, then on_train_end: unfinished
    saved = checkpoint.load(stop.value.path)
    assert len(saved["cut"]["actions"]) % 25 != 0  # inside an episode: its actions are in the checkpoint
    if where == "update":  # gradient step 13 is the second of its phase (12, 13, 14): one is still owed
        assert saved["cut"]["remaining_grad"] == 1
    else:  # the stop came during the step to 137: the checkpoint is right after it
        assert saved["env_step"] == at and saved["cut"]["remaining_grad"] == -1
    resumed = Trainer.resume(tmp_path / "stopped")
    resumed.train()
    resumed.close()
    assert_same_run(full, resumed)


class Recorder(Callback):
    """Every hook call, as ``(hook, env_step)``."""

    def __init__(self):
        self.calls, self.evals, self.stats = [], [], []

    def on_train_start(self, trainer):
        self.calls.append(("train_start", trainer.env_step))

    def on_update(self, trainer, stats):
        self.calls.append(("update", trainer.env_step))
        self.stats.append(stats)

    def on_phase_end(self, trainer, phase_seconds, step_seconds):
        self.calls.append(("phase_end", trainer.env_step))
        assert len(step_seconds) == 2 and phase_seconds >= sum(step_seconds)

    def on_step(self, trainer, result):
        self.calls.append(("step", trainer.env_step))

    def on_episode_end(self, trainer, result):
        self.calls.append(("episode_end", trainer.env_step))
        assert result.done

    def on_eval(self, trainer, metrics, seconds):
        self.calls.append(("eval", trainer.env_step))
        self.evals.append(metrics)

    def on_stop(self, trainer, stop):
        self.calls.append(("stop", trainer.env_step))

    def on_train_end(self, trainer, final_eval):
        self.calls.append(("train_end", trainer.env_step))
        self.final = final_eval


def test_hooks_are_called_in_loop_order(tmp_path, tiny_overrides):
    """A 100-step run of 25-step episodes, 2 gradient steps every 25 steps from step 50, evaluations and
    checkpoints every 50: each iteration updates, then ``on_step``; an episode's end evaluates (``on_eval``,
    from the built-in evaluation) before the user's ``on_episode_end``."""
    rec = Recorder()
    ov = tiny_overrides + ["--train.eval_every=50", "--train.checkpoint_every=50"]
    run = train(tmp_path, "hooks", ov, steps=100, callbacks=[rec])
    expected = [("train_start", 0)]
    for step in range(1, 101):
        if step in (50, 75, 100):
            expected += [("update", step), ("update", step), ("phase_end", step)]
        expected.append(("step", step))
        if step % 25 == 0:
            expected += [("eval", step)] * (step % 50 == 0) + [("episode_end", step)]
    assert rec.calls == expected + [("train_end", 100)]
    rows = read_metrics(run.run_dir / "metrics.jsonl")
    logged = [{k: v for k, v in r.items() if k.startswith("eval/")} for r in rows if "eval/episode_return" in r]
    assert rec.evals == logged and rec.final == logged[-1]  # the final evaluation is the one at step 100
    losses = {k for r in rows for k in r if k.startswith("losses/")}
    assert len(rec.stats) == 6 and {f"losses/{k}" for k in rec.stats[0]} == losses
    assert checkpoint.load(run.ckpt_dir / "latest.pt")["env_step"] == 100


def test_a_callback_must_be_one(tmp_path, tiny_overrides):
    cfg = load_config(CONFIG, tiny_overrides)
    with pytest.raises(TypeError, match="expected an ipgnn.training.Callback"):
        Trainer.from_config(cfg, tmp_path / "bad", callbacks=[lambda trainer: None])
