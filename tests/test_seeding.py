"""Independent random streams: no two runs, and no run's training and evaluation, share an episode."""

import numpy as np
import pytest
import torch

from ipgnn.config import load_config
from ipgnn.seeding import EVAL, REPLAY, TRAIN, episode_seed, eval_seed, stream_seed
from ipgnn.trainer import Trainer

from conftest import CONFIGS


def test_stream_seed_is_seedsequence_spawn():
    """The documented derivation: spawn(stream), then spawn(index), of SeedSequence(seed)."""
    for seed, stream, index in [(0, TRAIN, 0), (3, EVAL, 7), (12345, REPLAY, 0)]:
        child = np.random.SeedSequence(seed).spawn(stream + 1)[stream].spawn(index + 1)[index]
        assert stream_seed(seed, stream, index) == int(child.generate_state(1, np.uint64)[0]) & (2**62 - 1)
    with pytest.raises(ValueError, match="from 0 to"):
        stream_seed(-1, TRAIN, 0)


def test_no_two_runs_share_an_episode_seed():
    """Five runs of 2000 training and 100 evaluation episodes: 10 500 reset seeds, all distinct (with
    ``seed + episode`` run 1 replayed run 0's episodes shifted by one). SUMO takes them modulo 2**31:
    still distinct."""
    seeds = [episode_seed(s, e) for s in range(5) for e in range(2000)]
    seeds += [eval_seed(s, e) for s in range(5) for e in range(100)]
    assert len(set(seeds)) == len(seeds)
    assert len({s % 2**31 for s in seeds}) == len(seeds)


def _recorded_run(tmp_path, name, seed, overrides):
    cfg = load_config(CONFIGS / "mpe_spread_small.yaml", overrides + [f"--seed={seed}", "--train.total_steps=200"])
    trainer = Trainer.from_config(cfg, tmp_path / name)
    starts: dict[str, list] = {"train": [], "eval": []}

    def recording(env, kind):
        reset = env.reset

        def wrapped(seed=None):
            obs = reset(seed=seed)
            starts[kind].append((seed, obs.x.clone()))
            return obs

        return wrapped

    trainer.env.reset = recording(trainer.env, "train")
    trainer.eval_env.reset = recording(trainer.eval_env, "eval")
    trainer.train()
    trainer.close()
    return starts


@pytest.mark.slow
def test_neighbouring_runs_play_different_episodes(tmp_path, tiny_overrides):
    """Runs seeded 0 and 1 through the real trainer and simulator: no reset seed and no first observation of
    any training or evaluation episode is shared between them, or between a run's training and evaluation."""
    a = _recorded_run(tmp_path, "a", 0, tiny_overrides)
    b = _recorded_run(tmp_path, "b", 1, tiny_overrides)
    assert len(a["train"]) >= 8 and len(a["eval"]) >= 4  # 200 steps of 25-step episodes; 2 evaluations of 2
    episodes = [(run, kind, s, x) for run, st in (("a", a), ("b", b)) for kind, xs in st.items() for s, x in xs]
    for i, (run, kind, s, x) in enumerate(episodes):
        for run2, kind2, s2, x2 in episodes[i + 1 :]:
            if (run, kind) == (run2, kind2) and kind == "eval":
                continue  # a run evaluates on the same episodes every time, by design
            assert s != s2, (run, kind, run2, kind2)
            assert not torch.equal(x, x2), (run, kind, run2, kind2)
    # and each evaluation replays the same episodes: the curve compares like with like
    assert [s for s, _ in a["eval"][:2]] == [s for s, _ in a["eval"][2:4]] == [eval_seed(0, 0), eval_seed(0, 1)]
