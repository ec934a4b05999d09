import pytest
import torch
from torch_geometric.data import Batch, Data

from ipgnn.config import EnvConfig, GraphConfig
from ipgnn.envs import make_env
from ipgnn.replay import GraphReplayBuffer


def fill(env, buffer, steps, seed=0):
    torch.manual_seed(seed)
    stored = []
    obs = env.reset(seed=seed)
    for _ in range(steps):
        action = env.random_action(obs)
        res = env.step(action)
        buffer.add(obs, action, res.reward, res.terminated, res.obs)
        stored.append((obs, action, res.reward, res.terminated, res.obs))
        obs = env.reset() if res.done else res.obs
    return stored


@pytest.mark.parametrize("continuous", [False, True])
def test_round_trip_of_changing_knn_graphs(continuous):
    env = make_env(
        EnvConfig(num_agents=5, continuous_actions=continuous, graph=GraphConfig(kind="knn", k=2, symmetric=True))
    )
    buf = GraphReplayBuffer(100, 5, env.spec.obs_dim, env.spec.action_dim, env.spec.discrete, env.graph.max_edges)
    stored = fill(env, buf, 40)
    sizes = {s[0].edge_index.size(1) for s in stored}
    assert len(sizes) > 1, "symmetrised k-NN over moving agents should change the edge count"
    idx = torch.tensor([3, 0, 17, 39, 17])
    got = buf.gather(idx)
    ref = Batch.from_data_list([stored[i][0] for i in idx])
    ref_next = Batch.from_data_list([stored[i][4] for i in idx])
    assert torch.equal(got.obs.x, ref.x) and torch.equal(got.next_obs.x, ref_next.x)
    assert torch.equal(got.obs.edge_index, ref.edge_index)
    assert torch.equal(got.next_obs.edge_index, ref_next.edge_index)
    assert torch.equal(got.obs.batch, ref.batch) and torch.equal(got.obs.ptr, ref.ptr)
    assert got.obs.num_graphs == 5
    assert torch.allclose(got.action.float(), torch.cat([stored[i][1] for i in idx]).float())
    assert torch.equal(got.reward, torch.cat([stored[i][2] for i in idx]))
    assert torch.equal(got.terminated, torch.cat([stored[i][3] for i in idx]).float())


def test_static_graph_stored_once():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    dyn = GraphReplayBuffer(10, 3, 4, 2, True, max_edges=4)
    sta = GraphReplayBuffer(10, 3, 4, 2, True, max_edges=4, static_edges=ei)
    assert sta.bytes_per_transition < dyn.bytes_per_transition
    d = Data(x=torch.randn(3, 4), edge_index=ei)
    for _ in range(3):
        sta.add(d, torch.tensor([0, 1, 0]), torch.zeros(3), torch.zeros(3, dtype=torch.bool), d)
    b = sta.gather(torch.tensor([0, 2]))
    assert torch.equal(b.obs.edge_index, Batch.from_data_list([d, d]).edge_index)


def test_bytes_estimate_matches_allocation():
    args = (50, 7, 11, 5, True, 14)
    buf = GraphReplayBuffer(*args, has_action_mask=True)
    assert GraphReplayBuffer.bytes_for(*args, static_graph=False, has_action_mask=True) == buf.nbytes
    cont = GraphReplayBuffer(50, 7, 11, 3, False, 14)
    assert GraphReplayBuffer.bytes_for(50, 7, 11, 3, False, 14, False, False) == cont.nbytes


def test_ring_wraps_and_state_dict_restores_sampling():
    env = make_env(EnvConfig(num_agents=3))
    buf = GraphReplayBuffer(16, 3, env.spec.obs_dim, env.spec.action_dim, True, env.graph.max_edges, seed=5)
    fill(env, buf, 40)
    assert len(buf) == 16 and buf.pos == 40 % 16
    state = buf.state_dict()
    clone = GraphReplayBuffer(16, 3, env.spec.obs_dim, env.spec.action_dim, True, env.graph.max_edges, seed=99)
    clone.load_state_dict(state)
    a, b = buf.sample(8), clone.sample(8)
    assert torch.equal(a.obs.x, b.obs.x) and torch.equal(a.obs.edge_index, b.obs.edge_index)


def test_action_masks_and_agent_types_come_back():
    buf = GraphReplayBuffer(4, 2, 3, 3, True, 2, has_action_mask=True, agent_type=torch.tensor([0, 1]))
    d = Data(
        x=torch.randn(2, 3),
        edge_index=torch.tensor([[0, 1], [1, 0]]),
        action_mask=torch.tensor([[True, False, True], [False, True, True]]),
    )
    buf.add(d, torch.tensor([0, 1]), torch.zeros(2), torch.zeros(2, dtype=torch.bool), d)
    b = buf.sample(3)
    assert torch.equal(b.obs.action_mask, d.action_mask.repeat(3, 1))
    assert b.obs.agent_type.tolist() == [0, 1] * 3


def test_too_many_edges_is_an_error():
    buf = GraphReplayBuffer(4, 3, 2, 2, True, max_edges=2)
    d = Data(x=torch.zeros(3, 2), edge_index=torch.tensor([[0, 1, 2], [1, 2, 0]]))
    with pytest.raises(ValueError, match="max_edges"):
        buf.add(d, torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.bool), d)


def test_empty_buffer_sample_is_an_error():
    with pytest.raises(RuntimeError, match="empty"):
        GraphReplayBuffer(4, 3, 2, 2, True, 2).sample(2)


def test_masks_appearing_after_allocation_are_an_error():
    buf = GraphReplayBuffer(4, 2, 3, 3, True, 2)
    d = Data(
        x=torch.randn(2, 3), edge_index=torch.tensor([[0, 1], [1, 0]]), action_mask=torch.ones(2, 3, dtype=torch.bool)
    )
    with pytest.raises(ValueError, match="action masks"):
        buf.add(d, torch.tensor([0, 1]), torch.zeros(2), torch.zeros(2, dtype=torch.bool), d)


def test_saved_buffer_holds_only_the_filled_part(tmp_path):
    """torch.save of a view writes its whole storage: the state must not drag the empty capacity along."""
    from ipgnn import checkpoint

    env = make_env(EnvConfig(num_agents=3))
    buf = GraphReplayBuffer(20_000, 3, env.spec.obs_dim, env.spec.action_dim, True, env.graph.max_edges)
    fill(env, buf, 10)
    path = checkpoint.save(buf.state_dict(), tmp_path / "replay.pt")
    assert path.stat().st_size < 50 * buf.bytes_per_transition + 100_000


def test_loading_into_a_larger_buffer_never_samples_unwritten_slots():
    env = make_env(EnvConfig(num_agents=3))
    args = (3, env.spec.obs_dim, env.spec.action_dim, True, env.graph.max_edges)
    small = GraphReplayBuffer(10, *args)
    stored = fill(env, small, 25)  # wrapped: slot 0 holds transition 20
    big = GraphReplayBuffer(30, *args)
    big.load_state_dict(small.state_dict())
    assert len(big) == 10 and big.pos == 10
    expected = torch.stack([stored[t][0].x for t in range(15, 25)])  # the 10 newest, oldest first
    expected_next = torch.stack([stored[t][4].x for t in range(15, 25)])
    got = big.gather(torch.arange(10))
    assert torch.equal(got.obs.x.view(10, 3, -1), expected)
    assert torch.equal(got.next_obs.x.view(10, 3, -1), expected_next)
    smaller = GraphReplayBuffer(4, *args)
    smaller.load_state_dict(small.state_dict())
    assert len(smaller) == 4 and torch.equal(smaller.gather(torch.arange(4)).obs.x.view(4, 3, -1), expected[-4:])
    # the layouts sample only what was stored
    for buf in (big, smaller):
        batch = buf.sample(64)
        xs = batch.obs.x.view(64, 3, -1)
        assert all(any(torch.equal(x, e) for e in expected) for x in xs)


def test_observations_are_stored_once_per_step():
    """Within an episode s' of one step is s of the next: one frame per step, plus one per episode."""
    env = make_env(EnvConfig(num_agents=3, max_steps=10))
    buf = GraphReplayBuffer(100, 3, env.spec.obs_dim, env.spec.action_dim, True, env.graph.max_edges, episode_length=10)
    stored = fill(env, buf, 30)  # three episodes
    assert buf.frames_written == 30 + 3
    assert (
        buf.nbytes
        < GraphReplayBuffer.bytes_for(
            100, 3, env.spec.obs_dim, env.spec.action_dim, True, env.graph.max_edges, False, False
        )
        * 2
        / 3
        + 1
    )
    got = buf.gather(torch.arange(30))
    assert torch.equal(got.next_obs.x.view(30, 3, -1), torch.stack([s[4].x for s in stored]))
    assert torch.equal(got.obs.x.view(30, 3, -1), torch.stack([s[0].x for s in stored]))


def test_shorter_episodes_evict_by_frames_and_never_sample_overwritten_frames():
    """Frames sized for 10-step episodes; with 2-step episodes fewer transitions fit, the oldest go."""
    env = make_env(EnvConfig(num_agents=3, max_steps=2))
    buf = GraphReplayBuffer(20, 3, env.spec.obs_dim, env.spec.action_dim, True, env.graph.max_edges, episode_length=10)
    stored = fill(env, buf, 60)
    assert 0 < len(buf) < 20 and buf.frames_written == 60 + 30
    held = range(60 - len(buf), 60)
    got = buf.gather(torch.arange(buf.start, buf.added) % buf.capacity)
    assert torch.equal(got.obs.x.view(len(buf), 3, -1), torch.stack([stored[t][0].x for t in held]))
    assert torch.equal(got.next_obs.x.view(len(buf), 3, -1), torch.stack([stored[t][4].x for t in held]))


def test_integer_observations_stored_exactly_as_int16():
    buf = GraphReplayBuffer(8, 2, 3, 2, True, 2, obs_dtype=torch.int16)
    ei = torch.tensor([[0, 1], [1, 0]])
    d = Data(x=torch.tensor([[0.0, 3.0, 120.0], [1.0, 0.0, -7.0]]), edge_index=ei)
    buf.add(d, torch.tensor([0, 1]), torch.zeros(2), torch.zeros(2, dtype=torch.bool), d)
    assert buf.x.dtype == torch.int16 and torch.equal(buf.sample(1).obs.x, d.x)
    bad = Data(x=torch.tensor([[0.5, 3.0, 1.0], [1.0, 0.0, 2.0]]), edge_index=ei)
    with pytest.raises(ValueError, match="not an integer"):
        buf.add(bad, torch.tensor([0, 1]), torch.zeros(2), torch.zeros(2, dtype=torch.bool), bad)
