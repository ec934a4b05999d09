"""Batched tasks: ``TensorGraphEnv``, the batched graph builder, the replay buffer's batched add, and the
trainer with ``num_envs > 1`` (on a small batched task written here, so these tests do not depend on
one scenario's physics)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ipgnn.config import GraphConfig
from ipgnn.envs.vector import TensorGraphEnv
from ipgnn.graphs import GraphBuilder, knn_edges
from ipgnn.replay import GraphReplayBuffer


class Drift:
    """B environments of N points on a plane; action k in 0..4 moves a point (stay, +x, -x, +y, -y);
    r_i is minus the distance of i to the origin; episodes last ``max_steps``."""

    obs_dim, discrete, action_dim, agent_type = 2, True, 5, None

    def __init__(self, num_agents: int = 6, num_envs: int = 4, max_steps: int = 5):
        self.num_agents, self.num_envs, self.max_steps = num_agents, num_envs, max_steps
        self.moves = torch.tensor([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.float32) * 0.1

    def reset(self, seed: int | None = None) -> Tensor:
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        self.p = torch.rand(self.num_envs, self.num_agents, 2, generator=g) * 2 - 1
        self.t = 0
        return self.p.clone()

    def step(self, action: Tensor):
        self.p = self.p + self.moves[action]
        self.t += 1
        r = -self.p.norm(dim=-1)
        term = torch.zeros(self.num_envs, self.num_agents, dtype=torch.bool)
        return self.p.clone(), r, term, torch.full_like(term, self.t >= self.max_steps)

    def positions(self) -> Tensor:
        return self.p

    def metrics(self) -> dict[str, Tensor]:
        return {"distance": self.p.norm(dim=-1).mean(1)}


def test_batched_graph_matches_per_graph_knn():
    pos = torch.rand(3, 7, 2)
    builder = GraphBuilder(GraphConfig(kind="knn", k=2), 7)
    got = builder.batched(3, pos)
    want = torch.cat([knn_edges(pos[b], 2) + 7 * b for b in range(3)], 1)
    assert set(map(tuple, got.t().tolist())) == set(map(tuple, want.t().tolist()))
    full = GraphBuilder(GraphConfig(kind="full"), 4).batched(2)
    assert full.shape == (2, 2 * 12) and int(full.max()) == 7
    assert (full[0] // 4 == full[1] // 4).all()  # no edge crosses environments


def test_tensor_graph_env_steps_and_episode_metrics():
    env = TensorGraphEnv(Drift(), GraphConfig(kind="knn", k=2))
    obs = env.reset(seed=3)
    assert isinstance(obs, Batch) and obs.num_graphs == 4 and obs.x.shape == (24, 2)
    assert obs.edge_index.shape == (2, 24 * 2)
    total = torch.zeros(4)
    for t in range(5):
        res = env.step(env.random_action(obs))
        total += res.reward.view(4, 6).sum(1)
        obs = res.obs
        assert res.done == (t == 4)
    assert res.episode["episode_length"] == 5
    assert res.episode["episode_return"] == pytest.approx(float(total.mean()), rel=1e-5)
    assert res.episode["distance"] > 0


def test_batched_add_equals_one_by_one():
    """Adding B environments' transitions at once stores exactly what B single adds store."""
    env = TensorGraphEnv(Drift(num_envs=3), GraphConfig(kind="knn", k=3))
    obs = env.reset(seed=1)
    act = env.random_action(obs)
    res = env.step(act)
    kw = dict(capacity=5, num_agents=6, obs_dim=2, action_dim=5, discrete=True, max_edges=18)
    batched, single = GraphReplayBuffer(**kw), GraphReplayBuffer(**kw)
    for buf in (batched, single):  # exercise the wrap-around
        buf.added = buf.start = 3
    batched.add(obs, act, res.reward, res.terminated, res.obs)
    for b in range(3):
        sl = slice(6 * b, 6 * b + 6)

        def one(g: Batch, b=b, sl=sl) -> Data:  # this environment's b and sl
            ei = g.edge_index[:, g.edge_index[1] // 6 == b] - 6 * b
            return Data(x=g.x[sl], edge_index=ei)

        single.add(one(obs), act[sl], res.reward[sl], res.terminated[sl], one(res.obs))
    idx = torch.tensor([3, 4, 0])
    a, s = batched.gather(idx), single.gather(idx)
    assert torch.equal(a.obs.x, s.obs.x) and torch.equal(a.action, s.action)
    assert torch.equal(a.obs.edge_index, s.obs.edge_index) and torch.equal(a.next_obs.edge_index, s.next_obs.edge_index)
    assert batched.pos == single.pos == 1 and len(batched) == 3


@pytest.mark.slow
def test_trainer_with_batched_task(tmp_path, tiny_overrides, monkeypatch):
    """num_envs environments step together, every one counts as environment steps, and the ratio of
    gradient steps to transitions is the configured one."""
    from ipgnn import envs
    from ipgnn.config import load_config
    from ipgnn.trainer import Trainer

    monkeypatch.setitem(
        envs.TASKS, "drift", lambda cfg: TensorGraphEnv(Drift(cfg.num_agents, cfg.num_envs, cfg.max_steps), cfg.graph)
    )
    cfg = load_config(
        None,
        [
            "--env.task=drift",
            "--env.num_agents=6",
            "--env.num_envs=4",
            "--env.max_steps=5",
            "--env.graph.kind=knn",
            "--env.graph.k=2",
            "--train.total_steps=200",
            *tiny_overrides,
        ],
    )
    trainer = Trainer.from_config(cfg, tmp_path / "run")
    trainer.train()
    assert trainer.env_step == 200 and trainer.episode == 40 and len(trainer.replay) == 200
    # a phase each time a multiple of update_every (25) is crossed from learning_starts (50) on:
    # 50, 75, ..., 200 -> 7 phases x 2 gradient steps, as a single environment would do
    assert trainer.algo.num_updates == 14
    trainer.close()


def test_single_env_task_refuses_num_envs(tiny_overrides):
    from ipgnn.config import ConfigError, load_config
    from ipgnn.envs import make_env

    cfg = load_config(None, ["--env.task=mpe_spread", "--env.num_envs=2", *tiny_overrides])
    with pytest.raises(ConfigError, match=r"env\.num_envs: task 'mpe_spread'"):
        make_env(cfg.env)
