r"""CoLight: graph attention over neighbouring intersections, trained with DQN (Wei et al., CIKM 2019).

The traffic-signal-control field's learned baseline (the one-hour CityFlow benchmark). One Q-network is shared by
every intersection ("index-free" parameter sharing); each intersection reads its neighbourhood through
multi-head attention. Written from the authors' released code, ``wingsweihua/colight`` at commit ``04440b7``
(Keras; read, not copied). Line numbers below are that commit's.

Network (``CoLight_agent.py``), per intersection :math:`i`:

- observation embedding, ``embed_layers`` layers of ``hidden`` units, ReLU each (``MLP``, ll. 168-181;
  ``MLP_layers=[32, 32]``, l. 395): :math:`h_i = \mathrm{MLP}(o_i)` (a per-type first layer for heterogeneous
  agents, as every baseline here);
- ``layers`` attention layers (``MultiHeadsAttModel``, ll. 187-242; ``CNN_layers=[[32, 32]]``, ``config.py``
  l. 310: one layer, value width 32, output width 32), each over the neighbourhood
  :math:`\mathcal N_i` of ``i`` *and* ``i`` itself, with ``heads`` heads :math:`m` of width ``head_dim``:

  .. math::
      e^m_{ij} = \mathrm{ReLU}(W^m_t h_i + b^m_t) \cdot \mathrm{ReLU}(W^m_s h_j + b^m_s),\qquad
      \alpha^m_{ij} = \frac{\exp e^m_{ij}}{\sum_{k \in \mathcal N_i \cup \{i\}} \exp e^m_{ik}}

  .. math::
      h'_i = \mathrm{ReLU}\Big(W_q \, \frac1M \sum_{m=1}^{M} \sum_{j \in \mathcal N_i \cup \{i\}}
             \alpha^m_{ij}\, \mathrm{ReLU}(W^m_c h_j + b^m_c) + b_q\Big)

  (query and key projections with bias and ReLU, ll. 215 and 222; the dot product unscaled, l. 230; the value
  projection, l. 236; the heads *averaged*, l. 239; one dense layer with ReLU after, l. 241). The paper's
  neighbourhood is the 5 geographically nearest intersections including itself (``TOP_K_ADJACENCY=5``,
  ``runexp.py`` l. 39; ``anon_env.py`` ll. 1310-1324); here it is the task's graph plus a self loop
  (``env.graph.kind: env``, the road graph: itself and its 2-4 adjacent intersections on a grid), through a
  PyG ``MessagePassing`` whose softmax runs over each receiver's incoming edges, so no weight reaches an
  intersection outside the neighbourhood;
- Q head: one linear layer, :math:`Q(o, \cdot) = W h^{(L)}_i + b` (``action_layer``, l. 474; no further
  dense layers, ``Output_layers=[]``, l. 398).

Every dense layer is initialised as Keras' ``random_normal`` (``kernel_initializer='random_normal'``:
:math:`\mathcal N(0, 0.05^2)` weights, zero biases) with ``init: random_normal``.

Loss: DQN's, mean over agents,

.. math::
    L(\theta) = \mathbb E\big[(Q_\theta(s, a_i)_i - y_i)^2\big],\qquad
    y_i = r_i + \gamma (1 - d_i) \max_{a' \in \mathcal A_i(s')} Q_{\bar\theta}(s', a')_i

with :math:`s'` read on its own graph through the target network (``prepare_Xs_Y``, ll. 367-379: the target
network ``q_network_bar`` on the next state's features and adjacency; the code has no termination flag, a
traffic episode ends on a time limit only, which bootstraps here too).

Exploration: :math:`\epsilon`-greedy (ll. 304-313), :math:`\epsilon = \max(0.8 \cdot 0.95^{\text{round}}, 0.2)`
(ll. 145-146; ``config.py`` ll. 325-327): it reaches the floor 0.2 after 27 of the 100 rounds
(``runexp.py`` l. 43), 27 % of the run. Here :math:`\epsilon` falls linearly from 0.8 to 0.2 over
``epsilon_decay_steps`` = 270 000 steps, written for the package's reference run of :math:`10^6` steps and
scaled to the run (:attr:`ipgnn.config.TrainConfig.schedule_scale`): 27 % of every run, as in the code.

What is shared and not CoLight's (the package's protocol, kept for every method; docs/algorithms.md lists
CoLight's own values): the update schedule (``train.update_every`` / ``gradient_steps``; CoLight fits the
network for up to 100 epochs of 20-transition minibatches on 1000 transitions sampled from the last 10 000
after every round of 4 one-hour episodes), the replay (capacity and batch), :math:`\gamma` (CoLight: 0.8),
the learning rate (CoLight: 0.001 with RMSprop), the reward scale (CoLight divides by 20) and the target
update (CoLight: the network of 5 rounds before; here Polyak ``algo.tau`` every
``algo.target_update_interval`` steps).

Options (``algo.options``), with defaults and sources (file:line of the authors' code):

==========================  ===============  =========================================================
``hidden``                  32               embedding and attention output width: ``MLP_layers=[32, 32]``
                                             (``CoLight_agent.py`` l. 395), ``CNN_layers=[[32, 32]]``
                                             (``config.py`` l. 310); null: ``model.hidden``
``embed_layers``            2                ``MLP_layers=[32, 32]``: two embedding layers
``layers``                  1                ``CNN_layers=[[32, 32]]``: one attention layer
``heads``                   1                ``CNN_heads=[1]*len(CNN_layers)`` (``CoLight_agent.py`` l. 400)
``head_dim``                32               ``dv=CNN_layer_size[0]`` = 32 (ll. 441, 310)
``epsilon_start``           0.8              ``config.py`` l. 325
``epsilon_end``             0.2              ``config.py`` l. 327 (``MIN_EPSILON``)
``epsilon_decay_steps``     270000           ×0.95 per round (l. 326) reaches 0.2 after 27 % of the run
``double_q``                false            the plain max (``CoLight_agent.py`` ll. 378-379)
``optimizer``               rmsprop_keras    ``RMSprop(lr=LEARNING_RATE)`` (ll. 480-487): Keras' rho 0.9,
                                             eps 1e-7; ``adam``: the package's shared optimiser
``init``                    random_normal    Keras' ``random_normal`` kernels, zero biases (ll. 177, 215,
                                             222, 236, 241, 474); ``default``: PyTorch's
==========================  ===============  =========================================================
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ipgnn.algos.dgn import with_self_loops
from ipgnn.algos.optim import make_optimizer
from ipgnn.algos.options import NoneType, require_choice, require_positive
from ipgnn.algos.qlearning import EPSILON_OPTIONS, QLearningAlgo
from ipgnn.algos.targets import td_target
from ipgnn.config import AlgoConfig, ModelConfig
from ipgnn.nn.attention import NeighbourhoodAttention
from ipgnn.nn.propagation import TypedEncoder
from ipgnn.replay import TransitionBatch

__all__ = ["CoLight", "CoLightAttention", "CoLightNetwork"]

KERAS_NORMAL_STD = 0.05  # keras.initializers.RandomNormal's default stddev ('random_normal')


class CoLightAttention(NeighbourhoodAttention):
    r"""One CoLight attention layer (see the module docstring): ``heads`` dot-product attentions of width
    ``head_dim`` over each node's incoming edges (the edge list must already hold the self loops), the heads'
    outputs averaged, then one linear layer + ReLU to ``out_channels``.

    Returns ``h'`` ``[N, out_channels]`` and, with ``return_attention_weights``, the attention ``[E, heads]``
    (row ``e`` is :math:`\alpha_{ij}` of edge ``j -> i``; each receiver's rows sum to 1 per head).
    """

    def __init__(self, in_channels: int, head_dim: int, heads: int, out_channels: int):
        super().__init__()  # scale 1: the authors' unscaled dot product (l. 230)
        self.heads, self.head_dim = heads, head_dim
        self.lin_query = nn.Linear(in_channels, heads * head_dim)  # agent_repr (l. 215)
        self.lin_key = nn.Linear(in_channels, heads * head_dim)  # neighbor_repr (l. 222)
        self.lin_value = nn.Linear(in_channels, heads * head_dim)  # neighbor_hidden_repr (l. 236)
        self.lin_out = nn.Linear(head_dim, out_channels)  # MLP_after_relation (l. 241)

    def forward(self, h: Tensor, edge_index: Tensor, return_attention_weights: bool = False):
        shape = (-1, self.heads, self.head_dim)
        q = F.relu(self.lin_query(h)).view(shape)
        k = F.relu(self.lin_key(h)).view(shape)
        v = F.relu(self.lin_value(h)).view(shape)
        agg = self.attend(edge_index, q, k, v)  # [N, H, C]
        out = F.relu(self.lin_out(agg.mean(1)))
        alpha = self.take_attention()
        return (out, alpha) if return_attention_weights else out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(heads={self.heads}, head_dim={self.head_dim})"


class CoLightNetwork(nn.Module):
    """Embedding MLP, ``layers`` :class:`CoLightAttention` layers and the linear Q head.

    ``forward`` returns ``q`` ``[N, A]``, the edge list with self loops it used, and each layer's attention
    ``[E, heads]``."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden: int = 32,
        embed_layers: int = 2,
        layers: int = 1,
        heads: int = 1,
        head_dim: int = 32,
        num_types: int = 1,
    ):
        super().__init__()
        self.encoder = TypedEncoder(obs_dim, hidden, num_types)
        self.embed = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(embed_layers - 1))
        self.convs = nn.ModuleList(CoLightAttention(hidden, head_dim, heads, hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, num_actions)

    def keras_init(self) -> None:
        """Keras' ``random_normal`` kernels (std 0.05) and zero biases for every dense layer (the code's)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, KERAS_NORMAL_STD)
                nn.init.zeros_(m.bias)

    def forward(
        self, x: Tensor, edge_index: Tensor, agent_type: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        ei = with_self_loops(edge_index, x.size(0))
        h = self.encoder(x, agent_type)
        for lin in self.embed:
            h = F.relu(lin(h))
        attention = []
        for conv in self.convs:
            h, alpha = conv(h, ei, return_attention_weights=True)
            attention.append(alpha)
        return self.head(h), ei, attention


class CoLight(QLearningAlgo):
    """CoLight: graph-attention Q-network shared by all intersections, DQN (see the module docstring)."""

    NAME = "colight"
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        "hidden": ((int, NoneType), 32),
        "embed_layers": (int, 2),
        "layers": (int, 1),
        "heads": (int, 1),
        "head_dim": (int, 32),
        **EPSILON_OPTIONS,
        "epsilon_start": (float, 0.8),
        "epsilon_end": (float, 0.2),
        "epsilon_decay_steps": (int, 270_000),
        "double_q": (bool, False),
        "optimizer": (str, "rmsprop_keras"),
        "init": (str, "random_normal"),
    }

    def __init__(self, spec: Any, model: ModelConfig, algo: AlgoConfig, num_agents: int):
        super().__init__(spec, algo, num_agents)
        o = self.opts
        net = CoLightNetwork(
            spec.obs_dim,
            spec.action_dim,
            hidden=o["hidden"] or model.hidden,
            embed_layers=o["embed_layers"],
            layers=o["layers"],
            heads=o["heads"],
            head_dim=o["head_dim"],
            num_types=spec.num_agent_types,
        )
        if o["init"] == "random_normal":
            net.keras_init()
        self.use_q_network(net)
        self.optimizers = {"q": make_optimizer(self.q.parameters(), algo.lr, o["optimizer"])}

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        super().check_options(opts, model)
        require_positive(opts, ["hidden", "embed_layers", "layers", "heads", "head_dim"], cls.NAME)
        require_choice(opts, "optimizer", ("rmsprop_keras", "adam"), cls.NAME)
        require_choice(opts, "init", ("random_normal", "default"), cls.NAME)

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Data | Batch, deterministic: bool = False) -> Tensor:
        """Greedy valid action per intersection, or :math:`\\epsilon`-greedy when exploring."""
        q, _, _ = self.q(obs.x, obs.edge_index, getattr(obs, "agent_type", None))
        return self.act_on_q(q, obs, deterministic)

    @torch.no_grad()
    def target(self, batch: TransitionBatch) -> Tensor:
        r""":math:`y_i = r_i + \gamma (1 - d_i) \max_{a' \text{ valid}} Q_{\bar\theta}(s', a')_i` ``[B*N]``, with
        :math:`s'` (features, graph, action mask) read through the target network."""
        nxt = batch.next_obs
        types = getattr(nxt, "agent_type", None)
        q_next = self.q_target(nxt.x, nxt.edge_index, types)[0]
        online = self.q(nxt.x, nxt.edge_index, types)[0] if self.opts["double_q"] else None
        v_next = self.next_value(q_next, online, getattr(nxt, "action_mask", None))
        return td_target(batch.reward, batch.terminated, v_next, self.cfg.gamma)

    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        r"""DQN's loss :math:`\mathbb E[(Q_\theta(s, a_i)_i - y_i)^2]` as ``q_loss``; the mean entropy of the last
        layer's attention (per intersection and head) is logged as ``attention_entropy``."""
        obs = batch.obs
        q, _, att = self.q(obs.x, obs.edge_index, getattr(obs, "agent_type", None))
        q_sa = q.gather(-1, batch.action.long().unsqueeze(-1)).squeeze(-1)
        y = self.target(batch)
        p = att[-1].detach()
        return {
            "q_loss": (q_sa - y).pow(2).mean(),
            "q_mean": q_sa.detach().mean(),
            "q_target": y.mean(),
            "attention_entropy": -torch.xlogy(p, p).sum() / (obs.x.size(0) * p.size(-1)),
        }
