import networkx as nx
import pytest
import torch

from ipgnn.config import ConfigError, GraphConfig
from ipgnn.graphs import GraphBuilder, expand_hops, fully_connected_edges, knn_edges, networkx_edges


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    pos = torch.rand(20, 2, generator=g)
    k = 4
    e = knn_edges(pos, k)
    assert e.shape == (2, 20 * k)
    d = torch.cdist(pos, pos) + torch.eye(20) * 1e9
    for i in range(20):
        expected = set(d[i].topk(k, largest=False).indices.tolist())
        assert set(e[0, e[1] == i].tolist()) == expected  # sources of edges into i are i's k nearest
    assert not (e[0] == e[1]).any()


def test_knn_batched_equals_per_graph():
    pos = torch.rand(3, 10, 2)
    batched = knn_edges(pos, 3)
    for b in range(3):
        assert torch.equal(batched[b], knn_edges(pos[b], 3))


def test_knn_clips_k():
    assert knn_edges(torch.rand(3, 2), 8).shape == (2, 6)


def test_fully_connected():
    e = fully_connected_edges(4)
    assert e.shape == (2, 12) and not (e[0] == e[1]).any()
    assert len({tuple(c) for c in e.t().tolist()}) == 12


def test_networkx_edges_both_directions():
    e = networkx_edges(nx.path_graph(3))
    assert {tuple(c) for c in e.t().tolist()} == {(0, 1), (1, 0), (1, 2), (2, 1)}


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_expand_hops_matches_shortest_paths(hops):
    g = nx.grid_2d_graph(4, 4)
    g = nx.convert_node_labels_to_integers(g)
    e = expand_hops(networkx_edges(g), 16, hops)
    lengths = dict(nx.all_pairs_shortest_path_length(g, cutoff=hops))
    expected = {(j, i) for i in lengths for j, dist in lengths[i].items() if 0 < dist <= hops}
    assert {tuple(c) for c in e.t().tolist()} == expected


def test_builder_env_kind_requires_env_graph():
    with pytest.raises(ConfigError, match="has none"):
        GraphBuilder(GraphConfig(kind="env"), 4)


def test_builder_symmetric_knn_and_max_edges():
    b = GraphBuilder(GraphConfig(kind="knn", k=2, symmetric=True), 6)
    e = b(torch.rand(6, 2))
    assert e.size(1) <= b.max_edges == 24
    pairs = {tuple(c) for c in e.t().tolist()}
    assert all((i, j) in pairs for j, i in pairs)


def test_self_loops_never_reach_the_agents_graph():
    g = nx.path_graph(3)
    g.add_edge(1, 1)
    assert not (networkx_edges(g)[0] == networkx_edges(g)[1]).any()
    looped = torch.tensor([[0, 1, 1, 2], [1, 1, 2, 1]])
    e = GraphBuilder(GraphConfig(kind="env"), 3, env_edges=looped)(None)
    assert not (e[0] == e[1]).any() and e.size(1) == 3
