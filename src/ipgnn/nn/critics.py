r"""Per-agent critics :math:`Q_{\kappa_i}(s, a_i, a_{\mathcal N(i)})` and values :math:`V_{\eta_i}(s)` (sec. 4.3).

Both are graph networks over the same communication graph as the policy. The critic sees the
neighbours' actions as edge features: edge ``j -> i`` carries :math:`a_j` in ``edge_attr`` (a one-hot
or a probability vector for discrete actions, the raw action for continuous ones). Actions enter only
through the last layer, so :math:`Q_i` depends on the actions of ``i`` and of its direct neighbours and
on no other agent's action, whatever the depth of the state layers.

The paper writes :math:`Q_i(s, \cdot)` with the global state; here, as in its partial-observation
remark (sec. 4.3), each critic sees agent ``i``'s observation and, through message passing, those of
its neighbours (``1 + critic_state_layers`` hops): the receptive field grows with the state layers.

Parameters are shared across agents (one network evaluated on every node), as the paper's GNN
critics are; the values are per agent, never one global scalar.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv, MessagePassing
from torch_geometric.typing import Adj, OptTensor

from ipgnn.nn.propagation import TypedEncoder
from ipgnn.nn.utils import float32_output


def neighbour_action_attr(action_features: Tensor, edge_index: Tensor) -> Tensor:
    """``edge_attr`` for the critic: row ``e`` is the action features of the *source* agent
    ``edge_index[0, e]`` (the neighbour ``j`` of edge ``j -> i``)."""
    return action_features.index_select(0, edge_index[0])


class NeighbourConv(MessagePassing):
    r"""Mean of neighbour messages with optional edge features:

    .. math::
        m_i = \frac{1}{|\mathcal N(i)|} \sum_{j \in \mathcal N(i)}
            \mathrm{ReLU}\big(W_t h_i + W_s h_j + W_e e_{ji} + b\big)

    which is :math:`\mathrm{ReLU}(W [h_i \Vert h_j \Vert e_{ji}] + b)` with ``W`` split by blocks: the
    node terms are computed once per node and gathered per edge, so the cost is
    :math:`O(|\mathcal V| d^2 + |\mathcal E| d)` rather than :math:`O(|\mathcal E| d^2)` (measured: the
    edge-wise form was 70 % of a critic forward at k = 8). Isolated agents get :math:`m_i = 0`.

    When every edge out of ``j`` carries the same features :math:`e_{ji} = a_j` (the critic's neighbour
    actions: edge ``j -> i`` carries the source's action), pass them per node as ``source_attr``
    (``[N, edge_dim]``) instead of ``edge_attr`` (``[E, edge_dim]``): :math:`W_s h_j + W_e a_j` is then one
    node term, gathered once per edge. The same function; measured at N = 96, B = 64, k = 8 on the 2-core
    CPU, the edge-wise :math:`W_e e_{ji}` (a skinny ``[E, 5] x [5, d]`` product and its two backward
    products) cost 20 ms of a 49 ms critic forward and backward.

    Args:
        channels (int): width of :math:`h`.
        edge_dim (int): width of :math:`e_{ji}` (0: no edge features).
    """

    def __init__(self, channels: int, edge_dim: int = 0):
        super().__init__(aggr="mean")
        self.edge_dim = edge_dim
        self.lin_dst = nn.Linear(channels, channels)
        self.lin_src = nn.Linear(channels, channels, bias=False)
        self.lin_edge = nn.Linear(edge_dim, channels, bias=False) if edge_dim else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_dst.reset_parameters()
        self.lin_src.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()

    def forward(self, h: Tensor, edge_index: Adj, edge_attr: OptTensor = None, source_attr: OptTensor = None) -> Tensor:
        src = self.lin_src(h)  # before lin_dst: the order in which h's gradient is summed, kept bit for bit
        return self.from_node_terms(self.lin_dst(h), src, edge_index, edge_attr, source_attr)

    def from_node_terms(
        self, dst: Tensor, src: Tensor, edge_index: Adj, edge_attr: OptTensor = None, source_attr: OptTensor = None
    ) -> Tensor:
        """The layer from its state terms :math:`W_t h + b` (``dst``) and :math:`W_s h` (``src``), computed by
        the caller (once, when the same ``h`` meets several sets of edge features)."""
        if self.edge_dim and (edge_attr is None) == (source_attr is None):
            raise ValueError(
                "NeighbourConv was built with edge features; pass edge_attr [E, edge_dim] or "
                "source_attr [N, edge_dim] (one of them)"
            )
        if source_attr is not None:
            src = src + self.lin_edge(source_attr)  # W_s h_j + W_e a_j, per node
        edge_term = self.lin_edge(edge_attr) if edge_attr is not None else None
        return self.propagate(edge_index, dst=dst, src=src, edge_term=edge_term)

    def message(self, dst_i: Tensor, src_j: Tensor, edge_term: OptTensor) -> Tensor:
        pre = dst_i + src_j  # a fresh [E, d] tensor: the in-place ops below touch nothing shared
        if edge_term is not None:
            pre.add_(edge_term)
        return F.relu_(pre)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.lin_dst.out_features}, edge_dim={self.edge_dim})"


class _StateTrunk(nn.Module):
    """Encoder plus ``layers`` residual GATv2 layers over states only (PyG's ``GATv2Conv``)."""

    def __init__(self, obs_dim: int, hidden: int, layers: int, num_agent_types: int):
        super().__init__()
        self.encoder = TypedEncoder(obs_dim, hidden, num_agent_types)
        self.convs = nn.ModuleList(GATv2Conv(hidden, hidden, add_self_loops=False) for _ in range(layers))

    def forward(self, x: Tensor, edge_index: Tensor, agent_type: OptTensor) -> Tensor:
        h = self.encoder(x, agent_type)
        for conv in self.convs:
            h = h + F.relu(conv(h, edge_index))
        return h


class CriticState(NamedTuple):
    r"""The per-node terms of :class:`GraphQNetwork` that depend on the state alone (``[N, d]`` each):
    :math:`h`, and :math:`W_t h + b_t` and :math:`W_s h` of its :class:`NeighbourConv`."""

    h: Tensor
    dst: Tensor
    src: Tensor

    def detach(self) -> CriticState:
        return CriticState(*(t.detach() for t in self))


class GraphQNetwork(nn.Module):
    r""":math:`Q_{\kappa}(s, a_i, a_{\mathcal N(i)})` for every agent ``i``:

    .. math::
        h = \mathrm{trunk}(s), \quad
        m_i = \mathrm{NeighbourConv}(h, e_{ji} = a_j), \quad
        Q_i = \mathrm{MLP}([h_i \Vert m_i \Vert a_i])

    For discrete actions the own action is not an input: the head outputs
    :math:`Q_i(s, \cdot, a_{\mathcal N(i)})` for all ``A`` own actions at once (``[N, A]``), so the
    expectation over :math:`a_i \sim q_i` is exact. For continuous actions it returns ``[N]``.

    ``forward`` is :meth:`encode` (every term that reads the state alone, :class:`CriticState`) followed by
    :meth:`from_state` (the terms that read the actions). A learner that evaluates the critic on one state
    with two sets of actions (SAC: the replayed actions and a fresh sample of the policy) encodes once.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        discrete: bool,
        hidden: int = 128,
        state_layers: int = 0,
        num_agent_types: int = 1,
    ):
        super().__init__()
        self.discrete = discrete
        self.action_dim = action_dim
        self.trunk = _StateTrunk(obs_dim, hidden, state_layers, num_agent_types)
        self.action_conv = NeighbourConv(hidden, edge_dim=action_dim)
        own = 0 if discrete else action_dim
        self.head = nn.Sequential(
            nn.Linear(2 * hidden + own, hidden), nn.ReLU(), nn.Linear(hidden, action_dim if discrete else 1)
        )

    def encode(self, x: Tensor, edge_index: Tensor, agent_type: OptTensor = None) -> CriticState:
        """The terms of :math:`Q` that depend on the state ``x`` (and its graph) alone."""
        h = self.trunk(x, edge_index, agent_type)
        src = self.action_conv.lin_src(h)  # before lin_dst, as NeighbourConv.forward
        return CriticState(h, self.action_conv.lin_dst(h), src)

    def from_state(
        self,
        state: CriticState,
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        own_action: OptTensor = None,
        neighbour_action: OptTensor = None,
    ) -> Tensor:
        """:math:`Q` from :meth:`encode`'s terms and the actions (as in :meth:`forward`)."""
        m = self.action_conv.from_node_terms(state.dst, state.src, edge_index, edge_attr, source_attr=neighbour_action)
        if self.discrete:
            z = self.head[0](torch.cat([state.h, m], dim=-1))
        else:
            if own_action is None:
                raise ValueError("continuous-action Q needs own_action")
            z = self.head[0](torch.cat([state.h, m, own_action], dim=-1))
        out = float32_output(self.head[2], F.relu(z))  # Q in float32 (also under autocast)
        return out if self.discrete else out.squeeze(-1)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        own_action: OptTensor = None,
        agent_type: OptTensor = None,
        neighbour_action: OptTensor = None,
    ) -> Tensor:
        """The neighbours' actions come as ``edge_attr`` (``[E, A]``, row ``e`` the action of edge ``e``'s
        source: :func:`neighbour_action_attr`) or, cheaper and the same function, as ``neighbour_action``:
        every agent's action features ``[N, A]``, which edge ``j -> i`` carries as :math:`a_j`."""
        return self.from_state(
            self.encode(x, edge_index, agent_type), edge_index, edge_attr, own_action, neighbour_action
        )


class TwinCriticState(NamedTuple):
    """:class:`CriticState` of each of the twin critics."""

    q1: CriticState
    q2: CriticState

    def detach(self) -> TwinCriticState:
        return TwinCriticState(self.q1.detach(), self.q2.detach())


class TwinGraphQ(nn.Module):
    """The two critics :math:`Q_{\\kappa^1}, Q_{\\kappa^2}` of the paper (after TD3); ``forward``
    returns both, stacked ``[2, ...]``; :meth:`encode` and :meth:`from_state` split it as
    :class:`GraphQNetwork` does."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.q1 = GraphQNetwork(*args, **kwargs)
        self.q2 = GraphQNetwork(*args, **kwargs)

    def encode(self, x: Tensor, edge_index: Tensor, agent_type: OptTensor = None) -> TwinCriticState:
        return TwinCriticState(self.q1.encode(x, edge_index, agent_type), self.q2.encode(x, edge_index, agent_type))

    def from_state(self, state: TwinCriticState, edge_index: Tensor, **actions) -> Tensor:
        return torch.stack(
            [self.q1.from_state(state.q1, edge_index, **actions), self.q2.from_state(state.q2, edge_index, **actions)]
        )

    def forward(self, *args, **kwargs) -> Tensor:
        return torch.stack([self.q1(*args, **kwargs), self.q2(*args, **kwargs)])


class GraphValueNetwork(nn.Module):
    r""":math:`V_\eta(s)_i`, a graph network over states: trunk, one :class:`NeighbourConv`, MLP head.
    Returns ``[N]``."""

    def __init__(self, obs_dim: int, hidden: int = 128, state_layers: int = 0, num_agent_types: int = 1):
        super().__init__()
        self.trunk = _StateTrunk(obs_dim, hidden, state_layers, num_agent_types)
        self.conv = NeighbourConv(hidden)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, edge_index: Tensor, agent_type: Tensor | None = None) -> Tensor:
        h = self.trunk(x, edge_index, agent_type)
        z = F.relu(self.head[0](torch.cat([h, self.conv(h, edge_index)], dim=-1)))
        return float32_output(self.head[2], z).squeeze(-1)  # V in float32 (also under autocast)
