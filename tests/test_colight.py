"""CoLight (ipgnn.algos.colight): its attention is a distribution over each intersection's neighbourhood and
itself and reads nobody else, its layer is the authors' formula, its TD target is r + gamma (1 - d) max Q_target(s')
computed by hand, its defaults are the authors' code's, bad options are refused up front, and the real CLI trains
it on a generated CityFlow grid.

The interface, resume, action-mask and every-task tests of the baselines include CoLight through their
parametrisation (tests/test_baselines.py, tests/test_algo_interface.py)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

from ipgnn.algos import make_algo
from ipgnn.algos.colight import KERAS_NORMAL_STD, CoLight, CoLightAttention, CoLightNetwork
from ipgnn.algos.dgn import with_self_loops
from ipgnn.config import AlgoConfig, ConfigError, ModelConfig, read_yaml
from ipgnn.replay import TransitionBatch
from ipgnn.spec import AgentSpec

from conftest import CONFIGS, clean_failure, tiny

N = 6
# agent 4 hears nobody (only itself); agent 2 hears only 3; 0 hears 1 and 2
EDGES = torch.tensor([[1, 2, 0, 3, 4, 5, 0], [0, 0, 1, 2, 3, 3, 5]])


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def neighbourhoods(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """``allowed[i, j]``: j is in i's neighbourhood (an edge j -> i) or j == i."""
    allowed = torch.eye(n, dtype=torch.bool)
    allowed[edge_index[1], edge_index[0]] = True
    return allowed


def dense(ei: torch.Tensor, alpha: torch.Tensor, n: int) -> torch.Tensor:
    """``out[i, j, m]`` = alpha of edge j -> i, head m (0 where there is no edge)."""
    out = torch.zeros(n, n, alpha.size(1))
    out[ei[1], ei[0]] = alpha
    return out


def build(**options) -> CoLight:
    spec = AgentSpec(obs_dim=5, action_dim=3, discrete=True)
    return make_algo(spec, ModelConfig(hidden=16), AlgoConfig(name="colight", lr=1e-3, options=options), 3, 8)


# --------------------------------------------------------------------------------------------------
# Attention


@pytest.mark.parametrize("heads", [1, 3])
def test_attention_is_a_distribution_over_the_neighbourhood_and_the_intersection_itself(heads):
    torch.manual_seed(0)
    conv = CoLightAttention(16, head_dim=8, heads=heads, out_channels=16)
    ei = with_self_loops(EDGES, N)
    _, alpha = conv(torch.randn(N, 16) * 3, ei, return_attention_weights=True)
    att = dense(ei, alpha, N)
    allowed = neighbourhoods(EDGES, N)
    assert alpha.shape == (ei.size(1), heads)
    assert (att[~allowed] == 0).all() and (att[allowed] > 0).all()
    torch.testing.assert_close(att.sum(1), torch.ones(N, heads))  # one distribution per intersection and head
    torch.testing.assert_close(att[4, 4], torch.ones(heads))  # nobody to hear: all weight on itself


@pytest.mark.parametrize("heads", [1, 3])
def test_an_intersection_reads_its_neighbourhood_and_nobody_else(heads):
    torch.manual_seed(0)
    conv = CoLightAttention(16, head_dim=8, heads=heads, out_channels=16)
    ei = with_self_loops(EDGES, N)
    h = torch.randn(N, 16)
    allowed = neighbourhoods(EDGES, N)
    jac = torch.autograd.functional.jacobian(lambda z: conv(z, ei), h)  # [N, 16, N, 16]
    assert torch.equal(jac.abs().sum((1, 3)) > 0, allowed)  # self loop included
    out = conv(h, ei)
    for j in range(N):  # perturb one intersection: only those whose neighbourhood holds it change
        h2 = h.clone()
        h2[j] += 5 * torch.randn(16)
        changed = (conv(h2, ei) - out).abs().sum(1) > 1e-6
        assert torch.equal(changed, allowed[:, j]), j
    # the whole network (embedding, one attention layer, Q head): Q_i reads o_j only for j in i's neighbourhood
    net = CoLightNetwork(5, 3, hidden=16, heads=heads, head_dim=8)
    jac = torch.autograd.functional.jacobian(lambda x: net(x, EDGES)[0], torch.randn(N, 5))  # [N, 3, N, 5]
    assert torch.equal(jac.abs().sum((1, 3)) > 0, allowed)


def test_the_layer_is_the_authors_formula():
    """An independent dense computation of CoLight_agent.py's MultiHeadsAttModel: ReLU query / key / value
    projections with bias, unscaled dot products, softmax over the neighbourhood and the intersection itself,
    the heads averaged, one dense layer with ReLU."""
    torch.manual_seed(1)
    heads, dv = 3, 4
    conv = CoLightAttention(6, head_dim=dv, heads=heads, out_channels=5)
    h = torch.randn(N, 6)
    allowed = neighbourhoods(EDGES, N)
    q = F.relu(conv.lin_query(h)).view(N, heads, dv)
    k = F.relu(conv.lin_key(h)).view(N, heads, dv)
    v = F.relu(conv.lin_value(h)).view(N, heads, dv)
    scores = torch.einsum("imc,jmc->ijm", q, k)  # [i, j, m]
    att = scores.masked_fill(~allowed.unsqueeze(-1), float("-inf")).softmax(1)
    mixed = torch.einsum("ijm,jmc->imc", att, v).mean(1)  # [N, dv]
    expected = F.relu(conv.lin_out(mixed))
    out, alpha = conv(h, with_self_loops(EDGES, N), return_attention_weights=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(dense(with_self_loops(EDGES, N), alpha, N), att)


# --------------------------------------------------------------------------------------------------
# TD target


class FeatureQ(torch.nn.Module):
    """A stand-in target network: Q(o_i, a) = o_i[a] (so the target's value is readable from the features)."""

    def forward(self, x, edge_index=None, agent_type=None):
        return x[:, :3], with_self_loops(edge_index, x.size(0)), []


def _graph(x, mask):
    ring = torch.tensor([[1, 2, 0], [0, 1, 2]])
    return Batch(
        x=x, edge_index=ring, batch=torch.zeros(3, dtype=torch.long), ptr=torch.tensor([0, 3]), action_mask=mask
    )


def test_td_target_is_reward_plus_discounted_best_valid_next_value_of_the_target_network():
    algo = build()
    algo.cfg.gamma = 0.9
    algo.q_target = FeatureQ()
    s = torch.tensor([[5.0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [-2, -4, -3, 0, 0]])
    s2 = torch.tensor([[1.0, 3, 2, 0, 0], [2, -1, 0, 0, 0], [0, 0.5, -1, 0, 0]])
    m = torch.ones(3, 3, dtype=torch.bool)
    m2 = torch.tensor([[True, False, True], [True, True, True], [True, True, False]])  # s': agent 0 may not take a=1
    reward, done = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.0])
    batch = TransitionBatch(_graph(s, m), _graph(s2, m2), torch.tensor([0, 1, 2]), reward, done)
    # by hand: max over valid a' of s'[i, a'] = 2 (not the masked 3), 2 (terminated: unused), 0.5
    expected = torch.tensor([1 + 0.9 * 2, -1.0, 0.5 + 0.9 * 0.5])
    torch.testing.assert_close(algo.target(batch), expected)
    torch.testing.assert_close(algo.losses(batch)["q_target"], expected.mean())
    # the same computation on s (features and mask) gives other values: a target fed s fails the line above
    wrong = torch.tensor([1 + 0.9 * 5, -1.0, 0.5 + 0.9 * -2])
    assert not torch.allclose(wrong, expected)
    swapped = TransitionBatch(_graph(s2, m2), _graph(s, m), torch.tensor([0, 1, 2]), reward, done)
    torch.testing.assert_close(algo.target(swapped), wrong)


def test_the_loss_regresses_the_taken_actions_q_value_on_the_detached_target():
    torch.manual_seed(0)
    algo = build()
    x, x2 = torch.randn(3, 5), torch.randn(3, 5)
    ring = torch.tensor([[1, 2, 0], [0, 1, 2]])
    graph = lambda z: Batch(x=z, edge_index=ring, batch=torch.zeros(3, dtype=torch.long), ptr=torch.tensor([0, 3]))  # noqa: E731
    batch = TransitionBatch(graph(x), graph(x2), torch.tensor([2, 0, 1]), torch.randn(3), torch.zeros(3))
    terms = algo.losses(batch)
    with torch.no_grad():
        y = batch.reward + algo.cfg.gamma * algo.q_target(x2, ring)[0].max(-1).values
    q_sa = algo.q(x, ring)[0][torch.arange(3), torch.tensor([2, 0, 1])]
    torch.testing.assert_close(terms["q_loss"], (q_sa - y).pow(2).mean())
    terms["q_loss"].backward()
    assert all(p.grad is None for p in algo.q_target.parameters())
    assert all(p.grad is not None for p in algo.q.parameters())


# --------------------------------------------------------------------------------------------------
# The authors' settings


def test_defaults_are_the_authors_code_and_the_method_file():
    preset = read_yaml(CONFIGS / "algos" / "colight.yaml")["algo"]["options"]
    assert preset == {k: default for k, (_, default) in CoLight.OPTIONS.items()}
    torch.manual_seed(0)
    spec = AgentSpec(obs_dim=400, action_dim=4, discrete=True)
    algo = make_algo(spec, ModelConfig(hidden=128), AlgoConfig(name="colight", lr=1e-3), 16, 8)
    net = algo.q
    # MLP_layers [32, 32]; CNN_layers [[32, 32]] with one head; a linear Q head
    assert net.encoder.lins[0].out_features == 32 and [m.out_features for m in net.embed] == [32]
    (conv,) = net.convs
    assert (conv.heads, conv.head_dim, conv.lin_out.out_features) == (1, 32, 32)
    assert (net.head.in_features, net.head.out_features) == (32, 4)
    # Keras' random_normal kernels (std 0.05), zero biases
    w = net.encoder.lins[0].weight
    assert abs(w.std().item() - KERAS_NORMAL_STD) < 0.005 and abs(w.mean().item()) < 0.005
    assert all((m.bias == 0).all() for m in net.modules() if isinstance(m, torch.nn.Linear))
    # Keras' RMSprop at algo.lr
    (opt,) = algo.optimizers.values()
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.RMSprop) and (group["lr"], group["alpha"], group["eps"]) == (1e-3, 0.9, 1e-7)
    # epsilon 0.8 -> 0.2, reaching the floor after 27 % of the run (0.8 * 0.95^r hits 0.2 at r = 27 of 100)
    algo.schedule_scale = 0.01  # a run of 10^4 steps
    assert algo.epsilon_decay_steps == 2700
    for steps, eps in ((0, 0.8), (1350, 0.5), (2700, 0.2), (9000, 0.2)):
        algo.env_steps = steps
        assert algo.epsilon == pytest.approx(eps)
    # the options that depart from the code: PyTorch's initialisation, Adam, model.hidden
    other = make_algo(
        spec,
        ModelConfig(hidden=64),
        AlgoConfig(name="colight", options={"init": "default", "optimizer": "adam", "hidden": None, "heads": 4}),
        16,
        8,
    )
    assert isinstance(other.optimizers["q"], torch.optim.Adam) and other.q.head.in_features == 64
    assert other.q.convs[0].heads == 4 and other.q.head.bias.abs().sum() > 0


@pytest.mark.parametrize(
    "options,message",
    [
        ({"heads": 0}, r"algo.options.heads: expected a positive number for 'colight', got 0"),
        ({"layers": -1}, r"algo.options.layers: expected a positive number for 'colight', got -1"),
        ({"optimizer": "sgd"}, r"algo.options.optimizer: expected rmsprop_keras or adam for 'colight', got 'sgd'"),
        ({"init": "xavier"}, r"algo.options.init: expected random_normal or default for 'colight', got 'xavier'"),
        ({"hidden": "wide"}, r"algo.options.hidden"),
        ({"epsilon_end": 1.5}, r"algo.options.epsilon_end: expected a value in \[0, 1\] for 'colight'"),
        ({"neighbours": 5}, r"algo.options.neighbours: unknown option for 'colight'"),
    ],
    ids=[
        "heads-zero",
        "layers-negative",
        "optimizer-unknown",
        "init-unknown",
        "hidden-text",
        "epsilon-above-1",
        "unknown",
    ],
)
def test_bad_options_are_refused_before_anything_is_built(options, message):
    with pytest.raises(ConfigError, match=message):
        build(**options)


def test_continuous_actions_are_refused_with_what_to_use_instead():
    spec = AgentSpec(obs_dim=5, action_dim=2, discrete=False)
    with pytest.raises(ConfigError, match=r"'colight' is a Q-learning method.*continuous.*maddpg"):
        make_algo(spec, ModelConfig(), AlgoConfig(name="colight"), 4, 8)


# --------------------------------------------------------------------------------------------------
# The real CLI on a generated CityFlow (or SUMO) grid


GRID = "--env.options.scenario={kind: grid, rows: 2, cols: 2, rate: 300, seed: 0}"


def _train(tmp_path, *extra):
    from ipgnn.cli import train_main

    argv = ["--config", str(CONFIGS / "hangzhou16.yaml"), "--algo.name=colight", GRID, "--env.num_agents=4"]
    argv += ["--env.max_steps=25", "--train.total_steps=100", "--train.eval_episodes=1", *tiny(tmp_path)]
    return train_main([*argv, f"--run-dir={tmp_path / 'run'}", *extra])


def test_cli_trains_colight_on_a_small_traffic_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path / "cache"))
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "losses/q_loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(r["losses/q_loss"])) for r in losses)
    assert losses[0]["losses/epsilon"] == 0.8 > losses[-1]["losses/epsilon"]  # decays from CoLight's 0.8
    assert "losses/attention_entropy" in losses[0]
    assert any("eval/average_travel_time" in r for r in rows)
    assert read_yaml(run / "config.yaml")["algo"]["options"]["optimizer"] == "rmsprop_keras"
    assert (run / "checkpoints" / "latest.pt").is_file()


def test_cli_refuses_a_bad_colight_option_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path / "cache"))
    rc = _train(tmp_path, "--algo.options.optimizer=sgd")
    err = clean_failure(rc, capsys, "algo.options.optimizer", 2)
    assert "rmsprop_keras" in err
    # no checkpoint, no metrics. (The trainer writes run/config.yaml before the algorithm's check, for every
    # algorithm: Trainer.from_config, outside this test's subject.)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
