import functools

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ipgnn.config import ConfigError, EnvConfig, GraphConfig
from ipgnn.envs import make_env
from ipgnn.envs.pettingzoo import ParallelGraphEnv


class LineWorld(ParallelEnv):
    """A tiny real ParallelEnv: agents on a line; agent 'b' has only 2 of 3 actions; masks in infos."""

    metadata = {"name": "line_v0"}

    def __init__(self, horizon=4, terminate_at=None):
        self.possible_agents = ["a", "b", "c"]
        self.horizon, self.terminate_at = horizon, terminate_at

    # PettingZoo's idiom (its parallel_api_test asks for it): the same space object on every call. B019: the
    # class-level cache keeps each instance alive for the process's lifetime.
    @functools.cache  # noqa: B019
    def observation_space(self, agent):
        return spaces.Box(-10, 10, (2 if agent != "c" else 1,), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.Discrete(2 if agent == "b" else 3)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t = 0
        self.x = {a: float(i) for i, a in enumerate(self.agents)}
        return self._obs(), {a: {"action_mask": np.array([1, 0, 1], np.int8)} if a == "a" else {} for a in self.agents}

    def _obs(self):
        return {a: np.array([self.x[a], self.t] if a != "c" else [self.x[a]], np.float32) for a in self.agents}

    def step(self, actions):
        self.t += 1
        for a, act in actions.items():
            self.x[a] += act - 1
        rew = {a: -abs(self.x[a]) for a in self.agents}
        term = {a: self.terminate_at is not None and self.t >= self.terminate_at for a in self.agents}
        trunc = {a: self.t >= self.horizon for a in self.agents}
        obs = self._obs()
        infos = {a: {"action_mask": np.array([1, 0, 1], np.int8)} if a == "a" else {} for a in self.agents}
        if all(term.values()) or all(trunc.values()):
            self.agents = []
        return obs, rew, term, trunc, infos


def test_adapter_pads_observations_and_masks_actions():
    env = ParallelGraphEnv(LineWorld(), GraphConfig(kind="full"))
    assert env.spec.obs_dim == 2 and env.spec.action_dim == 3 and env.spec.discrete
    obs = env.reset(seed=0)
    assert obs.x.shape == (3, 2) and obs.x[2, 1] == 0  # 'c' padded
    assert obs.edge_index.shape == (2, 6)
    # 'a' from its info mask, 'b' from its smaller Discrete space, 'c' all valid
    assert obs.action_mask.tolist() == [[True, False, True], [True, True, False], [True, True, True]]
    for _ in range(20):
        act = env.random_action(obs)
        assert all(obs.action_mask[i, a] for i, a in enumerate(act.tolist()))


def test_truncation_is_not_termination_and_episode_metrics():
    env = ParallelGraphEnv(LineWorld(horizon=4), GraphConfig(kind="full"))
    env.reset(seed=0)
    results = [env.step(torch.tensor([1, 1, 1])) for _ in range(4)]
    assert [r.done for r in results] == [False, False, False, True]
    last = results[-1]
    assert last.truncated.all() and not last.terminated.any()
    # positions never change with action 1: rewards -|x| = 0, -1, -2 per step, 4 steps
    assert last.episode["episode_return"] == pytest.approx(-12.0)
    assert last.episode["episode_return_per_agent"] == pytest.approx(-4.0)
    assert last.episode["episode_length"] == 4


def test_termination_is_reported():
    env = ParallelGraphEnv(LineWorld(horizon=10, terminate_at=2), GraphConfig(kind="full"))
    env.reset()
    env.step(torch.tensor([1, 1, 1]))
    res = env.step(torch.tensor([1, 1, 1]))
    assert res.done and res.terminated.all()


def test_knn_needs_positions():
    with pytest.raises(ValueError, match=r"env\.graph\.kind 'knn'"):
        ParallelGraphEnv(LineWorld(), GraphConfig(kind="knn"))


def test_mpe_spread_graph_follows_agents():
    env = make_env(EnvConfig(num_agents=6, graph=GraphConfig(kind="knn", k=2)))
    obs = env.reset(seed=1)
    d = torch.cdist(obs.pos, obs.pos) + torch.eye(6) * 1e9
    for i in range(6):
        assert set(obs.edge_index[0, obs.edge_index[1] == i].tolist()) == set(
            d[i].topk(2, largest=False).indices.tolist()
        )
    # positions are the agents' own (the observation holds self position at [2:4])
    assert torch.allclose(obs.pos, obs.x[:, 2:4], atol=1e-6)


def test_mpe_continuous_actions_are_rescaled_to_the_box():
    env = make_env(EnvConfig(num_agents=3, continuous_actions=True))
    assert not env.spec.discrete and env.spec.action_dim == 5
    scaled = env._env_action(torch.tensor([[-1.0, 0.0, 1.0, 0.5, -0.5]] * 3))
    low, high = env._act_low[0].numpy(), env._act_high[0].numpy()
    expected = low + (np.array([0.0, 0.5, 1.0, 0.75, 0.25])) * (high - low)
    assert np.allclose(scaled["agent_0"], expected)


def test_same_seed_same_episode():
    def roll(seed):
        env = make_env(EnvConfig(num_agents=3))
        torch.manual_seed(seed)
        obs = env.reset(seed=seed)
        xs = [obs.x]
        for _ in range(10):
            obs = env.step(env.random_action(obs)).obs
            xs.append(obs.x)
        return torch.stack(xs)

    assert torch.equal(roll(3), roll(3)) and not torch.equal(roll(3), roll(4))


def test_unknown_task_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="unknown task 'nope'.*mpe_spread"):
        make_env(EnvConfig(task="nope"))
    with pytest.raises(ConfigError, match="env.options.ratio"):
        make_env(EnvConfig(options={"ratio": 1}))


def test_env_graph_kind_uses_the_tasks_own_graph():
    import networkx as nx

    from ipgnn.graphs import networkx_edges

    road = networkx_edges(nx.path_graph(3))
    env = ParallelGraphEnv(LineWorld(), GraphConfig(kind="env"), env_edges=road)
    assert env.graph.is_static and env.graph.max_edges == 4
    assert torch.equal(env.reset(seed=0).edge_index, road)
