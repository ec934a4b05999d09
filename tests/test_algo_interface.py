"""The one algorithm interface (:class:`ipgnn.algos.base.Algorithm`): every registered algorithm implements it, its
state round-trips, and its target update is Polyak averaging by exactly ``algo.tau``."""

from __future__ import annotations

import io

import pytest
import torch
from torch_geometric.data import Batch

from ipgnn.algos import ALGOS, Algorithm, algo_class, make_algo
from ipgnn.config import AlgoConfig, ModelConfig
from ipgnn.replay import TransitionBatch
from ipgnn.spec import AgentSpec

SPEC = AgentSpec(obs_dim=4, action_dim=3, discrete=True)
N = 4


def build(name: str, seed: int = 0, **algo_kw) -> Algorithm:
    torch.manual_seed(seed)
    return make_algo(SPEC, ModelConfig(hidden=16), AlgoConfig(name=name, **algo_kw), N, batch_size=8)


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_every_registered_algorithm_implements_the_interface(name):
    cls = algo_class(name)
    assert issubclass(cls, Algorithm) and not cls.__abstractmethods__
    assert cls.NAME == name
    algo = build(name)
    assert isinstance(algo, Algorithm) and algo.target_pairs, "every algorithm has a target network"
    for flag in ("supports_discrete_actions", "supports_continuous_actions", "has_centralized_critic"):
        assert isinstance(getattr(cls, flag), bool)


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_state_dict_and_full_state_round_trip(name):
    a, b = build(name, seed=0), build(name, seed=1)
    a.num_updates, a.env_steps = 7, 12
    for opt in a.optimizers.values():  # optimiser state that is not the initial one
        for group in opt.param_groups:
            group["lr"] = 0.125
    buf = io.BytesIO()
    torch.save(a.full_state_dict(), buf)
    buf.seek(0)
    b.load_full_state_dict(torch.load(buf, weights_only=False))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (b.num_updates, b.env_steps) == (7, 12)
    assert {k: o.state_dict()["param_groups"] for k, o in a.optimizers.items()} == {
        k: o.state_dict()["param_groups"] for k, o in b.optimizers.items()
    }
    c = build(name, seed=2)
    c.load_state_dict(sa)  # the networks alone: nn.Module's state_dict
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in sa.items())


@pytest.mark.parametrize("name", sorted(ALGOS))
@pytest.mark.parametrize("tau", [0.25, 1.0])
def test_target_update_moves_every_target_by_exactly_tau(name, tau):
    algo = build(name, tau=tau)
    targets = {t for t, _ in algo.target_pairs}
    assert targets == {k for k, _ in algo.named_children() if k.endswith("_target")}
    before = {t: [p.clone() for p in getattr(algo, t).parameters()] for t in targets}
    with torch.no_grad():
        for _, online in algo.target_pairs:
            for p in getattr(algo, online).parameters():
                p.add_(torch.randn_like(p))
    algo.target_update()
    for t, online in algo.target_pairs:
        for b, p, tp in zip(before[t], getattr(algo, online).parameters(), getattr(algo, t).parameters()):
            assert not tp.requires_grad
            assert torch.equal(tp, torch.lerp(b, p, tau))  # theta_bar <- tau theta + (1 - tau) theta_bar
            assert torch.allclose(tp, tau * p + (1 - tau) * b, atol=1e-6)
            if tau < 1:
                assert not torch.equal(tp, b) and not torch.equal(tp, p)


def transitions(b: int = 3) -> TransitionBatch:
    """``b`` ring graphs of N agents, random observations, actions, rewards and terminations."""
    i = torch.arange(N)
    ring = torch.cat([torch.stack([(i + 1) % N, i]), torch.stack([(i - 1) % N, i])], 1)
    edges = torch.cat([ring + g * N for g in range(b)], 1)

    def graphs() -> Batch:
        x = torch.randn(b * N, SPEC.obs_dim)
        return Batch(x=x, edge_index=edges, batch=torch.arange(b).repeat_interleave(N), ptr=torch.arange(b + 1) * N)

    action = torch.randint(SPEC.action_dim, (b * N,))
    return TransitionBatch(graphs(), graphs(), action, torch.randn(b * N), (torch.rand(b * N) < 0.2).float())


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_update_steps_the_networks_and_the_targets_every_interval(name):
    algo = build(name, tau=0.5, target_update_interval=2)
    params = lambda names: [p.detach().clone() for n in names for p in getattr(algo, n).parameters()]  # noqa: E731
    online, targets = [o for _, o in algo.target_pairs], [t for t, _ in algo.target_pairs]
    online0, targets0 = params(online), params(targets)
    stats = algo.update(transitions())
    assert algo.num_updates == 1 and all(k in stats for k in algo.LOSSES if k != "alpha_loss")
    assert any(not torch.equal(a, b) for a, b in zip(online0, params(online))), "a gradient step changes the networks"
    assert all(torch.equal(a, b) for a, b in zip(targets0, params(targets))), "no target update before it is due"
    algo.update(transitions())
    for before, now, target in zip(targets0, params(online), params(targets)):
        assert torch.equal(target, torch.lerp(before, now, 0.5))
