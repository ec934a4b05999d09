r"""MADDPG, MADDPG with shuffling (MADDPG-S) and PIC: centralised critics, decentralised deterministic actors.

All three train deterministic actors :math:`\mu_\phi(o_i)` (one network shared by all agents, as in
PIC's code; a per-type first layer for heterogeneous agents) with critics that see every agent, and
differ in the critic (sec. 5.2 / app. B.1 of the IP paper):

- **MADDPG** (Lowe et al., NeurIPS 2017): one critic per agent,
  :math:`Q_i(\mathbf x, a_1, \dots, a_N)` over the concatenation of all agents' observations and actions
  in the fixed agent order, :math:`[o_1, a_1, o_2, a_2, \dots, o_N, a_N]` (Lowe et al. concatenate all
  observations and then all actions: a fixed permutation of the input, the same function class for an
  MLP). The ``N`` critics are one module of batched per-agent weights (first layer
  ``[N*(obs_dim+act_dim), N, hidden]``, then ``[N, hidden, hidden]`` and ``[N, hidden, 1]`` applied
  with one matmul / ``baddbmm`` each: no Python loop over agents). The input grows with N, so the
  first layer has :math:`N^2 (\mathrm{obs\_dim} + \mathrm{act\_dim})\,\mathrm{hidden}` weights:
  :meth:`MADDPG.check` computes parameters + activations from the config and refuses, with the figure,
  what cannot fit (e.g. N = 1225).
- **MADDPG-S**: MADDPG whose critic input order is shuffled (app. B.1, following Liu et al. 2019), the
  permutation applied to observations *and* actions together, so each pair :math:`(o_j, a_j)` stays in
  one slot. ``shuffle: minibatch`` (default) is PIC's released code (``--shuffle shuffle`` with its
  ``mlp`` critic): **one** centralised critic :math:`Q(\mathbf x_\pi, \mathbf a_\pi)` over all N slots,
  two ReLU layers and a value layer initialised at a tenth of the default scale (PIC's ``MlpNet``),
  trained on the team reward :math:`R` and episode-level termination :math:`D` as PIC's team critic,
  with **one** random permutation :math:`\pi` of the agents per minibatch, the same for :math:`s`,
  :math:`s'`, the replay actions, the target actions and the policy's actions. ``shuffle: sample`` is
  this package's earlier per-agent variant: one critic per agent trained on its own reward, a fresh
  permutation per sample, each agent's own pair pinned in the first slot (critic ``i`` must know which
  slot is its own), the same permutation for :math:`s` and :math:`s'` of a sample. Every MADDPG-S
  figure in the README uses ``minibatch``.
- **PIC** (Liu, Wang, Hu, Lin and Sha, CoRL 2019, "PIC: Permutation Invariant Critic"): the critic is
  a graph network over the fully connected agent graph, node features :math:`x_j = o_j \Vert a_j`
  (with a one-hot of the agent's type appended when there are several types), two layers
  :math:`h^{l+1}_i = \tfrac1N\big(\mathrm{ReLU}(W^l_s h^l_i + b^l_s)
  + \mathrm{ReLU}(W^l_n \tfrac{1}{N}\sum_{j \ne i} h^l_j + \tfrac{N-1}{N} b^l_n)\big)`
  (PIC's released code's ``GraphNet``: a self term plus the adjacency :math:`(\mathbf 1 - I)/N` applied to
  the neighbour map, the layer's output divided by N; the sum over the others is computed as
  ``sum - self``, :math:`O(N)` per agent instead of :math:`O(N^2)` edges; ``aggregation: mean`` is the
  earlier form of this package, the mean over the others and no division), then pooling over agents (max,
  PIC's ``gcn_max``, or mean). Permuting the agents leaves its value unchanged. **Per-agent rewards**
  (``critic_output``): ``team`` (default, PIC's paper) is one value :math:`Q(s, \mathbf a)` of the pooled
  features trained on the team reward :math:`R = \sum_i r_i`, with episode-level termination :math:`D` (every
  agent terminated); ``agent`` gives each agent
  :math:`Q_i = w^\top [h_i \Vert \mathrm{pool}(h)] + b`, trained on its own :math:`r_i`:
  permutation *equivariant* (permuting the agents permutes the values), and :math:`\sum_i Q_i` is the
  team's value.

Losses, one gradient step of actor and critic together (critic frozen in the actor's loss, every target
detached), means over the minibatch:

- critic (Lowe et al. eq. 6): :math:`L(\omega_i) = \mathbb E\big[(Q_i(\mathbf x, a_1..a_N) - y_i)^2\big]`,
  :math:`y_i = r_i + \gamma (1 - d_i)\, \bar Q_i(\mathbf x', \bar\mu(o'_1), \dots, \bar\mu(o'_N))`
  with the target actor's actions at :math:`s'` (for PIC ``team``: one :math:`Q` and :math:`R, D`);
- actor (Lowe et al. eq. 5, the deterministic policy gradient with the other agents' actions from the
  replay): :math:`J(\phi) = -\mathbb E\big[Q_i(\mathbf x, a_1, .., \mu_\phi(o_i), .., a_N)\big] +
  c\,\mathbb E[z_i^2]` where :math:`z_i` are the actor's pre-activation outputs (the logit regulariser of
  Lowe et al.'s and PIC's code, ``policy_reg``). For MADDPG's per-agent critics every agent's own
  action is substituted at once, exactly and cheaply: the first layer is linear, so substituting
  :math:`a_i` in critic ``i`` adds :math:`(\mu(o_i) - a_i) W_i^{(a_i)}` to its pre-activation. PIC, whose
  critic is not linear in one agent's action, evaluates :math:`Q` at every agent's current action
  (as PIC's code does): :math:`J(\phi) = -\mathbb E[Q(\mathbf x, \mu(o_1), \dots, \mu(o_N))]` (``team``)
  or :math:`-\mathbb E[\tfrac1N\sum_i Q_i(\cdot)]` (``agent``);
- targets: :math:`\bar\phi \leftarrow \tau\phi + (1-\tau)\bar\phi`, same for the critics (Table 2 /
  Lowe et al.: :math:`\tau = 0.01`), every ``algo.target_update_interval`` gradient steps.

Actions: **discrete** tasks use the Gumbel-softmax (Lowe et al. sec. 4 / app.; Jang et al. 2017): the
actor outputs logits (invalid actions masked), the environment gets a sample of
:math:`\mathrm{softmax}(z)` (the Gumbel-max trick) and the greedy policy the argmax. In the losses the
current and target actors' actions are Gumbel-softmax samples :math:`\mathrm{softmax}((z + g)/T)`,
either (``critic_actions: straight_through``, default) one-hot forward with the relaxed gradient
backward, or (``soft``) the relaxed vectors themselves, as Lowe et al.'s and PIC's code feed their
critics. The two codes can do that consistently because their particle environments execute the soft
vector as a continuous force, so their replay holds soft vectors too; this package's environments
execute a discrete action and the replay holds its one-hot, so the critic is trained on one-hot
vectors, and the straight-through sample keeps the target and policy actions on those same vertices.
The README gives the measured comparison. **Continuous** tasks: :math:`a = \tanh(z)`, explored with Gaussian
noise of standard deviation ``exploration_noise`` (clipped to [-1, 1]).

Options (``algo.options``), defaults and sources:

=====================  ==================  =============================================================
``hidden``             MADDPG: 64;         Lowe et al. app.: two-layer ReLU MLPs of 64 units; MADDPG-S and
                       others: null        PIC: ``model.hidden`` (PIC's code: 128 = Table 2)
``gumbel_temperature`` 1.0                 Lowe et al.'s code (temperature-1 Gumbel-softmax)
``critic_actions``     straight_through    or soft (Lowe et al.'s and PIC's code; see above)
``policy_reg``         0.001               Lowe et al.'s and PIC's code: 1e-3 * mean(logits^2)
``exploration_noise``  0.1                 continuous only: Gaussian std (TD3's, Fujimoto et al. 2018;
                                           MADDPG's paper has only Gumbel-softmax actions)
``critic_output``      team                PIC only: team (PIC's paper) or agent (per-agent rewards)
``pool``               max                 PIC only: PIC's code ``gcn_max``; or mean
``team_reward``        sum                 PIC and MADDPG-S minibatch team critic: R = sum_i r_i (mean: / N)
``shuffle``            minibatch           MADDPG-S only: PIC's code (minibatch) or sample (see above)
``aggregation``        code                PIC only: PIC's code's layer, ``(ReLU(A(W_n h + b_n)) + ReLU(W_s h +
                                           b_s)) / N`` with ``A = (1 - I) / N``
                                           (:meth:`PermutationInvariantCritic.code_layer`);
                                           mean: the formula above, the mean over the others and no ``/ N``
``actor_out_scale``    MADDPG: 1.0;        PIC's code scales the actor's output layer by 0.1 at
                       others: 0.1         initialisation (its MADDPG-S too); Lowe et al.'s does not
``next_actor``         MADDPG: target;     the actor whose actions at s' enter the critic target: Lowe et
                       others: online      al.'s target actor, or PIC's code's current actor (its
                                           ``actor_target`` is updated but never read)
=====================  ==================  =============================================================
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ipgnn.algos.base import Algorithm
from ipgnn.algos.exploration import gumbel_onehot, masked_logits
from ipgnn.algos.memory import gib
from ipgnn.algos.optim import make_optimizer, optimizer_state_factor
from ipgnn.algos.options import NoneType, require_choice, require_positive
from ipgnn.algos.targets import td_target, team_targets
from ipgnn.config import AlgoConfig, ModelConfig
from ipgnn.nn.distributions import MaskedCategorical
from ipgnn.nn.mlp import BatchedLinear, TypedMLP
from ipgnn.nn.utils import frozen
from ipgnn.replay import TransitionBatch


class PerAgentCritics(nn.Module):
    r"""``N`` MLP critics :math:`Q_i` (two hidden layers) with batched per-agent weights.

    ``per_critic_input=False`` (MADDPG): every critic reads the same input ``x`` ``[B, K]`` and the first
    layer is one matmul with a weight ``[K, N, H]``. ``True`` (MADDPG-S): critic ``i`` reads its own
    input ``x[i]`` (``[N, B, K]``) with a weight ``[N, K, H]`` (one ``baddbmm``). ``K = N * slot`` with
    ``slot = obs_dim + act_dim``; slot ``s`` of the input is ``[o, a]`` of one agent.
    """

    def __init__(self, num_agents: int, obs_dim: int, act_dim: int, hidden: int, per_critic_input: bool):
        super().__init__()
        self.n, self.obs_dim, self.act_dim, self.hidden = num_agents, obs_dim, act_dim, hidden
        self.slot = obs_dim + act_dim
        self.in_features = num_agents * self.slot
        self.per_critic_input = per_critic_input
        shape = (num_agents, self.in_features, hidden) if per_critic_input else (self.in_features, num_agents, hidden)
        self.w1 = nn.Parameter(torch.empty(shape))
        self.b1 = nn.Parameter(torch.empty(num_agents, hidden))
        self.l2 = BatchedLinear(num_agents, hidden, hidden)
        self.l3 = BatchedLinear(num_agents, hidden, 1)
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.w1, -bound, bound)
        nn.init.uniform_(self.b1, -bound, bound)

    @staticmethod
    def num_params(num_agents: int, slot: int, hidden: int) -> int:
        n, h = num_agents, hidden
        return n * (n * slot * h + h) + n * (h * h + h) + n * (h + 1)

    def first_layer(self, x: Tensor) -> Tensor:
        """Pre-activations of the first layer of every critic, ``[N, B, H]``."""
        if self.per_critic_input:
            return torch.baddbmm(self.b1.unsqueeze(1), x, self.w1)
        b = x.size(0)
        pre = (x @ self.w1.view(self.in_features, -1)).view(b, self.n, self.hidden)
        return pre.transpose(0, 1) + self.b1.unsqueeze(1)

    def own_action_weights(self, own_slot: int | None) -> Tensor:
        """:math:`W_i^{(a_i)}` ``[N, act_dim, H]``: critic ``i``'s first-layer rows that read agent ``i``'s
        action, in slot ``i`` (``own_slot=None``, fixed order) or in slot ``own_slot`` (MADDPG-S: 0)."""
        rows = torch.arange(self.act_dim, device=self.w1.device) + self.obs_dim
        if own_slot is not None:
            assert self.per_critic_input
            return self.w1[:, own_slot * self.slot + rows, :]
        agents = torch.arange(self.n, device=self.w1.device)
        r = (agents * self.slot).view(-1, 1) + rows.view(1, -1)  # [N, act_dim]
        return self.w1[r, agents.view(-1, 1).expand_as(r)]  # [N, act_dim, H]

    def rest(self, pre: Tensor, detach: bool = False) -> Tensor:
        """From first-layer pre-activations ``[N, B, H]`` to the values ``[N, B]``."""
        h = F.relu(self.l2(F.relu(pre), detach))
        return self.l3(h, detach).squeeze(-1)


class TeamMLPCritic(nn.Module):
    r"""One centralised critic :math:`Q(\mathbf x, \mathbf a)` over the agents' slots ``[o_j, a_j]``
    (PIC's code's ``MlpNet``, the critic of its MADDPG-S): two ReLU layers of ``hidden`` units and a
    value layer initialised at a tenth of the default scale.

    ``forward(x [B, N, slot]) -> [B]``; the caller orders the slots."""

    def __init__(self, num_agents: int, slot: int, hidden: int):
        super().__init__()
        self.l1, self.l2 = nn.Linear(num_agents * slot, hidden), nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.value.weight.mul_(0.1)
            self.value.bias.mul_(0.1)

    @staticmethod
    def num_params(num_agents: int, slot: int, hidden: int) -> int:
        return num_agents * slot * hidden + hidden + hidden * hidden + hidden + hidden + 1

    def forward(self, x: Tensor) -> Tensor:
        return self.value(F.relu(self.l2(F.relu(self.l1(x.flatten(1)))))).squeeze(-1)


class PermutationInvariantCritic(nn.Module):
    """PIC's graph critic over the fully connected agent graph (see the module docstring).

    ``forward(x [B, N, F]) -> [B]`` (``team``) or ``[B, N]`` (``agent``)."""

    def __init__(self, in_dim: int, hidden: int, output: str = "team", pool: str = "max", aggregation: str = "code"):
        super().__init__()
        self.output, self.pool, self.aggregation = output, pool, aggregation
        self.self1, self.nbr1 = nn.Linear(in_dim, hidden), nn.Linear(in_dim, hidden)
        self.self2, self.nbr2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden if output == "team" else 2 * hidden, 1)
        with torch.no_grad():  # PIC's code: the value layer starts at a tenth of the default scale
            self.out.weight.mul_(0.1)
            self.out.bias.mul_(0.1)

    @staticmethod
    def mean_of_others(h: Tensor) -> Tensor:
        """:math:`\\frac{1}{N-1}\\sum_{j \\ne i} h_j` for every ``i`` (zeros when N = 1)."""
        n = h.size(1)
        if n == 1:
            return torch.zeros_like(h)
        return (h.sum(1, keepdim=True) - h) / (n - 1)

    @staticmethod
    def code_layer(h: Tensor, self_lin: nn.Linear, nbr_lin: nn.Linear) -> Tensor:
        r"""PIC's code's layer (``GraphNet``): :math:`\big(\mathrm{ReLU}(A (W_n h + b_n)) + \mathrm{ReLU}(W_s h_i
        + b_s)\big) / N` with the adjacency :math:`A = (\mathbf 1 - I) / N`, i.e. the neighbour term
        :math:`W_n \tfrac1N \sum_{j \ne i} h_j + \tfrac{N-1}{N} b_n`, computed in :math:`O(N)` per agent."""
        n = h.size(1)
        others = (h.sum(1, keepdim=True) - h) / n
        nbr = F.linear(others, nbr_lin.weight, nbr_lin.bias * ((n - 1) / n))
        return (F.relu(nbr) + F.relu(self_lin(h))) / n

    def forward(self, x: Tensor) -> Tensor:
        if self.aggregation == "code":
            h = self.code_layer(self.code_layer(x, self.self1, self.nbr1), self.self2, self.nbr2)
        else:
            h = F.relu(self.self1(x)) + F.relu(self.nbr1(self.mean_of_others(x)))
            h = F.relu(self.self2(h)) + F.relu(self.nbr2(self.mean_of_others(h)))
        pooled = h.amax(1) if self.pool == "max" else h.mean(1)  # [B, H]
        if self.output == "team":
            return self.out(pooled).squeeze(-1)
        return self.out(torch.cat([h, pooled.unsqueeze(1).expand_as(h)], -1)).squeeze(-1)


class _CentralisedActorCritic(Algorithm):
    """Actors, action handling, and the terms of the losses shared by MADDPG, MADDPG-S and PIC."""

    NAME = "maddpg"
    LOSSES: ClassVar[tuple[str, ...]] = ("q_loss", "policy_loss")
    has_centralized_critic: ClassVar[bool] = True
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        "hidden": ((int, NoneType), None),
        "gumbel_temperature": (float, 1.0),
        "critic_actions": (str, "straight_through"),
        "policy_reg": (float, 1e-3),
        "exploration_noise": (float, 0.1),
        "actor_out_scale": (float, 1.0),
        "next_actor": (str, "target"),
    }

    def __init__(self, spec: Any, model: ModelConfig, algo: AlgoConfig, num_agents: int):
        super().__init__(spec, algo, num_agents)
        self.hidden = self.opts["hidden"] or model.hidden
        self.actor = TypedMLP(spec.obs_dim, self.hidden, spec.action_dim, 2, spec.num_agent_types)
        with torch.no_grad():  # PIC's code: the actor's output layer starts at a tenth of the default scale
            self.actor.out.weight.mul_(self.opts["actor_out_scale"])
            self.actor.out.bias.mul_(self.opts["actor_out_scale"])
        self.add_target("actor")
        self.critic = self.build_critic(spec, num_agents)
        self.add_target("critic")
        self.optimizers = {
            "actor": make_optimizer(self.actor.parameters(), algo.policy_lr or algo.lr),
            "critic": make_optimizer(self.critic.parameters(), algo.critic_lr or algo.lr),
        }
        self.grad_groups = {"actor": self.actor, "critic": self.critic}

    @abstractmethod
    def build_critic(self, spec: Any, num_agents: int) -> nn.Module:
        """The critic network (built after the actor and its target: the order of the random draws)."""

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        require_positive(opts, ["hidden", "gumbel_temperature", "actor_out_scale"], cls.NAME)
        require_positive(opts, ["policy_reg", "exploration_noise"], cls.NAME, allow_zero=True)
        require_choice(opts, "critic_actions", ("straight_through", "soft"), cls.NAME)
        require_choice(opts, "next_actor", ("target", "online"), cls.NAME)

    # ----------------------------------------------------------------------------------------------
    def policy_actions(self, raw: Tensor, mask: Tensor | None) -> Tensor:
        """Differentiable actions for the losses: Gumbel-softmax samples (discrete; straight-through
        one-hots or the relaxed vectors, ``critic_actions``) or :math:`\\tanh(z)` (continuous)."""
        if self.spec.discrete:
            return gumbel_onehot(
                masked_logits(raw, mask),
                self.opts["gumbel_temperature"],
                hard=self.opts["critic_actions"] == "straight_through",
            )
        return torch.tanh(raw)

    @torch.no_grad()
    def act(self, obs: Data | Batch, deterministic: bool = False) -> Tensor:
        """Discrete: a sample of :math:`\\mathrm{softmax}(z_i)` over valid actions (the Gumbel-max trick),
        or the argmax. Continuous: :math:`\\tanh(z_i)` plus Gaussian noise, clipped to [-1, 1]."""
        raw = self.actor(obs.x, getattr(obs, "agent_type", None))
        if not deterministic:
            self.count_steps(obs)
        if self.spec.discrete:
            dist = MaskedCategorical(raw, getattr(obs, "action_mask", None))
            return dist.greedy() if deterministic else dist.sample()
        a = torch.tanh(raw)
        if deterministic or self.opts["exploration_noise"] == 0:
            return a
        return (a + self.opts["exploration_noise"] * torch.randn_like(a)).clamp(-1.0, 1.0)

    def views(self, batch: TransitionBatch) -> dict[str, Any]:
        """The minibatch as ``[B, N, ...]`` tensors, with the current and target actors' actions."""
        n = self.num_agents
        obs, nxt = batch.obs, batch.next_obs
        b = obs.x.size(0) // n
        raw = self.actor(obs.x, getattr(obs, "agent_type", None))
        a_pi = self.policy_actions(raw, getattr(obs, "action_mask", None))
        with torch.no_grad():  # a' = mu(o') of the target actor (Lowe et al.) or the current one (PIC's code)
            next_actor = self.actor if self.opts["next_actor"] == "online" else self.actor_target
            raw_next = next_actor(nxt.x, getattr(nxt, "agent_type", None))
            a_next = self.policy_actions(raw_next, getattr(nxt, "action_mask", None))
        return {
            "b": b,
            "o": obs.x.view(b, n, -1),
            "o2": nxt.x.view(b, n, -1),
            "raw": raw,
            "a_data": self.action_features(batch.action).view(b, n, -1),
            "a_pi": a_pi.view(b, n, -1),
            "a_next": a_next.view(b, n, -1),
            "r": batch.reward.view(b, n),
            "d": batch.terminated.view(b, n),
        }

    def actor_critic_terms(self, q: Tensor, y: Tensor, q_pi: Tensor, raw: Tensor) -> dict[str, Tensor]:
        r"""The loss terms from the critic's values ``q`` of the replayed actions, their targets ``y`` and the
        critic's values ``q_pi`` of the policy's actions (Lowe et al. eq. 6 and 5):
        :math:`L(\omega) = \mathbb E[(Q - y)^2]` (``q_loss``) and
        :math:`J(\phi) = -\mathbb E[Q^\pi] + c\,\mathbb E[z^2]` (``policy_loss``, ``c`` = ``policy_reg``, ``z``
        = ``raw``, the actor's pre-activation outputs), with their diagnostics."""
        q_loss = (q - y).pow(2).mean()
        reg = raw.pow(2).mean()
        policy_loss = -q_pi.mean() + self.opts["policy_reg"] * reg
        return {
            "q_loss": q_loss,
            "policy_loss": policy_loss,
            "policy_reg": reg,
            "q_mean": q.detach().mean(),
            "q_target": y.mean(),
            "q_policy": q_pi.detach().mean(),
        }


class MADDPG(_CentralisedActorCritic):
    """MADDPG: one critic per agent over all observations and actions in the fixed agent order."""

    NAME = "maddpg"
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {**_CentralisedActorCritic.OPTIONS, "hidden": ((int, NoneType), 64)}
    MEMORY_ADVICE: ClassVar[str] = (
        "its critics grow as N^2; use pic or ipsac (their size does not grow with N), "
        "or lower replay.batch_size / algo.options.hidden"
    )
    SHUFFLE = False  # whether the critics' input order is shuffled (MADDPG-S)

    @classmethod
    def per_sample(cls, opts: dict[str, Any]) -> bool:
        """Per-agent critics, each reading its own input order (MADDPG-S ``shuffle: sample``)."""
        return False

    @classmethod
    def team_critic(cls, opts: dict[str, Any]) -> bool:
        """One critic for the team (MADDPG-S ``shuffle: minibatch``, PIC's code)."""
        return False

    def build_critic(self, spec: Any, num_agents: int) -> nn.Module:
        if self.team_critic(self.opts):
            return TeamMLPCritic(num_agents, spec.obs_dim + spec.action_dim, self.hidden)
        return PerAgentCritics(
            num_agents, spec.obs_dim, spec.action_dim, self.hidden, per_critic_input=self.per_sample(self.opts)
        )

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def memory_bytes(
        cls, spec: Any, model: ModelConfig, opts: dict[str, Any], num_agents: int, batch_size: int
    ) -> tuple[int, str]:
        """Parameters (x7: weights, gradients, two Adam moments, target copy, two temporaries of the Adam
        step) and the largest activations of one update, in bytes, with a breakdown naming the sizes."""
        n, h, b = num_agents, opts["hidden"] or model.hidden, batch_size
        slot = spec.obs_dim + spec.action_dim
        critics = 1 if cls.team_critic(opts) else n
        critic = TeamMLPCritic.num_params(n, slot, h) if critics == 1 else PerAgentCritics.num_params(n, slot, h)
        actor = spec.obs_dim * h * spec.num_agent_types + h * h + h * spec.action_dim + 2 * h + spec.action_dim
        factor = 1 + optimizer_state_factor("adam")
        params = 4 * factor * (critic + actor)
        # critic inputs for s and s' ([B, N*slot], or [N, B, N*slot] when every critic reads its own
        # order, plus the int64 slot order [N, B, N]); hidden activations of the critics for the data,
        # target and actor passes, kept for backward
        own = cls.per_sample(opts)
        inputs = 2 * (n if own else 1) * b * n * slot * 4 + (8 * n * b * n if own else 0)
        hidden = 4 * 12 * critics * b * h
        acts = inputs + hidden
        detail = (
            f"N={n}: {critics} critic(s) of {n}*({spec.obs_dim}+{spec.action_dim})={n * slot} inputs and {h} units: "
            f"{critic / 1e6:.0f} M parameters, x{factor} with gradients, Adam state, targets and the Adam step's "
            f"temporaries = {gib(params)}; "
            f"activations at batch {b}: {gib(acts)}"
        )
        return params + acts, detail

    # ----------------------------------------------------------------------------------------------
    def slot_order(self, b: int, device: torch.device) -> Tensor | None:
        """MADDPG: the fixed agent order (``None``). See :class:`MADDPGS`."""
        return None

    def critic_input(self, o: Tensor, a: Tensor, order: Tensor | None) -> Tensor:
        """``[B, N*slot]`` in agent order, or ``[N, B, N*slot]`` with critic ``i``'s slots filled by the
        agents ``order[i, b]`` (each slot one agent's ``[o_j, a_j]``)."""
        feats = torch.cat([o, a], -1)  # [B, N, slot]
        b, n, _ = feats.shape
        if order is None:
            return feats.reshape(b, -1)
        idx = torch.arange(b, device=feats.device).view(1, b, 1)
        return feats[idx, order].reshape(n, b, -1)

    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        v = self.views(batch)
        order = self.slot_order(v["b"], v["o"].device)
        pre = self.critic.first_layer(self.critic_input(v["o"], v["a_data"], order))  # [N, B, H]
        q = self.critic.rest(pre).t()  # [B, N]
        with torch.no_grad():
            tgt = self.critic_target
            q_next = tgt.rest(tgt.first_layer(self.critic_input(v["o2"], v["a_next"], order))).t()
            y = td_target(v["r"], v["d"], q_next, self.cfg.gamma)
        # actor: substitute each agent's own action in its own critic (others from the replay); the
        # first layer is linear, so that adds (mu(o_i) - a_i) W_i^(a_i) to critic i's pre-activation
        w_own = self.critic.own_action_weights(0 if self.per_sample(self.opts) else None).detach()  # [N, act, H]
        delta = v["a_pi"] - v["a_data"]  # [B, N, act]
        pre_pi = pre.detach() + torch.einsum("bnd,ndh->nbh", delta, w_own)
        q_pi = self.critic.rest(pre_pi, detach=True)  # [N, B]
        return self.actor_critic_terms(q, y, q_pi, v["raw"])


class MADDPGS(MADDPG):
    """MADDPG-S: MADDPG whose critic reads the agents in a random order: one shared team critic and one
    permutation per minibatch (``shuffle: minibatch``, PIC's code), or per-agent critics with a
    permutation per sample and the agent's own pair first (``sample``). See the module docstring."""

    NAME = "maddpg_s"
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        **_CentralisedActorCritic.OPTIONS,
        "shuffle": (str, "minibatch"),
        "team_reward": (str, "sum"),
        "actor_out_scale": (float, 0.1),
        "next_actor": (str, "online"),
    }
    SHUFFLE = True

    @classmethod
    def per_sample(cls, opts: dict[str, Any]) -> bool:
        return opts["shuffle"] == "sample"

    @classmethod
    def team_critic(cls, opts: dict[str, Any]) -> bool:
        return opts["shuffle"] == "minibatch"

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        super().check_options(opts, model)
        require_choice(opts, "shuffle", ("minibatch", "sample"), cls.NAME)
        require_choice(opts, "team_reward", ("sum", "mean"), cls.NAME)

    def minibatch_order(self, device: torch.device) -> Tensor:
        """``shuffle: minibatch``: one random permutation of the N agents (torch's global generator) for the
        whole minibatch, as PIC's code draws one ``np.random.permutation(n_agent)`` per update."""
        return torch.randperm(self.num_agents, device=device)

    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        r"""``shuffle: minibatch`` (PIC's code), with :math:`\pi` one permutation of the agents and
        :math:`[\cdot]_\pi` the slots in that order:

        .. math::
            L(\omega) = \mathbb E\big[(Q_\omega([\mathbf o, \mathbf a]_\pi) - y)^2\big], \quad
            y = R + \gamma (1 - D)\, \bar Q([\mathbf o', \bar\mu(\mathbf o')]_\pi), \qquad
            J(\phi) = -\mathbb E\big[Q([\mathbf o, \mu_\phi(\mathbf o)]_\pi)\big] + c\,\mathbb E[z^2]

        (Lowe et al. eq. 5-6 with one team critic; :math:`R, D` as PIC's team critic). ``sample``: MADDPG's
        losses with per-sample slot orders (:meth:`slot_order`)."""
        if not self.team_critic(self.opts):
            return super().losses(batch)
        v = self.views(batch)
        perm = self.minibatch_order(v["o"].device)
        r, d = team_targets(v["r"], v["d"], self.opts["team_reward"])
        q = self.critic(torch.cat([v["o"], v["a_data"]], -1)[:, perm])
        with torch.no_grad():
            q_next = self.critic_target(torch.cat([v["o2"], v["a_next"]], -1)[:, perm])
            y = td_target(r, d, q_next, self.cfg.gamma)
        with frozen(self.critic):
            q_pi = self.critic(torch.cat([v["o"], v["a_pi"]], -1)[:, perm])
        return self.actor_critic_terms(q, y, q_pi, v["raw"])

    def slot_order(self, b: int, device: torch.device) -> Tensor:
        """``shuffle: sample``. ``order[i, b]``: the agents in critic ``i``'s slots for sample ``b``: ``i``
        first, then the other N-1 agents in the order of one random permutation per sample (torch's global
        generator), the same permutation for every critic and for :math:`s` and :math:`s'`. ``[N, B, N]`` long."""
        n = self.num_agents
        perm = torch.rand(b, n, device=device).argsort(1)  # [B, N]
        agents = torch.arange(n, device=device).view(n, 1, 1)
        others = perm.unsqueeze(0).expand(n, b, n)
        others = others[others != agents].view(n, b, n - 1)
        return torch.cat([agents.expand(n, b, 1), others], -1)


class PIC(_CentralisedActorCritic):
    """PIC: MADDPG with a permutation-invariant graph critic (see the module docstring)."""

    NAME = "pic"
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        **_CentralisedActorCritic.OPTIONS,
        "critic_output": (str, "team"),
        "pool": (str, "max"),
        "team_reward": (str, "sum"),
        "aggregation": (str, "code"),
        "actor_out_scale": (float, 0.1),
        "next_actor": (str, "online"),
    }

    def build_critic(self, spec: Any, num_agents: int) -> nn.Module:
        self.num_types = spec.num_agent_types
        in_dim = spec.obs_dim + spec.action_dim + (self.num_types if self.num_types > 1 else 0)
        return PermutationInvariantCritic(
            in_dim, self.hidden, self.opts["critic_output"], self.opts["pool"], self.opts["aggregation"]
        )

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        super().check_options(opts, model)
        for key, valid in (
            ("critic_output", ("team", "agent")),
            ("pool", ("max", "mean")),
            ("team_reward", ("sum", "mean")),
            ("aggregation", ("code", "mean")),
        ):
            require_choice(opts, key, valid, cls.NAME)

    def node_features(self, o: Tensor, a: Tensor, agent_type: Tensor | None) -> Tensor:
        """:math:`x_j = o_j \\Vert a_j` (\\Vert one-hot type with several types), ``[B, N, F]``."""
        parts = [o, a]
        if self.num_types > 1:
            b, n = o.shape[:2]
            t = agent_type.view(b, n) if agent_type is not None else o.new_zeros(b, n, dtype=torch.long)
            parts.append(F.one_hot(t, self.num_types).to(o.dtype))
        return torch.cat(parts, -1)

    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        v = self.views(batch)
        types = getattr(batch.obs, "agent_type", None)
        team = self.opts["critic_output"] == "team"
        if team:
            r, d = team_targets(v["r"], v["d"], self.opts["team_reward"])
        else:
            r, d = v["r"], v["d"]
        q = self.critic(self.node_features(v["o"], v["a_data"], types))
        with torch.no_grad():
            q_next = self.critic_target(self.node_features(v["o2"], v["a_next"], types))
            y = td_target(r, d, q_next, self.cfg.gamma)
        with frozen(self.critic):
            q_pi = self.critic(self.node_features(v["o"], v["a_pi"], types))
        return self.actor_critic_terms(q, y, q_pi, v["raw"])
