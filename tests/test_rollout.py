"""Parallel rollouts: worker processes and Ray actors feed one learner (ipgnn.rollout)."""

from __future__ import annotations

import pytest
import torch

from ipgnn.config import EnvConfig, GraphConfig, load_config
from ipgnn.envs import make_env
from ipgnn.rollout import WorkerPoolEnv
from ipgnn.trainer import Trainer

SPREAD = EnvConfig(task="mpe_spread", num_agents=3, max_steps=4, graph=GraphConfig(kind="knn", k=2))


def test_workers_step_exactly_like_separate_environments():
    """Worker w is an ordinary environment reset with seed + w; actions reach the right worker."""
    pool = WorkerPoolEnv(SPREAD, 2, "process")
    inline = [make_env(SPREAD), make_env(SPREAD)]
    try:
        obs = pool.reset(seed=5)
        ref = [inline[0].reset(seed=5), inline[1].reset(seed=6)]
        assert obs.num_graphs == 2 and torch.equal(obs.x, torch.cat([r.x for r in ref]))
        for _ in range(4):
            action = torch.randint(5, (6,))
            res = pool.step(action)
            want = [inline[w].step(action[3 * w : 3 * w + 3]) for w in range(2)]
            assert torch.equal(res.obs.x, torch.cat([r.obs.x for r in want]))
            assert torch.equal(res.reward, torch.cat([r.reward for r in want]))
            assert torch.equal(res.obs.edge_index[:, : want[0].obs.edge_index.size(1)], want[0].obs.edge_index)
        assert res.done and res.episode["episode_return"] == pytest.approx(
            sum(r.episode["episode_return"] for r in want) / 2
        )
    finally:
        pool.close()
        for e in inline:
            e.close()


@pytest.mark.slow
def test_trainer_with_worker_processes_is_reproducible(tmp_path, tiny_overrides):
    over = [
        "--env.task=mpe_spread",
        "--env.num_agents=3",
        "--env.max_steps=10",
        "--env.graph.k=2",
        "--rollout.workers=2",
        "--train.total_steps=120",
        "--train.learning_starts=40",
        *tiny_overrides,
    ]
    runs = []
    for name in ("a", "b"):
        trainer = Trainer.from_config(load_config(None, over), tmp_path / name)
        out = trainer.train()
        runs.append((out, trainer.replay.reward[: len(trainer.replay)].clone()))
        assert trainer.env_step == 120 and len(trainer.replay) == 120 and trainer.algo.num_updates > 0
        trainer.close()
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.slow
def test_ray_actors_feed_the_learner(tmp_path, tiny_overrides, monkeypatch):
    """Two local Ray actors, each with its own SUMO simulation of a small generated grid."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path / "cache"))
    over = [
        "--env.task=traffic",
        "--env.num_agents=4",
        "--env.max_steps=5",
        "--env.graph.kind=env",
        "--env.options.scenario={kind: grid, rows: 2, cols: 2, rate: 300}",
        "--env.options.engine=sumo",
        "--rollout.backend=ray",
        "--rollout.workers=2",
        "--train.total_steps=20",
        "--train.learning_starts=10",
        "--train.update_every=10",
        "--train.eval_episodes=1",
        *tiny_overrides,
    ]
    try:
        trainer = Trainer.from_config(load_config(None, over), tmp_path / "run")
        assert trainer.env.backend == "ray" and len(trainer.env._actors) == 2
        trainer.train()
        assert len(trainer.replay) == 20 and trainer.episode == 4
        x = trainer.replay.gather(torch.arange(20)).obs.x.view(20, 4, -1)
        # slots alternate worker 0, worker 1: their simulations (seeds s, s+1) differ
        assert not torch.equal(x[0::2], x[1::2])
        trainer.close()
    finally:
        ray.shutdown()


def test_learner_threads_are_restored_after_a_run_with_workers(tmp_path, tiny_overrides, monkeypatch):
    """The learner leaves each worker a core while it runs, and gives the threads back on close."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    over = [
        "--env.task=mpe_spread",
        "--env.num_agents=3",
        "--env.max_steps=5",
        "--env.graph.k=2",
        "--rollout.workers=2",
        "--train.total_steps=20",
        "--train.learning_starts=20",
        *tiny_overrides,
    ]
    trainer = Trainer.from_config(load_config(None, over), tmp_path / "run")
    import os

    assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) - 2)
    trainer.close()
    assert torch.get_num_threads() == before
