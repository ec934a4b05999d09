"""Batched tensor MPE: physics against mpe2 step by step, the PettingZoo API, batching, determinism,
reward locality and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ipgnn.envs.mpe_tensor import (
    DISCRETE_DIRECTIONS,
    SCENARIOS,
    TensorMPEParallelEnv,
    TensorWorld,
    make_scenario,
)

F64 = torch.float64
TOL = 1e-4  # the brief's bound; observed differences are ~1e-15 in float64


# ------------------------------------------------------------------------------------------------ helpers
def _mpe2_spread(continuous: bool = False, seed: int = 3):
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(N=3, max_cycles=25, continuous_actions=continuous)
    env.reset(seed=seed)
    return env


def _mpe2_state(world) -> tuple[np.ndarray, np.ndarray]:
    ents = world.agents + world.landmarks
    return np.stack([e.state.p_pos for e in ents]), np.stack([e.state.p_vel for e in ents])


def _run_side_by_side(env, sc, actions_mpe, actions_tensor) -> float:
    """Step both for every action pair; assert positions/velocities/rewards agree at every step."""
    world = env.unwrapped.world
    worst = 0.0
    for t, (a_m, a_t) in enumerate(zip(actions_mpe, actions_tensor)):
        _, rew, _, trunc, _ = env.step(a_m)
        _, r, _, tr = sc.step(a_t)
        pos, vel = _mpe2_state(world)
        s = sc.get_state()
        dp = np.abs(s["p_pos"][0].numpy() - pos).max()
        dv = np.abs(s["p_vel"][0].numpy() - vel).max()
        dr = np.abs(r[0].numpy() - np.array([rew[f"agent_{i}"] for i in range(3)])).max()
        assert dp < TOL and dv < TOL, f"step {t}: position diff {dp:.2e}, velocity diff {dv:.2e}"
        assert dr < TOL, f"step {t}: shared reward diff {dr:.2e}"
        assert bool(tr.all()) == all(trunc.values())
        worst = max(worst, dp, dv)
    return worst


def _spread_like_mpe2(env, **kw):
    sc = make_scenario("spread", 3, dtype=F64, shared_reward=True, **kw)  # shared = mpe2's reward
    sc.reset(seed=0)
    pos, vel = _mpe2_state(env.unwrapped.world)
    sc.set_state({"p_pos": torch.from_numpy(pos), "p_vel": torch.from_numpy(vel)})
    return sc


# ------------------------------------------------------------------------------------------------ fidelity
def test_spread_discrete_matches_mpe2_step_by_step():
    env = _mpe2_spread()
    sc = _spread_like_mpe2(env)
    acts = np.random.default_rng(0).integers(0, 5, size=(25, 3))
    worst = _run_side_by_side(
        env, sc, [{f"agent_{i}": int(a[i]) for i in range(3)} for a in acts], [torch.from_numpy(a)[None] for a in acts]
    )
    assert worst < 1e-12  # float64 on both sides: only summation order differs


def test_spread_continuous_matches_mpe2_with_the_exact_action_map():
    env = _mpe2_spread(continuous=True, seed=5)
    sc = make_scenario("spread", 3, dtype=F64, continuous=True, shared_reward=True)
    sc.reset(seed=0)
    pos, vel = _mpe2_state(env.unwrapped.world)
    sc.set_state({"p_pos": torch.from_numpy(pos), "p_vel": torch.from_numpy(vel)})
    acts = np.random.default_rng(1).random((25, 3, 5)).astype(np.float32)  # mpe2: Box(0, 1, (5,))
    ours = [
        torch.from_numpy(np.stack([a[:, 2] - a[:, 1], a[:, 4] - a[:, 3]], -1).astype(np.float64))[None] for a in acts
    ]
    _run_side_by_side(env, sc, [{f"agent_{i}": a[i] for i in range(3)} for a in acts], ours)


def test_spread_collision_heavy_start_matches_mpe2():
    env = _mpe2_spread(seed=7)
    world = env.unwrapped.world
    pos, _ = _mpe2_state(world)
    pos[1] = pos[0] + [0.05, 0.02]  # deep overlaps: radii sum to 0.3
    pos[2] = pos[0] + [-0.03, 0.10]
    for p, e in zip(pos, world.agents + world.landmarks):
        e.state.p_pos = p.copy()
    sc = _spread_like_mpe2(env)
    assert float(sc.metrics()["collisions"][0]) == 3
    acts = np.random.default_rng(2).integers(0, 5, size=(25, 3))
    _run_side_by_side(
        env, sc, [{f"agent_{i}": int(a[i]) for i in range(3)} for a in acts], [torch.from_numpy(a)[None] for a in acts]
    )


def test_physics_matches_mpe2_with_speed_limits_fixed_obstacles_and_a_heavy_movable_landmark():
    """simple_tag's world (accel 3/4, max_speed 1.0/1.3, colliding fixed obstacles) with one obstacle
    made movable and heavy: every branch of TensorWorld against mpe2's World.step."""
    from mpe2 import simple_tag_v3

    env = simple_tag_v3.parallel_env(num_good=1, num_adversaries=3, num_obstacles=2, max_cycles=25)
    env.reset(seed=11)
    world = env.unwrapped.world
    heavy = world.landmarks[0]
    heavy.movable, heavy.initial_mass = True, 3.0
    ents = world.agents + world.landmarks
    ents[1].state.p_pos = ents[0].state.p_pos + np.array([0.04, -0.05])  # overlapping predators
    heavy.state.p_pos = ents[2].state.p_pos + np.array([0.15, 0.1])  # pushed by a predator
    tw = TensorWorld(
        1,
        size=[e.size for e in ents],
        num_actors=4,
        mass=[e.mass for e in ents],
        movable=[e.movable for e in ents],
        collide=[e.collide for e in ents],
        accel=[e.accel if e.accel is not None else 5.0 for e in ents],
        max_speed=[e.max_speed if e.max_speed is not None else float("inf") for e in ents],
        dtype=F64,
    )
    pos, vel = _mpe2_state(world)
    tw.set_state(torch.from_numpy(pos), torch.from_numpy(vel))
    names = [a.name for a in world.agents]
    directions = torch.tensor(DISCRETE_DIRECTIONS, dtype=F64)
    rng = np.random.default_rng(3)
    capped = False
    for t in range(25):
        a = rng.integers(1, 5, size=4) if t < 15 else np.full(4, 2)  # keep pushing: reach max_speed
        env.step({n: int(a[i]) for i, n in enumerate(names)})
        tw.step(directions[torch.from_numpy(a)][None])
        pos, vel = _mpe2_state(world)
        assert np.abs(tw.p_pos[0].numpy() - pos).max() < TOL, f"step {t}"
        assert np.abs(tw.p_vel[0].numpy() - vel).max() < TOL, f"step {t}"
        capped |= bool(np.isclose(np.linalg.norm(vel[:4], axis=1), [1.0, 1.0, 1.0, 1.3]).any())
    assert capped, "the max_speed branch was not exercised"
    assert np.abs(tw.p_pos[0, 4].numpy() - ents[4].state.p_pos).max() < TOL


# ------------------------------------------------------------------------------------------------ API
@pytest.mark.parametrize(
    "name,continuous", [("spread", False), ("hetero", True), ("push", False), ("predator", False), ("predator", True)]
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised by pettingzoo.test's own imports
def test_parallel_api(name, continuous):
    from pettingzoo.test import parallel_api_test

    env = TensorMPEParallelEnv(name, 4, max_steps=10, continuous=continuous)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test only warns about missing keys: make those fail
        parallel_api_test(env, num_cycles=30)
    obs, _ = env.reset(seed=1)
    assert all(o.dtype == np.float32 and o.shape == (env.scenario.obs_dim,) for o in obs.values())
    space = env.action_space("agent_0")
    assert (space.n == 5) if not continuous else (space.shape == (2,) and space.low.min() == -1.0)


def test_parallel_env_truncates_every_agent_together_and_rejects_rendering():
    env = TensorMPEParallelEnv("spread", 3, max_steps=2)
    env.reset(seed=0)
    _, _, _, trunc, infos = env.step({a: 0 for a in env.agents})
    assert not any(trunc.values()) and "landmark_distance" in infos["agent_0"]
    _, _, _, trunc, _ = env.step({a: 0 for a in env.agents})
    assert all(trunc.values()) and env.agents == []
    with pytest.raises(ValueError, match="render"):
        TensorMPEParallelEnv("spread", 3, render_mode="human")


# ------------------------------------------------------------------------------------------------ batching
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_batched_equals_single_environments(name):
    b, n = 3, 6
    batched = make_scenario(name, n, num_envs=b, dtype=F64)
    batched.reset(seed=4)
    state = batched.get_state()
    singles = []
    for i in range(b):
        s = make_scenario(name, n, num_envs=1, dtype=F64)
        s.set_state({"p_pos": state["p_pos"][i : i + 1], "p_vel": state["p_vel"][i : i + 1]})
        singles.append(s)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        act = torch.randint(0, 5, (b, n), generator=gen)
        obs, rew, _, _ = batched.step(act)
        for i, s in enumerate(singles):
            o1, r1, _, _ = s.step(act[i : i + 1])
            torch.testing.assert_close(o1[0], obs[i], rtol=0, atol=1e-12)
            torch.testing.assert_close(r1[0], rew[i], rtol=0, atol=1e-12)
            for k, v in s.metrics().items():
                torch.testing.assert_close(v[0], batched.metrics()[k][i], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_seed_same_trajectory(name):
    def rollout(seed):
        sc = make_scenario(name, 5, num_envs=2, continuous=True)
        out = [sc.reset(seed=seed)]
        gen = torch.Generator().manual_seed(1)
        for _ in range(25):
            o, r, _, tr = sc.step(torch.rand(2, 5, 2, generator=gen) * 2 - 1)
            out += [o, r]
        assert bool(tr.all())
        return torch.cat([x.flatten() for x in out])

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_reset_without_seed_continues_the_stream_and_worlds_differ():
    sc = make_scenario("spread", 4, num_envs=2)
    first = sc.reset(seed=0)
    second = sc.reset()
    assert not torch.equal(first, second)
    assert not torch.equal(first[0], first[1])  # the B worlds are different draws
    assert torch.equal(make_scenario("spread", 4, num_envs=2).reset(seed=0), first)


# ------------------------------------------------------------------------------------------------ rewards
def _two_clusters() -> torch.Tensor:
    """Agents 0-5 on landmarks 0-5 around (-10, 0), agents 6-11 on landmarks 6-11 around (+10, 0);
    landmark 0 is the top one of its cluster."""
    shape = torch.tensor([[0.0, 1.5], [0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, -1.0], [1.0, -1.0]], dtype=F64)
    lm = torch.cat([shape - torch.tensor([10.0, 0.0], dtype=F64), shape + torch.tensor([10.0, 0.0], dtype=F64)])
    return torch.cat([lm + 0.05, lm])[None]


def test_spread_reward_is_local_and_shared_reward_is_mpe2s():
    sc = make_scenario("spread", 12, dtype=F64)
    sc.set_state({"p_pos": _two_clusters()})
    before = sc.reward()[0]
    pos = _two_clusters()
    pos[0, 0] = torch.tensor([-10.0, 40.0], dtype=F64)  # agent 0 leaves landmark 0, far from every landmark
    sc.set_state({"p_pos": pos})
    after = sc.reward()[0]
    changed = torch.nonzero(after != before).flatten().tolist()
    assert 0 in changed and set(changed) <= set(range(6))  # itself and its neighbours, never the far cluster
    assert (after[:6] <= before[:6]).all() and after[0] < before[0]

    shared = make_scenario("spread", 12, dtype=F64, shared_reward=True)
    shared.set_state({"p_pos": pos})
    d_star = torch.cdist(pos[0, 12:], pos[0, :12]).min(1).values.sum()
    torch.testing.assert_close(shared.reward()[0], torch.full((12,), -0.5 * float(d_star), dtype=F64))


def test_hetero_small_agent_hitting_a_big_one_pays_heavily():
    sc = make_scenario("hetero", 4, dtype=F64, num_landmarks=4)
    assert sc.agent_type.tolist() == [0, 0, 1, 1]
    pos = torch.tensor(
        [
            [0.0, 0.0],
            [5.0, 0.0],
            [0.1, 0.0],
            [-5.0, 0.0],  # agent 2 (small) overlaps agent 0 (big)
            [0.0, 0.0],
            [5.0, 0.0],
            [0.1, 0.0],
            [-5.0, 0.0],
        ],
        dtype=F64,
    )
    sc.set_state({"p_pos": pos[None]})
    free = pos.clone()
    free[2] = free[6] = torch.tensor([0.0, 3.0], dtype=F64)
    ref = make_scenario("hetero", 4, dtype=F64, num_landmarks=4)
    ref.set_state({"p_pos": free[None]})
    drop = ref.reward()[0] - sc.reward()[0]
    torch.testing.assert_close(drop[[0, 2]], torch.tensor([1.0, 10.0], dtype=F64), atol=1e-9, rtol=0)
    assert float(sc.metrics()["cross_collisions"][0]) == 1


def test_push_and_predator_rewards_depend_on_the_agent_not_on_far_agents():
    for name in ("push", "predator"):
        sc = make_scenario(name, 6, dtype=F64)
        sc.reset(seed=2)
        state = sc.get_state()
        before = sc.reward()[0]
        state["p_pos"][0, 5] += 30.0  # agent 5 goes far away
        sc.set_state(state)
        after = sc.reward()[0]
        assert torch.equal(after[:5], before[:5]), name
        assert after[5] < before[5], name


def test_predator_scripted_prey_flee_and_captures_pay_ten():
    sc = make_scenario("predator", 3, dtype=F64)
    assert (sc.options["num_prey"], sc.options["num_obstacles"], sc.options["world_radius"]) == (1, 2, 1.0)
    pos = torch.tensor([[0.0, 0.0], [0.5, 0.5], [-0.5, 0.5], [0.1, 0.0], [0.7, -0.7], [-0.7, -0.7]], dtype=F64)
    sc.set_state({"p_pos": pos[None]})
    assert float(sc.metrics()["captures"][0]) == 1  # predator 0 touches the prey (0.1 < 0.075 + 0.05)
    r = sc.reward()[0]
    torch.testing.assert_close(r[0], torch.tensor(10.0 - 0.01, dtype=F64))
    sc.step(torch.zeros(1, 3, dtype=torch.long))
    assert float(sc.get_state()["p_vel"][0, 3, 0]) > 0  # the prey moves away from predator 0


# ------------------------------------------------------------------------------------------------ shapes, errors
def test_observation_layout_and_zero_padding():
    sc = make_scenario("spread", 3, obs_agents=5, obs_landmarks=5)
    obs = sc.reset(seed=0)
    assert sc.obs_dim == 24 and obs.shape == (1, 3, 24)
    torch.testing.assert_close(obs[0, :, 2:4], sc.positions()[0])
    assert torch.count_nonzero(obs[0, :, 10:14]) == 0  # landmark slots 4-5 (only 3 landmarks)
    assert torch.count_nonzero(obs[0, :, 18:24]) == 0  # agent slots 3-5 (only 2 others)
    lm = obs[0, 0, 4:10].view(3, 2).norm(dim=-1)
    assert (lm[:-1] <= lm[1:]).all()  # nearest first
    dims = {name: make_scenario(name, 8).obs_dim for name in SCENARIOS}
    assert dims == {"spread": 24, "hetero": 44, "push": 30, "predator": 44}


def test_errors_are_clear():
    with pytest.raises(ValueError, match="unknown tensor MPE scenario 'nope'.*spread"):
        make_scenario("nope", 3)
    with pytest.raises(ValueError, match="unknown option 'num_landmark'.*num_landmarks"):
        make_scenario("spread", 3, num_landmark=3)
    with pytest.raises(ValueError, match="option 'shared_reward' expects bool"):
        make_scenario("push", 3, shared_reward=1)
    with pytest.raises(ValueError, match="at least 2 agents"):
        make_scenario("hetero", 1)
    sc = make_scenario("spread", 3, num_envs=2, max_steps=1)
    with pytest.raises(RuntimeError, match="reset"):
        sc.step(torch.zeros(2, 3, dtype=torch.long))
    sc.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        sc.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="0..4"):
        sc.step(torch.full((2, 3), 5))
    _, _, term, trunc = sc.step(torch.zeros(2, 3, dtype=torch.long))
    assert trunc.all() and not term.any()
    with pytest.raises(RuntimeError, match="reset"):
        sc.step(torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_like_on_cpu():
    for name in SCENARIOS:
        cpu = make_scenario(name, 6, num_envs=2, dtype=F64)
        gpu = make_scenario(name, 6, num_envs=2, dtype=F64, device="cuda")
        cpu.reset(seed=0)
        gpu.reset(seed=0)
        gpu.set_state(cpu.get_state())
        act = torch.randint(0, 5, (2, 6))
        o_c, r_c, _, _ = cpu.step(act)
        o_g, r_g, _, _ = gpu.step(act.cuda())
        torch.testing.assert_close(o_g.cpu(), o_c, atol=1e-9, rtol=0)
        torch.testing.assert_close(r_g.cpu(), r_c, atol=1e-9, rtol=0)


# ------------------------------------------------------------------------------------------------ scale
def test_large_float32_world_matches_a_dense_float64_reference():
    """At N = 200 the fast paths are on: the k-nearest selection of ipgnn.ops (float32, >= 2**15
    distances), the agents' geometry shared between observations, collisions and the next step's
    contact forces, and reused pair buffers. Observations and rewards must equal a from-scratch float64
    computation (argsort over every distance), and the trajectory a float64 world's."""
    n, b, k = 200, 2, 5
    fast = make_scenario("spread", n, num_envs=b)
    fast.reset(seed=5)
    ref = make_scenario("spread", n, num_envs=b, dtype=F64)
    ref.set_state({k_: v.double() for k_, v in fast.get_state().items() if k_ != "t"})
    gen = torch.Generator().manual_seed(2)
    for _ in range(8):
        act = torch.randint(0, 5, (b, n), generator=gen)
        obs, rew, _, _ = fast.step(act)
        ref.step(act)
        pos = ref.get_state()["p_pos"]
        agents, marks = pos[:, :n], pos[:, n:]
        torch.testing.assert_close(fast.get_state()["p_pos"].double(), pos, rtol=0, atol=1e-4)

        def nearest(points, exclude_self, agents=agents):  # this step's agents
            rel = points.unsqueeze(1) - agents.unsqueeze(2)  # [B, N, M, 2]
            d = rel.norm(dim=-1)
            if exclude_self:
                d = d + torch.diag(torch.full((n,), float("inf"), dtype=F64))
            idx = d.argsort(-1)[..., :k]
            return rel.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, 2)).flatten(2), d

        lm, d_lm = nearest(marks, False)
        ag, d_ag = nearest(agents, True)
        vel = ref.get_state()["p_vel"][:, :n]
        want = torch.cat([vel, agents, lm, ag], dim=-1)
        torch.testing.assert_close(obs.double(), want, rtol=0, atol=1e-4)
        d_star = d_lm.amin(1)  # [B, L]
        cover = d_star.gather(1, d_lm.argsort(-1)[..., :3].flatten(1)).view(b, n, 3).mean(-1)
        collisions = (d_ag < 0.3).sum(-1)
        torch.testing.assert_close(rew.double(), -cover - collisions, rtol=0, atol=1e-4)
        assert fast.metrics()["collisions"].tolist() == (collisions.sum(-1) / 2).tolist()


def test_state_kept_computations_follow_the_state():
    """The world keeps what it computed from a state (pair geometry, pairs in reach) and reuses buffers:
    an in-place edit of the positions, a first use under inference mode and gradients through the
    physics must all behave as without that cache."""
    w = TensorWorld(1, size=[0.15, 0.15], num_actors=2, dtype=F64)
    w.set_state(torch.tensor([[0.0, 0.0], [5.0, 0.0]], dtype=F64))
    assert w.forces(None).abs().max() == 0
    w.p_pos[0, 1] = torch.tensor([0.1, 0.0], dtype=F64)  # now overlapping: the kept geometry is stale
    f = w.forces(None)[0]
    assert f[0, 0] < -1 and f[1, 0] > 1 and torch.allclose(f[0], -f[1])

    sc = make_scenario("spread", 200, num_envs=2)
    with torch.inference_mode():
        sc.reset(seed=0)
        sc.step(torch.zeros(2, 200, dtype=torch.long))
    sc.reset(seed=0)  # buffers first made under inference mode are written outside it
    obs, _, _, _ = sc.step(torch.zeros(2, 200, dtype=torch.long))
    assert torch.isfinite(obs).all()

    p = torch.tensor([[[0.0, 0.0], [0.2, 0.0]]], dtype=F64, requires_grad=True)
    w.p_pos, w.p_vel = p, torch.zeros_like(p)
    w.forces(None)[0, 0, 0].backward()  # the contact force depends on the distance
    assert p.grad[0, 0, 0] < 0 and p.grad[0, 1, 0] > 0
