"""Communication graphs: the environment's own graph, k nearest neighbours, fully connected.

All builders return ``edge_index`` in PyG's ``source_to_target`` convention: a column ``(j, i)`` means
agent ``j`` sends its intention to agent ``i`` (``j`` is in ``N(i)``). Undirected links appear in both
directions.

k-NN uses PyG's ``knn_graph`` for one graph when ``pyg-lib`` provides it, and otherwise one batched
selection (:func:`ipgnn.ops.smallest_k`) over exact squared distances (no compiled extension needed),
or over the squared distances a task already computed for its observations.
"""

from __future__ import annotations

import warnings

import networkx as nx
import torch
import torch_geometric.typing as pyg_typing
from torch import Tensor
from torch_geometric.utils import (
    coalesce,
    dense_to_sparse,
    from_networkx,
    remove_self_loops,
    to_torch_sparse_tensor,
    to_undirected,
)

from ipgnn.config import ConfigError, GraphConfig
from ipgnn.ops import smallest_k


def knn_edges(pos: Tensor, k: int, sq_dist: Tensor | None = None) -> Tensor:
    """Edges from each agent's ``k`` nearest agents (Euclidean, no self loops).

    Args:
        pos: ``[N, d]`` positions of one graph, or ``[B, N, d]`` for ``B`` graphs of ``N`` agents.
        k: neighbours per agent; clipped to ``N - 1``.
        sq_dist: the squared distances between the agents, ``[B, N, N]`` (``[N, N]`` for one graph)
            with ``inf`` on the diagonal, when the caller has them (a tensor MPE scenario computes them
            for its observations and contact forces); not modified.

    Returns:
        ``[2, N*k]`` (or ``[B, 2, N*k]``, local node indices per graph); row 0 is the neighbour
        (source), row 1 the receiving agent, and each agent receives exactly ``k`` edges.
    """
    single = pos.dim() == 2
    if single:
        pos = pos.unsqueeze(0)
        sq_dist = None if sq_dist is None else sq_dist.unsqueeze(0)
    b, n, _ = pos.shape
    k = min(k, n - 1)
    if k <= 0:
        empty = pos.new_zeros((b, 2, 0), dtype=torch.long)
        return empty[0] if single else empty
    if sq_dist is None:
        if pyg_typing.WITH_KNN and single:
            from torch_geometric.nn import knn_graph

            return knn_graph(pos[0], k=k, loop=False)
        sq_dist = pos.new_zeros(b, n, n)
        for c in range(pos.shape[-1]):  # coordinates (2 or 3), not agents
            diff = pos[..., c].unsqueeze(1) - pos[..., c].unsqueeze(2)
            sq_dist.addcmul_(diff, diff)
        sq_dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    elif sq_dist.shape != (b, n, n):
        raise ValueError(
            f"knn_edges: sq_dist must have shape {(b, n, n)} for positions of shape "
            f"{tuple(pos.shape)}, got {tuple(sq_dist.shape)}"
        )
    nbr = smallest_k(sq_dist, k)[1]  # [B, N, k]
    dst = torch.arange(n, device=pos.device).repeat_interleave(k).expand(b, -1)
    edges = torch.stack([nbr.reshape(b, -1), dst], dim=1)  # [B, 2, N*k]
    return edges[0] if single else edges


def fully_connected_edges(n: int, device: torch.device | None = None) -> Tensor:
    """All ordered pairs ``(j, i)``, ``j != i``: ``[2, N*(N-1)]``."""
    adj = torch.ones(n, n, device=device) - torch.eye(n, device=device)
    return dense_to_sparse(adj)[0]


def networkx_edges(graph: nx.Graph) -> Tensor:
    """``edge_index`` of a networkx graph, nodes relabelled ``0..N-1`` in sorted order; undirected edges
    both ways; self-loops dropped (an agent is not its own neighbour)."""
    relabelled = nx.convert_node_labels_to_integers(graph, ordering="sorted")
    if relabelled.number_of_edges() == 0:
        return torch.empty(2, 0, dtype=torch.long)
    edges = remove_self_loops(from_networkx(relabelled).edge_index)[0]
    return coalesce(edges, num_nodes=relabelled.number_of_nodes())


def expand_hops(edge_index: Tensor, num_nodes: int, hops: int) -> Tensor:
    """Edges ``(j, i)`` for every ``j != i`` within ``hops`` hops of ``i``: the support of
    :math:`(A + I)^{hops}` minus the diagonal. ``hops = 1`` returns the input (coalesced)."""
    if hops <= 1 or edge_index.numel() == 0:
        return edge_index
    loops = torch.arange(num_nodes, device=edge_index.device).repeat(2, 1)
    with warnings.catch_warnings():  # torch flags its sparse API as beta; the product here is exact
        warnings.simplefilter("ignore", UserWarning)
        adj = to_torch_sparse_tensor(torch.cat([edge_index, loops], 1), size=num_nodes)
        reach = adj
        for _ in range(hops - 1):
            reach = torch.sparse.mm(reach, adj).coalesce()
        indices = reach.indices()
    return remove_self_loops(indices)[0]


class GraphBuilder:
    """Builds a step's ``edge_index`` from the config and what the environment offers.

    Args:
        cfg: the ``env.graph`` section.
        num_agents: N.
        env_edges: the environment's own static graph (required for ``kind: env``).
    """

    def __init__(self, cfg: GraphConfig, num_agents: int, env_edges: Tensor | None = None):
        self.cfg = cfg
        self.num_agents = num_agents
        self._static: Tensor | None = None
        if cfg.kind == "knn" and cfg.k > num_agents - 1:
            warnings.warn(
                f"env.graph.k = {cfg.k} but there are only {num_agents} agents: each agent gets its "
                f"{num_agents - 1} other agents as neighbours (the graph is fully connected; "
                f"kind: full says so directly)",
                stacklevel=2,
            )
        if cfg.kind == "env":
            if env_edges is None:
                raise ConfigError(
                    "env.graph.kind: 'env' needs a task with its own graph (e.g. a road network); "
                    "this task has none: use 'knn' or 'full'"
                )
            # an agent is never its own neighbour: a self-loop would put its own action on an edge and
            # count it twice in Q_i(s, a_i, a_N(i))
            self._static = remove_self_loops(env_edges)[0]
        elif cfg.kind == "full":
            self._static = fully_connected_edges(num_agents)

    @property
    def is_static(self) -> bool:
        return self._static is not None

    @property
    def max_edges(self) -> int:
        """Upper bound on the number of edges of one step's graph (sizes the replay buffer)."""
        if self._static is not None:
            return int(self._static.size(1))
        k = min(self.cfg.k, self.num_agents - 1)
        return self.num_agents * k * (2 if self.cfg.symmetric else 1)

    def batched(self, num_graphs: int, pos: Tensor | None = None, sq_dist: Tensor | None = None) -> Tensor:
        """``edge_index`` of ``num_graphs`` graphs of ``N`` agents stacked into one PyG ``Batch`` (node
        ``b * N + i``), from positions ``[B, N, d]`` for k-NN (and their squared distances
        ``[B, N, N]`` when the task has them, see :func:`knn_edges`); one batched call, no loop over
        graphs."""
        n = self.num_agents
        if self._static is not None:
            offsets = torch.arange(num_graphs, device=self._static.device).view(-1, 1, 1) * n
            return (self._static.unsqueeze(0) + offsets).permute(1, 0, 2).reshape(2, -1)
        if pos is None:
            raise ValueError("a k-NN graph needs agent positions; the task returned none")
        local = knn_edges(pos, self.cfg.k, sq_dist)  # [B, 2, N*k]
        offsets = torch.arange(num_graphs, device=pos.device).view(-1, 1, 1) * n
        edges = (local + offsets).permute(1, 0, 2).reshape(2, -1)
        if self.cfg.symmetric:  # edges never cross graphs, so one global symmetrisation is per graph
            edges = to_undirected(edges, num_nodes=num_graphs * n)
        return edges

    def __call__(self, pos: Tensor | None = None) -> Tensor:
        if self._static is not None:
            return self._static
        if pos is None:
            raise ValueError("a k-NN graph needs agent positions; the task returned none")
        edges = knn_edges(pos, self.cfg.k)
        if self.cfg.symmetric:
            edges = to_undirected(edges, num_nodes=self.num_agents)
        return edges
