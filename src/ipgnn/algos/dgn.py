r"""DGN: graph convolutional reinforcement learning (Jiang, Dun, Huang and Lu, ICLR 2020), a baseline of sec. 5.2.

Q-learning whose network is a graph network over the task's communication graph (k-NN or road graph):

- encoder: :math:`h_i = \mathrm{MLP}(o_i)` (two layers of width ``model.hidden``; a per-type first
  layer for heterogeneous agents);
- two convolutional layers with multi-head dot-product attention as the relation kernel, over agent
  ``i``'s neighbourhood :math:`\mathcal B_{+i} = \mathcal N(i) \cup \{i\}` (DGN's relation kernel,
  sec. 3):

  .. math::
      \alpha^m_{ij} = \frac{\exp\big(\tau\, W^m_Q h_i \cdot W^m_K h_j\big)}
                           {\sum_{k \in \mathcal B_{+i}} \exp\big(\tau\, W^m_Q h_i \cdot W^m_K h_k\big)},\qquad
      h'_i = \sigma\Big(\big\Vert_{m=1}^{M} \sum_{j \in \mathcal B_{+i}} \alpha^m_{ij} W^m_V h_j\Big)

  with :math:`\tau = 1/\sqrt{d_k}` (scaled dot product) and :math:`\sigma` one linear layer + ReLU;
  :class:`DGNConv` is a PyG ``MessagePassing`` whose softmax runs over each receiver's incoming edges
  (``torch_geometric.utils.softmax``), so no weight ever reaches an agent outside the neighbourhood;
- Q head: one linear layer on the concatenation :math:`[h_i \Vert h'_i \Vert h''_i]` of the encoder
  and both layers (DGN, sec. 3: the features of all layers are concatenated).

Loss (DGN, sec. 3, with its temporal relation regularisation), mean over agents:

.. math::
    L(\theta) = \mathbb E\Big[\big(Q_\theta(O_i, C, a_i) - y_i\big)^2\Big]
        + \lambda\, \mathbb E\Big[\tfrac1M \sum_m D_{KL}\big(\mathcal G^{\kappa}_m(O_i, C; \theta)
          \,\Vert\, \mathcal G^{\kappa}_m(O'_i, C; \bar\theta)\big)\Big],\qquad
    y_i = r_i + \gamma (1 - d_i) \max_{a' \in \mathcal A_i(s')} Q_{\bar\theta}(O'_i, C, a')

where :math:`\mathcal G^\kappa_m(O, C; \theta)` is the attention distribution of head ``m`` of the
last convolutional layer :math:`\kappa` over agent ``i``'s neighbourhood, at the current state with the
online network and at the next state with the target network (detached). As in DGN (sec. 3: the
agents' relations are kept unchanged over two successive timesteps when computing the Q-loss), the next
state is read with the *current* graph :math:`C` (``keep_graph: true``), which is also what makes the
two attention distributions share a support; ``keep_graph: false`` reads :math:`s'` on its own graph for
the Q target (the regulariser still uses :math:`C`).

Target network: Polyak :math:`\tau` (``algo.tau``; DGN's 0.01 is Table 2's). Exploration:
:math:`\epsilon`-greedy over the valid actions.

Options (``algo.options``), with defaults and sources (DGN = Jiang et al. 2020, hyper-parameter table of
the appendix):

==========================  =======  ===============================================================
``heads``                   8        DGN: 8 attention heads (head width ``model.hidden / heads``: 16 at 128)
``reg_coef``                0.03     DGN: λ = 0.03, the temporal relation regularisation
``keep_graph``              true     DGN sec. 3: the graph C of s is kept for s'
``epsilon_start``           0.6      DGN: ε = 0.6
``epsilon_end``             0.01     DGN's released code: ε floor 0.01
``epsilon_decay_steps``     100000   DGN's released code decays ε by ×0.996 every 100 steps
                                     (0.6 -> 0.01 in ~1e5 steps); here linearly, same horizon
``double_q``                false    DGN: the plain max
==========================  =======  ===============================================================
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import add_self_loops, remove_self_loops

from ipgnn.algos.options import require_positive
from ipgnn.algos.qlearning import EPSILON_OPTIONS, QLearningAlgo
from ipgnn.algos.targets import td_target
from ipgnn.config import AlgoConfig, ConfigError, ModelConfig
from ipgnn.nn.attention import NeighbourhoodAttention
from ipgnn.nn.propagation import TypedEncoder
from ipgnn.replay import TransitionBatch


def with_self_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    """The neighbourhood plus the agent itself, :math:`\\mathcal B_{+i}` (one self loop per agent)."""
    edge_index, _ = remove_self_loops(edge_index)
    edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
    return edge_index


class DGNConv(NeighbourhoodAttention):
    r"""DGN's convolutional layer: multi-head scaled dot-product attention over each agent's incoming
    edges (the edge list must already contain the self loops), then one linear layer + ReLU on the
    concatenated heads (see the module docstring).

    Returns ``h'`` ``[N, channels]`` and, with ``return_attention_weights``, the attention ``[E, heads]``
    (row ``e`` is :math:`\alpha_{ij}` of edge ``j -> i``; each receiver's rows sum to 1 per head).
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.channels, self.heads, self.head_dim = channels, heads, channels // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.lin_q = nn.Linear(channels, channels, bias=False)
        self.lin_k = nn.Linear(channels, channels, bias=False)
        self.lin_v = nn.Linear(channels, channels, bias=False)
        self.lin_out = nn.Linear(channels, channels)

    def forward(self, h: Tensor, edge_index: Tensor, return_attention_weights: bool = False):
        H, C = self.heads, self.head_dim
        q = self.lin_q(h).view(-1, H, C)
        k = self.lin_k(h).view(-1, H, C)
        v = self.lin_v(h).view(-1, H, C)
        agg = self.attend(edge_index, q, k, v)
        out = F.relu(self.lin_out(agg.reshape(-1, self.channels)))
        alpha = self.take_attention()
        return (out, alpha) if return_attention_weights else out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, heads={self.heads})"


class DGNNetwork(nn.Module):
    """Encoder, two :class:`DGNConv` layers, and the Q head on the concatenation of all three.

    ``forward`` returns ``q`` ``[N, A]``, the edge list with self loops it used, and the attention of
    each layer ``[E, heads]``."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int, heads: int, num_types: int = 1):
        super().__init__()
        self.encoder = TypedEncoder(obs_dim, hidden, num_types)
        self.encoder2 = nn.Linear(hidden, hidden)
        self.conv1 = DGNConv(hidden, heads)
        self.conv2 = DGNConv(hidden, heads)
        self.head = nn.Linear(3 * hidden, num_actions)

    def forward(
        self, x: Tensor, edge_index: Tensor, agent_type: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        ei = with_self_loops(edge_index, x.size(0))
        h0 = F.relu(self.encoder2(self.encoder(x, agent_type)))
        h1, a1 = self.conv1(h0, ei, return_attention_weights=True)
        h2, a2 = self.conv2(h1, ei, return_attention_weights=True)
        return self.head(torch.cat([h0, h1, h2], dim=-1)), ei, [a1, a2]


def attention_kl(p: Tensor, q: Tensor, num_nodes: int) -> Tensor:
    r""":math:`\frac{1}{N M}\sum_i \sum_m \sum_{j \in \mathcal B_{+i}} p^m_{ij} (\log p^m_{ij} - \log q^m_{ij})`:
    the KL divergence between two attention distributions on the same edges ``[E, M]``, mean over
    receivers and heads (``0 log 0 = 0``; both floored at 1e-12 inside the logarithms).

    The floor on ``p`` matters for the gradient, not the value: a weight that the softmax underflows to
    exactly 0 (scores ~100 apart, as unnormalised traffic counts give at N = 96) has
    :math:`\partial(p \log p)/\partial p = \log p + 1 = -\infty`, and the softmax's zero Jacobian times it is
    NaN. With the floor that derivative is finite and the product 0."""
    kl = p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())
    return kl.sum() / (num_nodes * p.size(-1))


class DGN(QLearningAlgo):
    """DGN with temporal relation regularisation (see the module docstring)."""

    NAME = "dgn"
    LOSSES: ClassVar[tuple[str, ...]] = ("loss",)
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        "heads": (int, 8),
        "reg_coef": (float, 0.03),
        "keep_graph": (bool, True),
        **EPSILON_OPTIONS,
        "epsilon_start": (float, 0.6),
        "epsilon_end": (float, 0.01),
        "epsilon_decay_steps": (int, 100_000),
        "double_q": (bool, False),
    }

    def __init__(self, spec: Any, model: ModelConfig, algo: AlgoConfig, num_agents: int):
        super().__init__(spec, algo, num_agents)
        self.use_q_network(
            DGNNetwork(spec.obs_dim, spec.action_dim, model.hidden, self.opts["heads"], spec.num_agent_types)
        )

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        super().check_options(opts, model)
        require_positive(opts, ["heads"], cls.NAME)
        require_positive(opts, ["reg_coef"], cls.NAME, allow_zero=True)
        if model.hidden % opts["heads"]:
            raise ConfigError(
                f"algo.options.heads: model.hidden ({model.hidden}) must be divisible by the "
                f"number of attention heads ({opts['heads']}) for '{cls.NAME}'"
            )

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Data | Batch, deterministic: bool = False) -> Tensor:
        q, _, _ = self.q(obs.x, obs.edge_index, getattr(obs, "agent_type", None))
        return self.act_on_q(q, obs, deterministic)

    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        r"""DGN's loss (sec. 3): the TD loss plus :math:`\lambda` times the relation KL (see the module
        docstring), as ``loss``; its two parts are logged as ``q_loss`` and ``relation_kl``."""
        obs, nxt = batch.obs, batch.next_obs
        types = getattr(obs, "agent_type", None)
        q, ei, att = self.q(obs.x, obs.edge_index, types)
        q_sa = q.gather(-1, batch.action.long().unsqueeze(-1)).squeeze(-1)
        mask = getattr(nxt, "action_mask", None)
        with torch.no_grad():
            # s' read with the graph C of s: the Q target (keep_graph) and the relation target
            q_next, ei_t, att_t = self.q_target(nxt.x, obs.edge_index, types)
            if not self.opts["keep_graph"]:
                q_next = self.q_target(nxt.x, nxt.edge_index, types)[0]
            online = None
            if self.opts["double_q"]:
                online = self.q(nxt.x, obs.edge_index if self.opts["keep_graph"] else nxt.edge_index, types)[0]
            v_next = self.next_value(q_next, online, mask)
            y = td_target(batch.reward, batch.terminated, v_next, self.cfg.gamma)
        q_loss = (q_sa - y).pow(2).mean()
        kl = attention_kl(att[-1], att_t[-1], obs.x.size(0))
        p = att[-1].detach()
        entropy = -torch.xlogy(p, p).sum() / (obs.x.size(0) * p.size(-1))
        return {
            "loss": q_loss + self.opts["reg_coef"] * kl,
            "q_loss": q_loss,
            "relation_kl": kl,
            "q_mean": q_sa.detach().mean(),
            "q_target": y.mean(),
            "attention_entropy": entropy,
        }
