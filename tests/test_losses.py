"""Each IP-SAC loss against a hand computation on a 2-agent graph, with stub networks whose outputs
are known in closed form (so the test checks the loss algebra, not the networks)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch

from ipgnn.algos.ipsac import IPSAC, AgentSpec, soft_q_target
from ipgnn.config import AlgoConfig, ConfigError, ModelConfig
from ipgnn.nn.distributions import MaskedCategorical, TanhGaussian
from ipgnn.nn.propagation import PolicyOutput
from ipgnn.replay import TransitionBatch

ALPHA, GAMMA = 0.2, 0.9
EI = torch.tensor([[0, 1], [1, 0]])  # 0 -> 1 and 1 -> 0


class StubPolicy(nn.Module):
    def __init__(self, out, discrete):
        super().__init__()
        self.out = nn.Parameter(out.clone())
        self.discrete = discrete

    def forward(self, data, **kw):
        if self.discrete:
            return PolicyOutput(MaskedCategorical(self.out, getattr(data, "action_mask", None)))
        return PolicyOutput(TanhGaussian(self.out[:, :1], self.out[:, 1:]))


class StubQ(nn.Module):
    """Q^k_i(a) = base_k[i] (+ c_k * a_i, continuous) + sum_{j -> i} w . edge_attr_j"""

    def __init__(self, base, w, c=None):
        super().__init__()
        self.base = nn.Parameter(base.clone())  # [2, N, A] or [2, N]
        self.w = w
        self.c = c

    def forward(self, x, edge_index, edge_attr=None, own_action=None, agent_type=None, neighbour_action=None):
        if neighbour_action is not None:  # edge j -> i carries a_j
            edge_attr = neighbour_action[edge_index[0]]
        nbr = torch.zeros(x.size(0)).index_add(0, edge_index[1], edge_attr @ self.w)
        if own_action is None:
            return self.base + nbr.view(1, -1, 1)
        return self.base + self.c.view(2, 1) * own_action.squeeze(-1).unsqueeze(0) + nbr.unsqueeze(0)

    def encode(self, x, edge_index, agent_type=None):  # the state terms of TwinGraphQ: here the state itself
        return x

    def from_state(self, x, edge_index, **actions):
        return self(x, edge_index, **actions)


class StubV(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = nn.Parameter(values.clone())

    def forward(self, x, edge_index, agent_type=None):
        return self.values


def make(discrete, mode="probs", autotune=False):
    spec = AgentSpec(obs_dim=1, action_dim=2 if discrete else 1, discrete=discrete)
    algo = IPSAC(
        spec,
        ModelConfig(hidden=4),
        AlgoConfig(
            alpha=ALPHA, gamma=GAMMA, discrete_neighbour_actions=mode, autotune_alpha=autotune, target_entropy=-0.3
        ),
    )
    if discrete:
        algo.policy = StubPolicy(torch.tensor([[0.5, -0.5], [0.0, 1.0]]), True)
        algo.q = StubQ(torch.tensor([[[1.0, 2.0], [0.5, -1.0]], [[1.5, 1.0], [0.0, 0.0]]]), torch.tensor([0.3, -0.7]))
    else:
        algo.policy = StubPolicy(torch.tensor([[0.2, -0.5], [-0.4, -1.0]]), False)
        algo.q = StubQ(torch.tensor([[1.0, 0.5], [0.8, 0.9]]), torch.tensor([0.6]), c=torch.tensor([2.0, -1.0]))
    algo.v = StubV(torch.tensor([0.4, -0.2]))
    algo.v_target = StubV(torch.tensor([1.0, 3.0])).requires_grad_(False)
    return algo


def batch(discrete):
    obs = Batch(x=torch.zeros(2, 1), edge_index=EI, batch=torch.zeros(2, dtype=torch.long), ptr=torch.tensor([0, 2]))
    nxt = Batch(x=torch.ones(2, 1), edge_index=EI, batch=torch.zeros(2, dtype=torch.long), ptr=torch.tensor([0, 2]))
    action = torch.tensor([1, 0]) if discrete else torch.tensor([[0.5], [-0.25]])
    return TransitionBatch(obs, nxt, action, reward=torch.tensor([1.0, -2.0]), terminated=torch.tensor([0.0, 1.0]))


def softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_discrete_losses_by_hand():
    algo = make(True, "probs")
    out = algo.losses(batch(True))
    p = [softmax([0.5, -0.5]), softmax([0.0, 1.0])]
    w = [0.3, -0.7]
    base = [[[1.0, 2.0], [0.5, -1.0]], [[1.5, 1.0], [0.0, 0.0]]]
    nbr = [1, 0]  # the one neighbour of each agent
    # mean-field edge feature: the neighbour's probabilities
    q_pi = [
        [[base[k][i][a] + sum(w[b] * p[nbr[i]][b] for b in range(2)) for a in range(2)] for i in range(2)]
        for k in range(2)
    ]
    qmin = [[min(q_pi[0][i][a], q_pi[1][i][a]) for a in range(2)] for i in range(2)]
    policy = sum(sum(p[i][a] * (ALPHA * math.log(p[i][a]) - qmin[i][a]) for a in range(2)) for i in range(2)) / 2
    v_tgt = [sum(p[i][a] * (qmin[i][a] - ALPHA * math.log(p[i][a])) for a in range(2)) for i in range(2)]
    value = sum(0.5 * (v - t) ** 2 for v, t in zip([0.4, -0.2], v_tgt)) / 2
    # critics on the stored joint action a = (1, 0): edge features are one-hot stored actions
    a, r, d, vbar = [1, 0], [1.0, -2.0], [0.0, 1.0], [1.0, 3.0]
    q_hat = [r[i] + GAMMA * (1 - d[i]) * vbar[i] for i in range(2)]
    onehot = [[0.0, 1.0], [1.0, 0.0]]
    q_data = [[base[k][i][a[i]] + sum(w[b] * onehot[nbr[i]][b] for b in range(2)) for i in range(2)] for k in range(2)]
    q = sum(sum(0.5 * (q_data[k][i] - q_hat[i]) ** 2 for i in range(2)) / 2 for k in range(2))
    assert out["policy_loss"].item() == pytest.approx(policy, rel=1e-5)
    assert out["value_loss"].item() == pytest.approx(value, rel=1e-5)
    assert out["q_loss"].item() == pytest.approx(q, rel=1e-5)
    assert out["q_target"].item() == pytest.approx(sum(q_hat) / 2)


def test_continuous_losses_by_hand():
    algo = make(False)
    torch.manual_seed(7)
    eps = torch.randn(2, 1)
    torch.manual_seed(7)
    out = algo.losses(batch(False))
    mean, log_std = [0.2, -0.4], [-0.5, -1.0]
    u = [mean[i] + math.exp(log_std[i]) * eps[i, 0].item() for i in range(2)]
    a = [math.tanh(v) for v in u]
    logp = [
        -0.5 * ((u[i] - mean[i]) / math.exp(log_std[i])) ** 2
        - log_std[i]
        - 0.5 * math.log(2 * math.pi)
        - math.log(1 - a[i] ** 2)
        for i in range(2)
    ]
    base, c, w, nbr = [[1.0, 0.5], [0.8, 0.9]], [2.0, -1.0], 0.6, [1, 0]
    q_pi = [[base[k][i] + c[k] * a[i] + w * a[nbr[i]] for i in range(2)] for k in range(2)]
    qmin = [min(q_pi[0][i], q_pi[1][i]) for i in range(2)]
    policy = sum(ALPHA * logp[i] - qmin[i] for i in range(2)) / 2
    v_tgt = [qmin[i] - ALPHA * logp[i] for i in range(2)]
    value = sum(0.5 * (v - t) ** 2 for v, t in zip([0.4, -0.2], v_tgt)) / 2
    act = [0.5, -0.25]
    q_hat = [1.0 + GAMMA * 1.0, -2.0]
    q_data = [[base[k][i] + c[k] * act[i] + w * act[nbr[i]] for i in range(2)] for k in range(2)]
    q = sum(sum(0.5 * (q_data[k][i] - q_hat[i]) ** 2 for i in range(2)) / 2 for k in range(2))
    assert out["policy_loss"].item() == pytest.approx(policy, rel=1e-4)
    assert out["value_loss"].item() == pytest.approx(value, rel=1e-4)
    assert out["q_loss"].item() == pytest.approx(q, rel=1e-5)


def test_alpha_loss_by_hand():
    algo = make(True, "probs", autotune=True)
    out = algo.losses(batch(True))
    p = [softmax([0.5, -0.5]), softmax([0.0, 1.0])]
    mean_logp = [sum(pi * math.log(pi) for pi in p[i]) for i in range(2)]
    expected = sum(-math.log(ALPHA) * (mean_logp[i] + (-0.3)) for i in range(2)) / 2
    assert out["alpha_loss"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["probs", "gumbel"])
def test_policy_gradient_reaches_neighbours_through_edge_features(mode):
    """d J(theta) / d logits_1 must include agent 1's effect on its neighbour's Q_0 (edge j -> i)."""
    grads = {}
    for w in (0.0, 5.0):
        algo = make(True, mode)
        algo.q.w = torch.tensor([w, -w])
        torch.manual_seed(3)
        algo.losses(batch(True))["policy_loss"].backward()
        grads[w] = algo.policy.out.grad.clone()
    assert not torch.allclose(grads[0.0], grads[5.0])


def test_losses_touch_only_their_own_parameters():
    algo = make(True, "gumbel")
    out = algo.losses(batch(True))
    out["policy_loss"].backward(retain_graph=True)
    assert algo.q.base.grad is None and algo.v.values.grad is None and algo.policy.out.grad is not None
    algo.policy.out.grad = None
    out["value_loss"].backward(retain_graph=True)
    assert algo.policy.out.grad is None and algo.q.base.grad is None and algo.v.values.grad is not None
    out["q_loss"].backward()
    assert algo.policy.out.grad is None and algo.q.base.grad is not None


def test_termination_stops_bootstrap_truncation_does_not():
    r, v = torch.tensor([1.0, 1.0]), torch.tensor([10.0, 10.0])
    assert soft_q_target(r, torch.tensor([1.0, 0.0]), v, 0.5).tolist() == [1.0, 6.0]


def test_polyak_update():
    spec = AgentSpec(3, 2, True)
    algo = IPSAC(spec, ModelConfig(hidden=8), AlgoConfig(tau=0.25))
    before = [p.clone() for p in algo.v_target.parameters()]
    with torch.no_grad():
        for p in algo.v.parameters():
            p.add_(1.0)
    algo.target_update()
    for b, p, t in zip(before, algo.v.parameters(), algo.v_target.parameters()):
        assert torch.allclose(t, 0.25 * p + 0.75 * b)


def test_update_steps_every_network_and_logs_every_loss():
    spec = AgentSpec(1, 2, True)
    algo = IPSAC(spec, ModelConfig(hidden=8), AlgoConfig(autotune_alpha=True))
    before = {k: [p.clone() for p in getattr(algo, k).parameters()] for k in ("policy", "q", "v")}
    alpha0 = algo.log_alpha.item()
    stats = algo.update(batch(True))
    for k, params in before.items():
        assert any(not torch.equal(a, b) for a, b in zip(params, getattr(algo, k).parameters())), k
    assert algo.log_alpha.item() != alpha0
    for key in (
        "policy_loss",
        "value_loss",
        "q_loss",
        "alpha_loss",
        "entropy",
        "alpha",
        "q1",
        "q2",
        "v",
        "grad_norm/policy",
        "grad_norm/q",
        "grad_norm/v",
    ):
        assert key in stats and math.isfinite(stats[key])


def hand_discrete(p, nbr_feat, base, w):
    """Policy loss and value targets by hand for the 2-agent graph, given the neighbours' edge features."""
    n_act = len(p[0])
    nbr = [1, 0]
    q_pi = [
        [
            [base[k][i][a] + sum(w[b] * nbr_feat[nbr[i]][b] for b in range(n_act)) for a in range(n_act)]
            for i in range(2)
        ]
        for k in range(2)
    ]
    qmin = [[min(q_pi[0][i][a], q_pi[1][i][a]) for a in range(n_act)] for i in range(2)]
    plogp = lambda x: x * math.log(x) if x > 0 else 0.0  # 0 log 0 = 0 for masked actions
    policy = sum(sum(ALPHA * plogp(p[i][a]) - p[i][a] * qmin[i][a] for a in range(n_act)) for i in range(2)) / 2
    v_tgt = [sum(p[i][a] * qmin[i][a] - ALPHA * plogp(p[i][a]) for a in range(n_act)) for i in range(2)]
    return policy, v_tgt


def test_gumbel_mode_by_hand():
    """Default mode: the neighbours' edge features are the one-hot argmax of logits + Gumbel noise."""
    algo = make(True, "gumbel")
    logits = [[0.5, -0.5], [0.0, 1.0]]
    torch.manual_seed(11)
    noise = -torch.empty(2, 2).exponential_().log()  # the draw F.gumbel_softmax makes
    torch.manual_seed(11)
    out = algo.losses(batch(True))
    samples = [int(torch.tensor(logits[i]).add(noise[i]).argmax()) for i in range(2)]
    onehot = [[1.0 if a == samples[i] else 0.0 for a in range(2)] for i in range(2)]
    p = [softmax(logits[0]), softmax(logits[1])]
    policy, v_tgt = hand_discrete(p, onehot, [[[1.0, 2.0], [0.5, -1.0]], [[1.5, 1.0], [0.0, 0.0]]], [0.3, -0.7])
    assert out["policy_loss"].item() == pytest.approx(policy, rel=1e-5)
    assert out["v_target"].item() == pytest.approx(sum(v_tgt) / 2, rel=1e-5)


def test_masked_actions_by_hand():
    """Agent 0 may not take action 1: it has probability 0 and contributes nothing to any loss."""
    spec = AgentSpec(obs_dim=1, action_dim=3, discrete=True)
    algo = IPSAC(spec, ModelConfig(hidden=4), AlgoConfig(alpha=ALPHA, gamma=GAMMA, discrete_neighbour_actions="probs"))
    logits = [[0.5, 9.0, -0.5], [0.0, 1.0, 0.3]]
    algo.policy = StubPolicy(torch.tensor(logits), True)
    base = [[[1.0, -50.0, 2.0], [0.5, -1.0, 0.2]], [[1.5, -50.0, 1.0], [0.0, 0.0, 0.4]]]
    w = [0.3, -0.7, 0.1]
    algo.q = StubQ(torch.tensor(base), torch.tensor(w))
    algo.v = StubV(torch.tensor([0.4, -0.2]))
    algo.v_target = StubV(torch.tensor([1.0, 3.0])).requires_grad_(False)
    b = batch(True)
    b.obs.action_mask = torch.tensor([[True, False, True], [True, True, True]])
    out = algo.losses(b)
    p0 = softmax([0.5, -0.5])
    p = [[p0[0], 0.0, p0[1]], softmax(logits[1])]
    policy, v_tgt = hand_discrete(p, p, base, w)
    assert out["policy_loss"].item() == pytest.approx(policy, rel=1e-5)
    assert out["v_target"].item() == pytest.approx(sum(v_tgt) / 2, rel=1e-5)
    assert torch.isfinite(out["policy_loss"]) and torch.isfinite(out["value_loss"])


# --------------------------------------------------------------------------------------------------
# Which state each network reads: stubs whose outputs depend on the node features and on the edges, and
# a transition whose s and s' differ in both. Evaluating V-bar on s, V on s', or Q on s' (and its graph)
# changes a loss below (each such mutation of ipgnn.algos.ipsac was checked to fail these tests).

OBS_X = torch.tensor([[0.3], [-0.2], [0.7]], dtype=torch.float64)
OBS_EI = torch.tensor([[0, 1, 1], [1, 0, 2]])  # 0 -> 1, 1 -> 0, 1 -> 2
NEXT_X = torch.tensor([[1.1], [0.4], [-0.6]], dtype=torch.float64)
NEXT_EI = torch.tensor([[2, 0], [0, 2]])  # 2 -> 0, 0 -> 2: another graph at s'


def neighbour_sum(x, ei):
    """sum over edges j -> i of x_j, per node i."""
    return torch.zeros(x.size(0), dtype=x.dtype).index_add(0, ei[1], x[ei[0], 0])


class StatePolicy(nn.Module):
    """logits_i = out_i + x_i + 0.5 * sum_{j -> i} x_j (discrete)."""

    def __init__(self, out):
        super().__init__()
        self.out = nn.Parameter(out.clone())

    def forward(self, data, **kw):
        shift = data.x[:, 0] + 0.5 * neighbour_sum(data.x, data.edge_index)
        return PolicyOutput(MaskedCategorical(self.out + shift.unsqueeze(-1), getattr(data, "action_mask", None)))


class StateQ(nn.Module):
    """Q^k_i(a) = base_k[i, a] + u_k x_i + sum_{j -> i} (w . edge_attr_j + 0.25 x_j)."""

    def __init__(self, base, w, u):
        super().__init__()
        self.base, self.w, self.u = nn.Parameter(base.clone()), w, u

    def forward(self, x, edge_index, edge_attr=None, own_action=None, agent_type=None, neighbour_action=None):
        if neighbour_action is not None:  # edge j -> i carries a_j
            edge_attr = neighbour_action[edge_index[0]]
        nbr = torch.zeros(x.size(0), dtype=x.dtype).index_add(0, edge_index[1], edge_attr.to(x.dtype) @ self.w)
        nbr = nbr + 0.25 * neighbour_sum(x, edge_index)
        return self.base + (self.u.view(2, 1) * x[:, 0].view(1, -1) + nbr.view(1, -1)).unsqueeze(-1)

    encode, from_state = StubQ.encode, StubQ.from_state


class StateV(nn.Module):
    """V_i = values_i + scale * x_i + 0.3 * sum_{j -> i} x_j."""

    def __init__(self, values, scale):
        super().__init__()
        self.values, self.scale = nn.Parameter(values.clone()), scale

    def forward(self, x, edge_index, agent_type=None):
        return self.values + self.scale * x[:, 0] + 0.3 * neighbour_sum(x, edge_index)


BASE3 = torch.tensor(
    [[[1.0, 2.0], [0.5, -1.0], [0.2, 0.1]], [[1.5, 1.0], [0.0, 0.0], [0.3, -0.4]]], dtype=torch.float64
)
W3, U3 = torch.tensor([0.3, -0.7], dtype=torch.float64), torch.tensor([0.8, -0.5], dtype=torch.float64)
LOGITS3 = torch.tensor([[0.5, -0.5], [0.0, 1.0], [-0.3, 0.2]], dtype=torch.float64)


def make_state_dependent():
    spec = AgentSpec(obs_dim=1, action_dim=2, discrete=True)
    algo = IPSAC(spec, ModelConfig(hidden=4), AlgoConfig(alpha=ALPHA, gamma=GAMMA, discrete_neighbour_actions="probs"))
    algo.policy = StatePolicy(LOGITS3)
    algo.q = StateQ(BASE3, W3, U3)
    algo.v = StateV(torch.tensor([0.4, -0.2, 0.1], dtype=torch.float64), 1.0)
    algo.v_target = StateV(torch.tensor([1.0, 3.0, -0.5], dtype=torch.float64), 2.0).requires_grad_(False)
    return algo


def state_batch():
    one = lambda x, ei: Batch(x=x, edge_index=ei, batch=torch.zeros(3, dtype=torch.long), ptr=torch.tensor([0, 3]))
    return TransitionBatch(
        one(OBS_X, OBS_EI),
        one(NEXT_X, NEXT_EI),
        torch.tensor([1, 0, 1]),
        reward=torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64),
        terminated=torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
    )


def hand_state_dependent():
    """Every loss of the state-dependent stubs by hand, each network on the state the paper says."""
    xs, xn = OBS_X[:, 0].tolist(), NEXT_X[:, 0].tolist()
    nb = lambda x, edges, i: sum(x[j] for j, k in edges if k == i)
    e_s, e_n = list(zip(*OBS_EI.tolist())), list(zip(*NEXT_EI.tolist()))
    logits = [[LOGITS3[i, a].item() + xs[i] + 0.5 * nb(xs, e_s, i) for a in range(2)] for i in range(3)]
    p = [softmax(l) for l in logits]
    w, u = W3.tolist(), U3.tolist()
    base = BASE3.tolist()

    def q(k, i, a, x, edges, feats):  # Q^k_i(a) on the state (x, edges) with edge features feats[j]
        return (
            base[k][i][a]
            + u[k] * x[i]
            + sum(sum(w[b] * feats[j][b] for b in range(2)) + 0.25 * x[j] for j, kk in edges if kk == i)
        )

    q_pi = [[[q(k, i, a, xs, e_s, p) for a in range(2)] for i in range(3)] for k in range(2)]  # Q on s, a ~ q
    qmin = [[min(q_pi[0][i][a], q_pi[1][i][a]) for a in range(2)] for i in range(3)]
    policy = sum(sum(p[i][a] * (ALPHA * math.log(p[i][a]) - qmin[i][a]) for a in range(2)) for i in range(3)) / 3
    v_tgt = [sum(p[i][a] * (qmin[i][a] - ALPHA * math.log(p[i][a])) for a in range(2)) for i in range(3)]
    v = [[0.4, -0.2, 0.1][i] + 1.0 * xs[i] + 0.3 * nb(xs, e_s, i) for i in range(3)]  # V on s
    value = sum(0.5 * (v[i] - v_tgt[i]) ** 2 for i in range(3)) / 3
    vbar = [[1.0, 3.0, -0.5][i] + 2.0 * xn[i] + 0.3 * nb(xn, e_n, i) for i in range(3)]  # V-bar on s'
    r, d, a = [1.0, -2.0, 0.5], [0.0, 0.0, 1.0], [1, 0, 1]
    q_hat = [r[i] + GAMMA * (1 - d[i]) * vbar[i] for i in range(3)]
    onehot = [[1.0 if b == a[j] else 0.0 for b in range(2)] for j in range(3)]
    q_data = [[q(k, i, a[i], xs, e_s, onehot) for i in range(3)] for k in range(2)]  # Q on s and its graph
    qloss = sum(sum(0.5 * (q_data[k][i] - q_hat[i]) ** 2 for i in range(3)) / 3 for k in range(2))
    return {
        "policy_loss": policy,
        "value_loss": value,
        "q_loss": qloss,
        "q_target": sum(q_hat) / 3,
        "v": sum(v) / 3,
        "q1": sum(q_data[0]) / 3,
        "v_target": sum(v_tgt) / 3,
    }


def test_each_network_reads_the_state_the_paper_says():
    """pi, Q and V on s (with s's graph), V-bar on s' (with s' graph); s and s' differ in features and edges."""
    out = make_state_dependent().losses(state_batch())
    for key, expected in hand_state_dependent().items():
        assert out[key].item() == pytest.approx(expected, rel=1e-6, abs=1e-9), key  # alpha is float32


def test_policy_gradient_to_neighbour_logits_matches_finite_differences():
    """probs mode: dJ(theta)/d logits_j, including agent j's effect on its neighbours' Q_i through the
    edge features, equals a central finite difference of the loss (float64)."""
    algo = make_state_dependent()
    b = state_batch()
    algo.losses(b)["policy_loss"].backward()
    grad = algo.policy.out.grad.clone()
    eps = 1e-6
    fd = torch.zeros_like(grad)
    for i in range(grad.size(0)):
        for a in range(grad.size(1)):
            vals = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    algo.policy.out[i, a] += sign * eps
                vals.append(algo.losses(b)["policy_loss"].item())
                with torch.no_grad():
                    algo.policy.out[i, a] -= sign * eps
            fd[i, a] = (vals[0] - vals[1]) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)
    # agent 1 is a neighbour of agents 0 and 2 (edges 1 -> 0, 1 -> 2): its logits' gradient has that term
    algo_no_edges = make_state_dependent()
    algo_no_edges.q.w = torch.zeros(2, dtype=torch.float64)
    algo_no_edges.losses(b)["policy_loss"].backward()
    assert not torch.allclose(algo_no_edges.policy.out.grad[1], grad[1])


class _FullQ(nn.Module):
    """The twin critics as IP-SAC used them before the state terms were shared: every ``from_state`` runs
    the whole network on the state again."""

    def __init__(self, q):
        super().__init__()
        self.q = q

    def encode(self, x, edge_index, agent_type=None):
        class Token(tuple):
            def detach(self):
                return self

        return Token((x, agent_type))

    def from_state(self, token, edge_index, **actions):
        x, agent_type = token
        return self.q(x, edge_index, agent_type=agent_type, **actions)


@pytest.mark.parametrize("discrete,mode", [(True, "gumbel"), (True, "probs"), (False, None)])
def test_shared_critic_state_gives_the_gradients_of_two_full_evaluations(discrete, mode):
    """The real networks on a real PyG batch: every loss and every parameter gradient of the update with the
    critics' state terms computed once equals, bit for bit, that of two full critic evaluations (the earlier
    code)."""
    from torch_geometric.data import Data

    torch.manual_seed(0)
    spec = AgentSpec(obs_dim=6, action_dim=4 if discrete else 2, discrete=discrete)
    cfg = AlgoConfig(alpha=ALPHA, gamma=GAMMA, discrete_neighbour_actions=mode or "gumbel", autotune_alpha=True)
    shared = IPSAC(spec, ModelConfig(hidden=16, rounds=2, critic_state_layers=1), cfg)
    full = IPSAC(spec, ModelConfig(hidden=16, rounds=2, critic_state_layers=1), cfg)
    full.load_state_dict(shared.state_dict())
    full.q = _FullQ(full.q)

    def graph(n):
        ei = torch.randint(n, (2, 3 * n))
        return Data(x=torch.randn(n, 6), edge_index=ei[:, ei[0] != ei[1]])

    obs, nxt = Batch.from_data_list([graph(5), graph(7)]), Batch.from_data_list([graph(5), graph(7)])
    action = torch.randint(4, (12,)) if discrete else torch.rand(12, 2) * 2 - 1
    b = TransitionBatch(obs, nxt, action, reward=torch.randn(12), terminated=torch.zeros(12))
    grads = []
    for algo in (shared, full):
        torch.manual_seed(1)  # the same policy sample (Gumbel noise / reparameterisation) in both
        terms = algo.losses(b)
        total = terms["policy_loss"] + terms["value_loss"] + terms["q_loss"] + terms["alpha_loss"]
        algo.zero_grad()
        total.backward()
        grads.append(
            (
                {k: v.detach() for k, v in terms.items()},
                {n.removeprefix("q.") if n.startswith("q.q.") else n: p.grad for n, p in algo.named_parameters()},
            )
        )
    (t_shared, g_shared), (t_full, g_full) = grads
    for k in t_full:  # bit for bit: the same operations on the same inputs
        assert torch.equal(t_shared[k], t_full[k]), k
    assert g_shared.keys() == g_full.keys()
    for name, g in g_full.items():
        if g is None:
            assert g_shared[name] is None, name
        else:
            assert torch.equal(g_shared[name], g), name


def test_bf16_update_stays_close_to_fp32():
    """algo.precision: bf16 on the real networks and a real PyG batch: the losses and every network's
    gradient stay within bfloat16 rounding of fp32's, the outputs the losses read are float32, and the
    computation really is a different one (not fp32 under another name)."""
    from torch_geometric.data import Data

    from ipgnn.algos import make_algo

    torch.manual_seed(0)
    spec = AgentSpec(obs_dim=10, action_dim=5, discrete=True)
    model = ModelConfig(hidden=64, rounds=2)
    algos = {p: IPSAC(spec, model, AlgoConfig(alpha=ALPHA, gamma=GAMMA, precision=p)) for p in ("fp32", "bf16")}
    algos["bf16"].load_state_dict(algos["fp32"].state_dict())

    def graph(n):
        ei = torch.randint(n, (2, 4 * n))
        return Data(x=torch.randn(n, 10), edge_index=ei[:, ei[0] != ei[1]])

    obs, nxt = Batch.from_data_list([graph(20) for _ in range(8)]), Batch.from_data_list([graph(20) for _ in range(8)])
    b = TransitionBatch(obs, nxt, torch.randint(5, (160,)), reward=torch.randn(160), terminated=torch.zeros(160))
    terms, grads = {}, {}
    for p, algo in algos.items():
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bf16"):
            out = algo.losses(b)
            q = algo.q(obs.x, obs.edge_index, neighbour_action=F.one_hot(b.action, 5).float())
            logits = algo.policy(obs).dist.logits
        assert q.dtype == logits.dtype == out["q_loss"].dtype == torch.float32
        algo.zero_grad()
        (out["policy_loss"] + out["value_loss"] + out["q_loss"]).backward()
        terms[p] = {k: v.detach() for k, v in out.items()}
        grads[p] = {
            name: torch.cat([q.grad.flatten() for q in net.parameters()])
            for name, net in (("policy", algo.policy), ("q", algo.q), ("v", algo.v))
        }
    assert terms["bf16"]["q_loss"] != terms["fp32"]["q_loss"]  # bfloat16 really ran
    for k in ("policy_loss", "value_loss", "q_loss", "q1", "v", "q_target"):
        torch.testing.assert_close(terms["bf16"][k], terms["fp32"][k], rtol=1e-2, atol=1e-3, msg=k)  # measured <= 0.3 %
    for name, g in grads["fp32"].items():
        g16 = grads["bf16"][name]
        assert F.cosine_similarity(g16, g, dim=0) > 0.998, name  # measured >= 0.9995
        assert (g16 - g).norm() < 0.06 * g.norm(), name  # measured <= 3 %
    # the same update through IPSAC.update: autocast on for bf16, and every stat finite
    stats = algos["bf16"].update(b)
    assert all(math.isfinite(v) for v in stats.values())
    with pytest.raises(ConfigError, match=r"algo\.precision: bf16 .*ipsac only.*set algo\.precision: fp32"):
        make_algo(spec, model, AlgoConfig(name="iql", precision="bf16"), 20)
