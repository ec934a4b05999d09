"""The MAgent jungle task: PettingZoo API, graph data, seeding, and where every reward comes from."""

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("magent2")

with warnings.catch_warnings():  # pettingzoo.test imports a classic env through a deprecated path
    warnings.simplefilter("ignore", DeprecationWarning)
    from pettingzoo.test import parallel_api_test  # noqa: E402

from ipgnn.config import ConfigError, EnvConfig, GraphConfig  # noqa: E402
from ipgnn.envs.magent import JungleParallelEnv, make_magent_jungle  # noqa: E402

UP, LEFT, STAY, RIGHT, DOWN = 0, 1, 2, 3, 4
ATTACK_UP, ATTACK_LEFT, ATTACK_RIGHT, ATTACK_DOWN = 5, 6, 7, 8
ATTACK_OFFSET = {ATTACK_UP: (0, -1), ATTACK_LEFT: (-1, 0), ATTACK_RIGHT: (1, 0), ATTACK_DOWN: (0, 1)}
OBS_DIM = 11 * 11 * 5 + 2


def _cfg(**options) -> EnvConfig:
    return EnvConfig(
        task="magent_jungle", num_agents=20, max_steps=25, graph=GraphConfig(kind="knn", k=4), options=options
    )


def test_parallel_api_and_spaces():
    env = JungleParallelEnv(n_agents=20, num_food=12, map_size=30, max_cycles=25)
    parallel_api_test(env, num_cycles=30)
    assert env.observation_space("agent_0").shape == (OBS_DIM,)
    assert env.action_space("agent_0").n == 9
    env = JungleParallelEnv(n_agents=20, num_food=12, map_size=30, max_cycles=25)  # the test set max_cycles
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    while env.agents:
        assert all(env.observation_space(a).contains(o) for a, o in obs.items())
        obs, _, term, trunc, _ = env.step({a: int(rng.integers(9)) for a in env.agents})
    assert env.frames == 25 and all(trunc.values()) and not any(term.values())


def test_graph_data_shapes_and_episode():
    env = make_magent_jungle(_cfg())
    assert env.spec.obs_dim == OBS_DIM and env.spec.action_dim == 9 and env.spec.discrete
    obs = env.reset(seed=0)
    assert obs.x.shape == (20, OBS_DIM)
    assert obs.pos.shape == (20, 2) and obs.pos.dtype == torch.float32
    assert torch.equal(obs.pos, torch.from_numpy(env.env.agent_positions()))
    assert obs.edge_index.shape == (2, 80)
    assert torch.bincount(obs.edge_index[1], minlength=20).tolist() == [4] * 20  # each agent hears 4
    # the last two features are the agent's own normalised coordinates
    assert torch.allclose(obs.x[:, -2:], obs.pos / 29)
    start = obs.pos.clone()
    for t in range(25):
        res = env.step(env.random_action(obs))
        obs = res.obs
        assert res.done == (t == 24)
    assert not torch.equal(start, obs.pos)  # agents moved
    assert {"food_eaten", "attacks", "episode_return"} <= set(res.episode)
    assert res.episode["episode_length"] == 25


def _rollout(env, seed: int, action_seed: int = 0):
    torch.manual_seed(action_seed)
    obs = env.reset(seed=seed)
    xs, rs = [obs.x], []
    done = False
    while not done:
        res = env.step(env.random_action(obs))
        obs, done = res.obs, res.done
        xs.append(obs.x)
        rs.append(res.reward)
    return torch.stack(xs), torch.stack(rs)


def test_same_seed_same_episode():
    env = make_magent_jungle(_cfg(map_size=12))  # a crowded map, so rewards are not all zero
    x1, r1 = _rollout(env, seed=7)
    x2, r2 = _rollout(make_magent_jungle(_cfg(map_size=12)), seed=7)  # a fresh engine
    x3, r3 = _rollout(env, seed=7)  # the same engine again, after another episode
    assert (r1 != 0).any()
    assert torch.equal(x1, x2) and torch.equal(r1, r2)
    assert torch.equal(x1, x3) and torch.equal(r1, r3)
    x4, _ = _rollout(env, seed=8)
    assert not torch.equal(x1[0], x4[0])  # another seed, another layout


def test_rewards_come_from_eating_and_attacking():
    env = JungleParallelEnv(n_agents=4, num_food=1, map_size=30, max_cycles=5)
    # a0 beside the food at (6, 5); a1 above a2; a3 alone
    layout = {"agent_positions": [(5, 5), (10, 10), (10, 11), (20, 20)], "food_positions": [(6, 5)]}
    env.reset(seed=0, options=layout)
    assert env.food_positions().tolist() == [[6, 5]]
    _, rew, _, _, _ = env.step({"agent_0": ATTACK_RIGHT, "agent_1": ATTACK_DOWN, "agent_2": STAY, "agent_3": STAY})
    assert rew == pytest.approx({"agent_0": 1.0, "agent_1": 2.0, "agent_2": -4.0, "agent_3": 0.0})
    assert env.step_metrics() == {"food_eaten": 1.0, "attacks": 1.0}
    # attacks on empty cells cost a little; moving or staying costs nothing
    _, rew, _, _, _ = env.step({"agent_0": ATTACK_LEFT, "agent_1": STAY, "agent_2": DOWN, "agent_3": ATTACK_UP})
    assert rew == pytest.approx({"agent_0": -0.01, "agent_1": 0.0, "agent_2": 0.0, "agent_3": -0.01})
    assert env.step_metrics() == {"food_eaten": 0.0, "attacks": 0.0}
    # mutual attack, and two attackers on one agent: penalties add up; nobody dies
    env.reset(seed=0, options={"agent_positions": [(10, 10), (11, 10), (12, 10), (20, 20)], "food_positions": [(6, 5)]})
    _, rew, _, _, _ = env.step(
        {"agent_0": ATTACK_RIGHT, "agent_1": ATTACK_LEFT, "agent_2": ATTACK_LEFT, "agent_3": STAY}
    )
    assert rew == pytest.approx({"agent_0": 2 - 4, "agent_1": 2 - 8, "agent_2": 2.0, "agent_3": 0.0})
    assert env.step_metrics()["attacks"] == 3.0
    assert len(env.agent_positions()) == 4 and len(env.agents) == 4


def test_reward_options_reach_the_engine():
    cfg = EnvConfig(
        task="magent_jungle",
        num_agents=3,
        max_steps=5,
        graph=GraphConfig(kind="full"),
        options={
            "num_food": 1,
            "food_reward": 0.5,
            "attack_reward": 3,
            "attacked_penalty": -1.5,
            "miss_penalty": -0.25,
            "step_reward": -0.125,
        },
    )
    env = make_magent_jungle(cfg)
    env.reset(seed=0)  # the adapter's episode; then the same layout as above, set on the PettingZoo env
    env.env.reset(seed=0, options={"agent_positions": [(5, 5), (10, 10), (10, 11)], "food_positions": [(5, 4)]})
    res = env.step(torch.tensor([ATTACK_UP, ATTACK_DOWN, ATTACK_LEFT]))
    assert res.reward.tolist() == pytest.approx([0.5 - 0.125, 3 - 0.125, -1.5 - 0.25 - 0.125])


def _expected_rewards(env: JungleParallelEnv, act: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Each agent's reward, worked out from the cells before the step, independently of the engine."""
    agents = [tuple(p) for p in env.agent_positions().astype(int).tolist()]
    food = {tuple(p) for p in env.food_positions().astype(int).tolist()}
    rew = np.zeros(len(agents))
    bites = attacks = 0
    for i, a in enumerate(act):
        if a not in ATTACK_OFFSET:
            continue
        target = (agents[i][0] + ATTACK_OFFSET[a][0], agents[i][1] + ATTACK_OFFSET[a][1])
        if target in food:
            rew[i] += 1.0
            bites += 1
        elif target in agents:
            rew[i] += 2.0
            rew[agents.index(target)] -= 4.0
            attacks += 1
        else:
            rew[i] -= 0.01
    return rew, bites, attacks


def test_every_reward_is_accounted_for_in_a_crowded_episode():
    # 20 agents and 12 food on 6 x 6 free cells: most attacks hit something
    env = JungleParallelEnv(n_agents=20, num_food=12, map_size=8, max_cycles=25)
    env.reset(seed=3)
    food0 = env.food_positions().copy()
    rng = np.random.default_rng(0)
    total_bites = total_attacks = 0
    while env.agents:
        act = rng.integers(0, 9, size=20)
        expected, bites, attacks = _expected_rewards(env, act)
        _, rew, _, _, _ = env.step({a: int(act[i]) for i, a in enumerate(env.possible_agents)})
        np.testing.assert_allclose([rew[a] for a in env.possible_agents], expected, atol=1e-5)
        assert env.step_metrics() == {"food_eaten": float(bites), "attacks": float(attacks)}
        total_bites, total_attacks = total_bites + bites, total_attacks + attacks
        assert len(env.agent_positions()) == 20  # nobody dies
    assert total_bites > 10 and total_attacks > 10
    np.testing.assert_array_equal(env.food_positions(), food0)  # food stays, never eaten up


def test_options_are_checked():
    with pytest.raises(ConfigError, match="env.options.food_rewrd"):
        make_magent_jungle(_cfg(food_rewrd=1.0))
    with pytest.raises(ConfigError, match="env.options.map_size: expected int"):
        make_magent_jungle(_cfg(map_size=30.5))
    with pytest.raises(ConfigError, match="too few for 20 agents"):
        make_magent_jungle(_cfg(map_size=6))
    with pytest.raises(ConfigError, match="discrete actions only"):
        make_magent_jungle(_cfg().model_copy(update={"continuous_actions": True}))
    env = JungleParallelEnv(n_agents=2, num_food=1, map_size=10)
    with pytest.raises(ValueError, match="not interior"):
        env.reset(options={"agent_positions": [(0, 0), (3, 3)]})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be in 0..8"):
        env.step({"agent_0": 9})
