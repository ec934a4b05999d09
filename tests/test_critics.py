import networkx as nx
import pytest
import torch
import torch.nn.functional as F

from ipgnn.graphs import networkx_edges
from ipgnn.nn.critics import GraphQNetwork, GraphValueNetwork, neighbour_action_attr


def setup(discrete, state_layers):
    torch.manual_seed(0)
    n, a = 6, 3
    ei = networkx_edges(nx.path_graph(n))  # 0-1-2-3-4-5
    x = torch.randn(n, 4)
    q = GraphQNetwork(4, a, discrete, hidden=16, state_layers=state_layers)
    if discrete:
        acts = torch.randint(0, a, (n,))
        feats = lambda act: F.one_hot(act, a).float()
    else:
        acts = torch.rand(n, a) * 2 - 1
        feats = lambda act: act

    def qv(act):
        return q(x, ei, neighbour_action_attr(feats(act), ei), own_action=None if discrete else act)

    return qv, acts


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("state_layers", [0, 2])
def test_q_depends_on_neighbour_actions_only(discrete, state_layers):
    qv, acts = setup(discrete, state_layers)
    base = qv(acts)
    # agent 2's neighbours are 1 and 3; agent 0 and 5 are farther away
    changed = acts.clone()
    changed[3] = (acts[3] + 1) % 3 if discrete else -acts[3]
    q_nbr = qv(changed)
    assert not torch.allclose(base[2], q_nbr[2])  # a neighbour's action changes Q_2
    changed = acts.clone()
    changed[5] = (acts[5] + 1) % 3 if discrete else -acts[5]
    q_far = qv(changed)
    assert torch.allclose(base[2], q_far[2])  # a non-neighbour's action does not, even with deep state layers
    assert torch.allclose(base[:4], q_far[:4])


def test_edge_attr_rows_line_up_with_edge_index():
    feats = torch.arange(5).float().view(5, 1) * 10
    ei = torch.tensor([[4, 0, 2], [1, 3, 0]])
    assert neighbour_action_attr(feats, ei).squeeze(-1).tolist() == [40.0, 0.0, 20.0]


def test_discrete_q_outputs_every_own_action():
    torch.manual_seed(0)
    q = GraphQNetwork(4, 5, True, hidden=8)
    ei = networkx_edges(nx.path_graph(3))
    out = q(torch.randn(3, 4), ei, torch.zeros(ei.size(1), 5))
    assert out.shape == (3, 5)


def test_value_is_per_agent():
    v = GraphValueNetwork(4, hidden=8)
    out = v(torch.randn(5, 4), networkx_edges(nx.path_graph(5)))
    assert out.shape == (5,)
    assert out.unique().numel() > 1


@pytest.mark.parametrize("discrete", [True, False])
def test_per_node_neighbour_actions_are_the_edge_feature_critic(discrete):
    """``neighbour_action`` ([N, A], what IP-SAC passes) and ``edge_attr`` ([E, A], the source's action per
    edge) are the same critic: values, and gradients to the actions and to every parameter, agree."""
    torch.manual_seed(0)
    n, a = 7, 3
    ei = networkx_edges(nx.erdos_renyi_graph(n, 0.5, seed=2))
    x = torch.randn(n, 4)
    q = GraphQNetwork(4, a, discrete, hidden=16)
    act = torch.randn(n, a, requires_grad=True)
    own = None if discrete else act
    by_edge = q(x, ei, neighbour_action_attr(act, ei), own_action=own)
    by_node = q(x, ei, neighbour_action=act, own_action=own)
    assert torch.allclose(by_edge, by_node, atol=1e-6)
    w = torch.randn_like(by_edge)
    g_edge = torch.autograd.grad((by_edge * w).sum(), [act, *q.parameters()])
    g_node = torch.autograd.grad((by_node * w).sum(), [act, *q.parameters()])
    for ge, gn in zip(g_edge, g_node):
        assert torch.allclose(ge, gn, atol=1e-5)
    with pytest.raises(ValueError, match="edge_attr.*source_attr"):
        q(x, ei, neighbour_action_attr(act, ei), neighbour_action=act, own_action=own)
