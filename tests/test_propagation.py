import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch, Data

from ipgnn.graphs import networkx_edges
from ipgnn.nn.distributions import MaskedCategorical, TanhGaussian
from ipgnn.nn.propagation import IntentionPropagationConv, IntentionPropagationNetwork


def net(**kw):
    torch.manual_seed(0)
    args = dict(obs_dim=5, action_dim=4, discrete=True, hidden=16, rounds=2, hops=1, heads=2)
    args.update(kw)
    return IntentionPropagationNetwork(**args)


def path_graph(n, obs_dim=5):
    return Data(x=torch.randn(n, obs_dim), edge_index=networkx_edges(nx.path_graph(n)))


@pytest.mark.parametrize("discrete", [True, False])
def test_permutation_equivariance(discrete):
    model = net(discrete=discrete)
    g = Data(x=torch.randn(7, 5), edge_index=networkx_edges(nx.erdos_renyi_graph(7, 0.5, seed=3)))
    perm = torch.randperm(7)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(7)
    permuted = Data(x=g.x[perm], edge_index=inv[g.edge_index])
    out, out_p = model(g, return_intentions=True), model(permuted, return_intentions=True)
    for mu, mu_p in zip(out.intentions, out_p.intentions):
        assert torch.allclose(mu[perm], mu_p, atol=1e-5)
    if discrete:
        assert torch.allclose(out.dist.logits[perm], out_p.dist.logits, atol=1e-5)
    else:
        assert torch.allclose(out.dist.mean[perm], out_p.dist.mean, atol=1e-5)


@pytest.mark.parametrize("rounds,hops", [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2)])
def test_receptive_field_is_rounds_times_hops(rounds, hops):
    """After M rounds reading h-hop neighbourhoods, agent 0 depends on agents within M*h hops, no farther."""
    model = net(rounds=rounds, hops=hops)
    g = path_graph(10)
    g.x.requires_grad_(True)
    model(g).dist.logits[0].sum().backward()
    influence = g.x.grad.abs().sum(-1)
    reach = rounds * hops
    assert (influence[: reach + 1] > 0).all(), influence
    assert (influence[reach + 1 :] == 0).all(), influence


def test_intentions_and_attention_are_returned():
    model = net(rounds=3, heads=2)
    g = path_graph(6)
    out = model(g, return_intentions=True, return_attention=True)
    assert len(out.intentions) == 4 and all(m.shape == (6, 16) for m in out.intentions)
    assert len(out.attention) == 3
    ei, alpha = out.attention[0]
    assert alpha.shape == (ei.size(1), 2) and (alpha >= 0).all() and (alpha <= 1).all()
    sums = torch.zeros(6, 2).index_add_(0, ei[1], alpha)
    has_nbr = torch.bincount(ei[1], minlength=6) > 0
    assert torch.allclose(sums[has_nbr], torch.ones_like(sums[has_nbr]), atol=1e-5)


def test_rounds_zero_is_independent_decision():
    model = net(rounds=0)
    g = path_graph(5)
    alone = Data(x=g.x, edge_index=torch.empty(2, 0, dtype=torch.long))
    assert torch.allclose(model(g).dist.logits, model(alone).dist.logits)


def test_weights_are_shared_across_rounds():
    a, b = net(rounds=1), net(rounds=4)
    n_params = lambda m: sum(p.numel() for p in m.conv.parameters())
    assert n_params(a) == n_params(b)


def test_batch_equals_separate_graphs():
    model = net()
    gs = [path_graph(4), path_graph(6)]
    batched = model(Batch.from_data_list(gs)).dist.logits
    separate = torch.cat([model(g).dist.logits for g in gs])
    assert torch.allclose(batched, separate, atol=1e-5)


def test_action_mask_zeroes_invalid_actions():
    model = net()
    g = path_graph(3)
    g.action_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    dist = model(g).dist
    assert (dist.probs[~g.action_mask] == 0).all()
    assert torch.allclose(dist.probs.sum(-1), torch.ones(3))
    assert dist.greedy()[2] == 3
    assert all(g.action_mask[i, a] for i, a in enumerate(dist.sample().tolist()))
    assert torch.isfinite(dist.entropy()).all()


def test_mask_with_no_valid_action_is_an_error():
    with pytest.raises(ValueError, match="no valid action"):
        MaskedCategorical(torch.zeros(2, 3), torch.tensor([[True, False, False], [False, False, False]]))


def test_per_type_encoders():
    model = net(num_agent_types=2)
    g = path_graph(4)
    g.agent_type = torch.tensor([0, 0, 0, 0])
    out0 = model(g).dist.logits
    g.agent_type = torch.tensor([1, 1, 1, 1])
    out1 = model(g).dist.logits
    assert not torch.allclose(out0, out1)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(0)
    d = TanhGaussian(torch.randn(5, 2), torch.randn(5, 2) * 0.3)
    a, logp = d.rsample()
    assert (a.abs() < 1).all()
    assert torch.allclose(d.log_prob(a), logp, atol=1e-3)
    # Monte-Carlo check in 1-D: density of a integrates to 1 over (-1, 1)
    d1 = TanhGaussian(torch.tensor([[0.3]]), torch.tensor([[-0.5]]))
    grid = torch.linspace(-0.999, 0.999, 20001).view(-1, 1)
    dens = torch.exp(TanhGaussian(d1.mean.expand(len(grid), 1), d1.log_std.expand(len(grid), 1)).log_prob(grid))
    assert abs(torch.trapezoid(dens, grid.squeeze()).item() - 1.0) < 1e-2


def test_conv_repr_and_reset():
    conv = IntentionPropagationConv(8, heads=2)
    assert "heads=2" in repr(conv)
    w = conv.lin_state.weight.clone()
    conv.reset_parameters()
    assert not torch.equal(w, conv.lin_state.weight)


def test_every_head_reads_the_whole_neighbour_intention():
    """heads > 1: head k's message is alpha * W_v^k mu_j, a projection of all of mu_j, not only its k-th
    slice. With the attention scores switched off (uniform alpha), head 0's messages still depend on the
    second half of mu_j; one head keeps the earlier parameters (no value projection)."""
    torch.manual_seed(0)
    d, n = 8, 5
    edge_index = torch.tensor([[1, 2, 3, 4, 0], [0, 0, 1, 2, 3]])
    one = IntentionPropagationConv(d, heads=1)
    assert one.lin_value is None and "lin_value.weight" not in one.state_dict()
    conv = IntentionPropagationConv(d, heads=2)
    with torch.no_grad():
        conv.att.zero_()  # scores 0: alpha uniform over each agent's neighbours, independent of mu
    messages = []
    conv.register_message_forward_hook(lambda module, inputs, out: messages.append(out))
    mu, h = torch.rand(n, d), torch.randn(n, d)

    def head0_messages(second_half):
        messages.clear()
        conv(torch.cat([mu[:, : d // 2], second_half], 1), h, edge_index)
        return messages[-1][:, 0]  # [E, d/2]

    jac = torch.autograd.functional.jacobian(head0_messages, mu[:, d // 2 :])
    assert jac.abs().sum() > 0
    conv.lin_value = None  # the earlier layer: head 0 reads slice 0 only
    assert torch.autograd.functional.jacobian(head0_messages, mu[:, d // 2 :]).abs().sum() == 0


def reference_intentions(model, x, edge_index):
    """Eq. (6) with GATv2 attention written out in plain torch, one softmax per receiving agent (no PyG, no
    shared state term): the reference for the network's own implementation."""
    conv, n = model.conv, x.size(0)
    H, C = conv.heads, conv.head_dim
    h = torch.relu(model.encoder.lins[0](x))
    mu = torch.relu(conv.lin_state(h))
    mus = [mu]
    src, dst = edge_index
    for _ in range(model.rounds):
        key, query = conv.lin_src(mu).view(n, H, C), conv.lin_dst(mu).view(n, H, C)
        value = (mu if conv.lin_value is None else conv.lin_value(mu)).view(n, H, C)
        agg = torch.zeros(n, H, C)
        for i in range(n):  # the reference may loop: it is the slow, obvious form
            j = src[dst == i]
            if j.numel() == 0:
                continue
            score = (torch.nn.functional.leaky_relu(key[j] + query[i], conv.negative_slope) * conv.att[0]).sum(-1)
            alpha = torch.softmax(score, 0)  # [deg, H]
            agg[i] = (alpha.unsqueeze(-1) * value[j]).sum(0)
        mu = torch.relu(conv.lin_state(h) + conv.lin_msg(agg.reshape(n, -1)))
        mus.append(mu)
    return mus, model.head(torch.cat(mus, -1))


@pytest.mark.parametrize("heads", [1, 2])
def test_the_network_computes_eq_6_values_and_gradients(heads):
    """The network's shortcuts (the state term W_1 h + b computed once for all rounds, the attention score as a
    matrix product) give eq. (6)'s intentions, logits and parameter gradients to float tolerance."""
    model = net(heads=heads, rounds=3)
    g = Data(x=torch.randn(9, 5), edge_index=networkx_edges(nx.erdos_renyi_graph(9, 0.4, seed=1)))
    out = model(g, return_intentions=True)
    mus, logits = reference_intentions(model, g.x, g.edge_index)
    for mine, ref in zip(out.intentions, mus):
        assert torch.allclose(mine, ref, atol=1e-6)
    assert torch.allclose(out.dist.logits, logits, atol=1e-6)
    weights = torch.randn_like(logits)
    mine = torch.autograd.grad((out.dist.logits * weights).sum(), list(model.parameters()))
    ref = torch.autograd.grad((logits * weights).sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), mine, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), name
