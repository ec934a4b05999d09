r"""The intention propagation network :math:`\Lambda_\theta(\mathbf{a} \mid s)` (sec. 4.2, Fig. 1, app. B.2).

Each agent embeds its policy (its *intention*) :math:`\tilde\mu_i`, sends it to its neighbours and
updates it from theirs, :math:`M` times, with one shared operator :math:`\tilde{\mathcal T}` (eq. 6,
structure2vec style). The final features concatenate :math:`\tilde\mu_i^0, \dots, \tilde\mu_i^M` and one
fully connected layer gives :math:`q_i` (eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import softmax

from ipgnn.graphs import expand_hops
from ipgnn.nn.distributions import MaskedCategorical, TanhGaussian
from ipgnn.nn.utils import float32_output


class TypedEncoder(nn.Module):
    r"""Per-type state encoders into one latent space (app. B.2, heterogeneous agents):

    .. math::
        h_i = \mathrm{ReLU}(W_{\tau(i)} s_i + b_{\tau(i)})

    where :math:`\tau(i)` is agent ``i``'s type. With one type this is a single linear layer.
    The loop runs over *types* (a handful), never over agents.
    """

    def __init__(self, in_channels: int, out_channels: int, num_types: int = 1):
        super().__init__()
        self.num_types = num_types
        self.lins = nn.ModuleList(nn.Linear(in_channels, out_channels) for _ in range(num_types))
        self.out_channels = out_channels

    def reset_parameters(self) -> None:
        for lin in self.lins:
            lin.reset_parameters()

    def forward(self, x: Tensor, agent_type: OptTensor = None) -> Tensor:
        if self.num_types == 1 or agent_type is None:
            return F.relu(self.lins[0](x))
        out = x.new_empty(x.size(0), self.out_channels)
        for t, lin in enumerate(self.lins):
            sel = agent_type == t
            out[sel] = F.relu(lin(x[sel]))
        return out


class IntentionPropagationConv(MessagePassing):
    r"""One application of the shared update operator :math:`\tilde{\mathcal T}` of eq. (6), with
    attention over neighbours (app. B.2):

    .. math::
        \tilde\mu_i^{m} = \mathrm{ReLU}\Big(W_1 h_i + W_2 \big\Vert_{k=1}^{H}
            \sum_{j \in \mathcal N(i)} \alpha_{ij}^{m,k}\, W_v^k \tilde\mu_j^{m-1}\Big)

    where :math:`h_i` is the encoded state of agent ``i`` and :math:`W_v^k` (``d/H x d``) head ``k``'s value
    projection of the neighbour's whole intention, as in GAT and the Transformer. With one head the value
    projection would be a second linear map in a row with :math:`W_2`, so it is left out
    (:math:`W_v = I`: the message is :math:`\tilde\mu_j^{m-1}` itself and the layer's parameters are those of
    earlier versions). The attention coefficients are GATv2's (Brody et al., 2022):

    .. math::
        \alpha_{ij}^{m,k} = \mathrm{softmax}_{j \in \mathcal N(i)}\Big(
            \mathbf a_k^\top \mathrm{LeakyReLU}\big(W_s^k \tilde\mu_j^{m-1} + W_t^k \tilde\mu_i^{m-1}\big)\Big).

    With no neighbour messages the operator gives the independent decision
    :math:`\tilde\mu_i^0 = \mathrm{ReLU}(W_1 h_i)` (:meth:`initial`). This is the paper's
    :math:`\tilde\mu_i = \sigma(W_1 s + W_2 \sum_j \tilde\mu_j)` with the sum replaced by attention.

    Args:
        channels (int): width ``d`` of :math:`h` and :math:`\tilde\mu`.
        heads (int): attention heads ``H``; ``d`` must be divisible by ``H``. (default: 1)
        negative_slope (float): LeakyReLU slope of the attention scores. (default: 0.2)

    Shapes:
        - **input:** intentions :math:`(|\mathcal V|, d)`, states :math:`(|\mathcal V|, d)`,
          edge indices :math:`(2, |\mathcal E|)`
        - **output:** :math:`(|\mathcal V|, d)`, or with ``return_attention_weights=True`` also
          ``(edge_index, alpha)`` with alpha :math:`(|\mathcal E|, H)`
    """

    def __init__(self, channels: int, heads: int = 1, negative_slope: float = 0.2):
        super().__init__(aggr="sum", node_dim=0)
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.channels = channels
        self.heads = heads
        self.head_dim = channels // heads
        self.negative_slope = negative_slope
        self.lin_state = nn.Linear(channels, channels)  # W_1
        self.lin_msg = nn.Linear(channels, channels, bias=False)  # W_2
        self.lin_src = nn.Linear(channels, channels, bias=False)  # W_s
        self.lin_dst = nn.Linear(channels, channels)  # W_t
        # W_v = [W_v^1; ...; W_v^H]: every head reads the whole intention (none with one head, see above)
        self.lin_value = nn.Linear(channels, channels, bias=False) if heads > 1 else None
        self.att = nn.Parameter(torch.empty(1, heads, self.head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin_state, self.lin_msg, self.lin_src, self.lin_dst, self.lin_value):
            if lin is not None:
                lin.reset_parameters()
        nn.init.xavier_uniform_(self.att)

    def initial(self, h: Tensor) -> Tensor:
        r""":math:`\tilde\mu^0 = \mathrm{ReLU}(W_1 h)`: every agent decides alone."""
        return F.relu(self.lin_state(h))

    def forward(
        self,
        mu: Tensor,
        h: Tensor,
        edge_index: Adj,
        return_attention_weights: bool = False,
        state_term: OptTensor = None,
    ):
        """``state_term``: :math:`W_1 h + b` when the caller already has it (it is the same in every round, so
        :class:`IntentionPropagationNetwork` computes it once for its ``M`` rounds); ``h`` is then unused."""
        H, C = self.heads, self.head_dim
        query = self.lin_dst(mu).view(-1, H, C)
        key = self.lin_src(mu).view(-1, H, C)
        value = (mu if self.lin_value is None else self.lin_value(mu)).view(-1, H, C)
        agg = self.propagate(edge_index, key=key, query=query, value=value)
        state_term = self.lin_state(h) if state_term is None else state_term
        out = F.relu(state_term + self.lin_msg(agg.reshape(-1, self.channels)))
        if return_attention_weights:
            alpha = self._alpha
            self._alpha = None
            return out, (edge_index, alpha)
        self._alpha = None
        return out

    # typing.Optional, not `X | None`: PyG's Inspector.type_repr (2.8) fails on types.UnionType when it
    # writes the jittable propagate from this signature
    def message(
        self,
        key_j: Tensor,
        query_i: Tensor,
        value_j: Tensor,
        index: Tensor,
        ptr: OptTensor,
        size_i: Optional[int],  # noqa: UP045
    ) -> Tensor:
        pre = key_j + query_i  # fresh [E, H, C]: safe to activate in place (saves one edge-sized tensor)
        # a_k^T LeakyReLU(.) as a matrix product: no [E, H, C] product tensor (fwd or bwd)
        score = torch.einsum("ehc,hc->eh", F.leaky_relu_(pre, self.negative_slope), self.att[0])  # [E, H]
        alpha = softmax(score.float(), index, ptr, size_i)  # float32 even under bf16 autocast ([E, H]: cheap)
        self._alpha = alpha
        return value_j * alpha.unsqueeze(-1).to(value_j.dtype)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, heads={self.heads})"


@dataclass
class PolicyOutput:
    """What :class:`IntentionPropagationNetwork` returns for a graph (or batch of graphs).

    ``dist`` is :math:`q_i` for every agent; ``intentions[m]`` is :math:`\\tilde\\mu^m` ``[N, d]`` for
    ``m = 0..M``; ``attention[m-1]`` is ``(edge_index, alpha [E, H])`` of round ``m``.
    """

    dist: MaskedCategorical | TanhGaussian
    intentions: list[Tensor] = field(default_factory=list)
    attention: list[tuple[Tensor, Tensor]] = field(default_factory=list)


class IntentionPropagationNetwork(nn.Module):
    r"""The policy :math:`\Lambda_\theta`: encoder, ``M`` rounds of :class:`IntentionPropagationConv`
    with shared weights, then one fully connected layer on the concatenation of all rounds:

    .. math::
        q_i(\cdot \mid s) = g\big(W_o [\tilde\mu_i^0 \Vert \tilde\mu_i^1 \Vert \cdots \Vert \tilde\mu_i^M] + b_o\big)

    with :math:`g` a masked softmax (discrete actions) or the mean and log-std of a tanh-squashed
    Gaussian (continuous actions). Eq. (5) writes the readout as a function of the neighbours'
    :math:`\tilde\mu_j^M`; following app. B.2 ("the final feature of each node is concatenated by the
    embedding features of h layers") it reads agent ``i``'s own rounds, each of which
    (:math:`m \ge 1`) is already a function of the neighbours' :math:`\tilde\mu_j^{m-1}`.

    Args:
        obs_dim: per-agent observation size.
        action_dim: number of discrete actions, or the size of a continuous action.
        discrete: which of the two.
        hidden: width ``d`` (Table 2: 128).
        rounds: ``M``, propagation rounds.
        hops: each round reads the ``hops``-hop neighbourhood of the communication graph.
        heads: attention heads.
        num_agent_types: number of per-type encoders.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        discrete: bool,
        hidden: int = 128,
        rounds: int = 2,
        hops: int = 1,
        heads: int = 1,
        num_agent_types: int = 1,
    ):
        super().__init__()
        self.discrete = discrete
        self.rounds = rounds
        self.hops = hops
        self.encoder = TypedEncoder(obs_dim, hidden, num_agent_types)
        self.conv = IntentionPropagationConv(hidden, heads)
        self.head = nn.Linear((rounds + 1) * hidden, action_dim if discrete else 2 * action_dim)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.conv.reset_parameters()
        self.head.reset_parameters()

    def forward(
        self, data: Data | Batch, return_intentions: bool = False, return_attention: bool = False
    ) -> PolicyOutput:
        x, edge_index = data.x, data.edge_index
        edge_index = expand_hops(edge_index, x.size(0), self.hops)
        h = self.encoder(x, getattr(data, "agent_type", None))
        state_term = self.conv.lin_state(h)  # W_1 h + b: the same in every round, computed once
        mu = F.relu(state_term)  # the operator's initial(h)
        mus, attention = [mu], []
        for _ in range(self.rounds):
            if return_attention:
                mu, att = self.conv(mu, h, edge_index, return_attention_weights=True, state_term=state_term)
                attention.append(att)
            else:
                mu = self.conv(mu, h, edge_index, state_term=state_term)
            mus.append(mu)
        out = float32_output(self.head, torch.cat(mus, dim=-1))  # logits in float32 (also under autocast)
        if self.discrete:
            dist = MaskedCategorical(out, getattr(data, "action_mask", None))
        else:
            mean, log_std = out.chunk(2, dim=-1)
            dist = TanhGaussian(mean, log_std)
        return PolicyOutput(dist, mus if return_intentions else [], attention)
