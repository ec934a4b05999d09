r"""IP-SAC: intention propagation trained by a replay-driven soft actor-critic (Algorithm 1, sec. 4.3, app. E.2).

Networks: the intention propagation policy :math:`\Lambda_\theta` with outputs :math:`q_{i,\theta}`; two
graph critics :math:`Q_{\kappa^1}, Q_{\kappa^2}`; a graph value network :math:`V_\eta` and its Polyak
target :math:`V_{\bar\eta}`. All are shared across agents and output one value per agent.

Losses, each a mean over the agents of the minibatch (the paper sums over agents; the mean divides
every loss by the constant ``N``, which Adam's step is invariant to, and keeps one set of learning
rates meaningful from N = 3 to N = 1225). :math:`\alpha` is Table 2's "regularizer factor" made
explicit (the paper folds it into the reward):

- value, sec. 4.3 / eq. (16):
  :math:`J(\eta_i) = \mathbb E_{s \sim D}\big[\tfrac12 \big(V_{\eta_i}(s)
  - \mathbb E_{(a_i, a_{\mathcal N_i}) \sim (q_i, q_{\mathcal N_i})}[\min_k Q_{\kappa^k_i}(s, a_i, a_{\mathcal N_i})
  - \alpha \log q_{i,\theta}(a_i \mid s)]\big)^2\big]`
- critics, sec. 4.3 / eq. (16), ``k = 1, 2``:
  :math:`J(\kappa^k_i) = \mathbb E_{D}\big[\tfrac12 \big(Q_{\kappa^k_i}(s, a_i, a_{\mathcal N_i})
  - \hat Q_i\big)^2\big]`,
  :math:`\hat Q_i = r_i + \gamma (1 - d_i) V_{\bar\eta_i}(s')` where :math:`d_i` is *termination* only
  (a time-limit truncation bootstraps);
- policy, sec. 4.3 / app. E.2 (last equation), with :math:`\min_k` over the twin critics as SAC
  (Haarnoja et al., 2018, sec. 5: "the minimum of the Q-functions for the value gradient and policy
  gradient"); the IP paper names the minimum for the value target only and writes one
  :math:`Q_{\kappa_i}` here:
  :math:`J(\theta) = \mathbb E_{s \sim D, \mathbf a \sim \prod_i q_i}\big[\sum_i \alpha \log q_{i,\theta}(a_i \mid s)
  - \min_k Q_{\kappa^k_i}(s, a_i, a_{\mathcal N_i})\big]`;
- temperature (optional, SAC v2): :math:`J(\alpha) = \mathbb E[-\log\alpha\,(\log q_i(a_i \mid s) + \bar{\mathcal H})]`;
- target: :math:`\bar\eta \leftarrow \tau \eta + (1 - \tau) \bar\eta` every ``target_update_interval`` steps.

**How the policy gradient reaches the neighbours' actions.** For continuous actions the joint sample
:math:`\mathbf a` is reparameterised, so :math:`\partial Q_i / \partial a_j` flows into agent ``j``'s
policy through the edge features. For discrete actions the critic outputs :math:`Q_i(s, \cdot,
a_{\mathcal N_i})` for every own action, so the expectation over the agent's *own* action is exact
(:math:`\sum_a q_i(a)[\dots]`, valid because the mean-field :math:`q` is a product); the neighbours'
actions on the edges are either straight-through Gumbel-softmax one-hot samples (``gumbel``, the
default: the critic sees the one-hot actions it was trained on, and the gradient w.r.t. the
neighbours' logits flows through the soft relaxation) or the neighbours' probabilities themselves
(``probs``: the mean-field approximation :math:`\mathbb E_{q_{\mathcal N}}[Q_i] \approx Q_i(s, \cdot,
q_{\mathcal N})`, deterministic and lower-variance, but off the critic's training distribution).

All losses are computed from one forward of every network on the same minibatch and applied
together, as the SAC v1 reference implementation does: critics are frozen inside the policy loss and
every target is detached, so each gradient reaches only its own parameters.
"""

from __future__ import annotations

import contextlib
import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ipgnn.algos.base import Algorithm
from ipgnn.algos.optim import make_optimizer
from ipgnn.algos.targets import td_target as soft_q_target
from ipgnn.config import AlgoConfig, ConfigError, ModelConfig
from ipgnn.nn.critics import GraphValueNetwork, TwinGraphQ
from ipgnn.nn.propagation import IntentionPropagationNetwork
from ipgnn.nn.utils import frozen
from ipgnn.precision import autocast
from ipgnn.replay import TransitionBatch
from ipgnn.spec import AgentSpec

# soft_q_target: the critics' target of sec. 4.3 / eq. (16), r + gamma (1 - d) V_target(s'): the one TD target of every
# algorithm (ipgnn.algos.targets.td_target) with the target value network's V as the next value
__all__ = ["IPSAC", "AgentSpec", "frozen", "soft_q_target", "soft_value_target_discrete"]


def soft_value_target_discrete(probs: Tensor, log_probs: Tensor, q_min: Tensor, alpha: float | Tensor) -> Tensor:
    r""":math:`\sum_a q_i(a)\,[\min_k Q_i(s, a, a_{\mathcal N_i}) - \alpha \log q_i(a)]` per agent (the
    inner expectation of :math:`J(\eta_i)`, exact over the own action). ``log_probs`` must be 0 where
    ``probs`` is 0 (masked actions)."""
    return (probs * (q_min - alpha * log_probs)).sum(-1)


class IPSAC(Algorithm):
    """The IP-SAC learner: networks, optimisers, losses and one gradient step.

    Honours ``algo.precision`` (``mixed_precision``; see :meth:`update`). Its settings are fields of the ``algo``
    section itself (``alpha``, ``autotune_alpha``, ``tau``, the learning rates, ...), not ``algo.options``.

    Args:
        spec: the task's agents.
        model: the ``model`` config section.
        algo: the ``algo`` config section.
        num_agents: unused: every network is shared across agents and works for any N.
    """

    NAME = "ipsac"
    LOSSES: ClassVar[tuple[str, ...]] = ("policy_loss", "value_loss", "q_loss", "alpha_loss")
    mixed_precision: ClassVar[bool] = True  # algo.precision: bf16 is honoured (make_algo rejects it elsewhere)

    def __init__(self, spec: AgentSpec, model: ModelConfig, algo: AlgoConfig, num_agents: int | None = None):
        super().__init__(spec, algo, num_agents)
        self.policy = IntentionPropagationNetwork(
            spec.obs_dim,
            spec.action_dim,
            spec.discrete,
            hidden=model.hidden,
            rounds=model.rounds,
            hops=model.hops,
            heads=model.heads,
            num_agent_types=spec.num_agent_types,
        )
        critic_kw = dict(
            hidden=model.hidden, state_layers=model.critic_state_layers, num_agent_types=spec.num_agent_types
        )
        self.q = TwinGraphQ(spec.obs_dim, spec.action_dim, spec.discrete, **critic_kw)
        self.v = GraphValueNetwork(spec.obs_dim, **critic_kw)
        self.add_target("v")
        self.log_alpha = nn.Parameter(torch.tensor(math.log(algo.alpha)), requires_grad=algo.autotune_alpha)
        lr = algo.lr
        self.optimizers = {
            "policy": make_optimizer(self.policy.parameters(), algo.policy_lr or lr),
            "q": make_optimizer(self.q.parameters(), algo.critic_lr or lr),
            "v": make_optimizer(self.v.parameters(), algo.value_lr or lr),
        }
        if algo.autotune_alpha:
            self.optimizers["alpha"] = make_optimizer([self.log_alpha], algo.alpha_lr or lr)
        self.grad_groups = {"policy": self.policy, "q": self.q, "v": self.v}  # log_alpha is not clipped

    @classmethod
    def read_options(cls, algo: AlgoConfig) -> dict:
        if algo.options:
            raise ConfigError(
                f"algo.options: ipsac takes its settings from the algo section itself, not from "
                f"options (got {sorted(algo.options)})"
            )
        return {}

    # ----------------------------------------------------------------------------------------------
    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.detach().exp()

    def target_entropy(self, dist) -> Tensor | float:
        if self.cfg.target_entropy is not None:
            return self.cfg.target_entropy
        if self.spec.discrete:
            mask = dist.mask
            valid = (
                mask.sum(-1).float()
                if mask is not None
                else torch.full(dist.logits.shape[:1], float(self.spec.action_dim), device=dist.logits.device)
            )
            return 0.6 * valid.log()
        return -float(self.spec.action_dim)

    @torch.no_grad()
    def act(self, obs: Data | Batch, deterministic: bool = False) -> Tensor:
        """Joint action of all agents: one pass of intention propagation, then
        :math:`a_i \\sim q_i` (or the mode when ``deterministic``)."""
        dist = self.policy(obs).dist
        return dist.greedy() if deterministic else dist.sample()

    # ----------------------------------------------------------------------------------------------
    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """Every loss term and diagnostic of one minibatch (see the module docstring).

        The twin critics meet the same state twice: with a fresh sample of the policy (``J(theta)``, the value
        target) and with the replayed actions (``J(kappa)``). Their terms that read the state alone
        (:meth:`ipgnn.nn.critics.GraphQNetwork.encode`: the trunk, :math:`W_t h`, :math:`W_s h`) are computed
        once. The policy's use reads them detached: inside ``J(theta)`` the critics are frozen and the state
        carries no gradient, so the only path for its gradient is through the sampled actions. The same
        operations run on the same inputs as in two full critic evaluations, so every value and gradient is
        bit for bit theirs (test:
        ``test_losses.py::test_shared_critic_state_gives_the_gradients_of_two_full_evaluations``)."""
        obs, nxt = batch.obs, batch.next_obs
        ei, agent_type = obs.edge_index, getattr(obs, "agent_type", None)
        alpha = self.alpha
        dist = self.policy(obs).dist
        # the critics' terms that read s alone, once for both of their uses below (see ``losses``' docstring)
        q_state = self.q.encode(obs.x, ei, agent_type)

        # --- the critic's view of a fresh joint sample a ~ prod_i q_i (critic parameters frozen)
        if self.spec.discrete:
            if self.cfg.discrete_neighbour_actions == "gumbel":
                nbr = dist.gumbel_onehot(self.cfg.gumbel_temperature)
            else:
                nbr = dist.probs
            with frozen(self.q):
                q_pi = self.q.from_state(q_state.detach(), ei, neighbour_action=nbr)  # [2, BN, A]
            q_pi_min = q_pi.min(0).values
            log_p = dist.safe_log_probs()
            policy_loss = (dist.probs * (alpha * log_p - q_pi_min)).sum(-1).mean()
            v_target = soft_value_target_discrete(dist.probs, log_p, q_pi_min, alpha).detach()
            log_pi = -dist.entropy()  # E_{a~q}[log q(a)]
        else:
            a_pi, log_pi = dist.rsample()
            with frozen(self.q):
                q_pi = self.q.from_state(q_state.detach(), ei, neighbour_action=a_pi, own_action=a_pi)
            q_pi_min = q_pi.min(0).values
            policy_loss = (alpha * log_pi - q_pi_min).mean()
            v_target = (q_pi_min - alpha * log_pi).detach()

        # --- J(eta): value towards E[min Q - alpha log q]
        v = self.v(obs.x, ei, agent_type)
        value_loss = 0.5 * (v - v_target).pow(2).mean()

        # --- J(kappa^1) + J(kappa^2): critics towards r + gamma (1 - d) V_target(s')
        with torch.no_grad():
            v_next = self.v_target(nxt.x, nxt.edge_index, getattr(nxt, "agent_type", None))
            q_hat = soft_q_target(batch.reward, batch.terminated, v_next, self.cfg.gamma)
        feats = self.action_features(batch.action)
        q_data = self.q.from_state(
            q_state, ei, neighbour_action=feats, own_action=None if self.spec.discrete else batch.action
        )
        if self.spec.discrete:
            q_data = q_data.gather(-1, batch.action.long().view(1, -1, 1).expand(2, -1, 1)).squeeze(-1)
        q_loss = 0.5 * (q_data - q_hat.unsqueeze(0)).pow(2).mean(1).sum()

        out = {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "q_loss": q_loss,
            "q1": q_data[0].detach().mean(),
            "q2": q_data[1].detach().mean(),
            "v": v.detach().mean(),
            "v_target": v_target.mean(),
            "q_target": q_hat.mean(),
            "entropy": -log_pi.detach().mean(),
            "alpha": alpha,
        }
        if self.cfg.autotune_alpha:
            target = self.target_entropy(dist)
            out["alpha_loss"] = -(self.log_alpha * (log_pi.detach() + target)).mean()
        return out

    def loss_context(self, batch: TransitionBatch) -> contextlib.AbstractContextManager:
        """With ``algo.precision: bf16`` the forward of every network runs under ``torch.autocast`` in bfloat16
        (the backward follows the forward's types); the networks' outputs (logits, Q, V) and the attention
        softmax are computed in float32, and so are the losses, the gradients of the float32 parameters and
        Adam's states. The values and gradients differ from fp32 by bfloat16 rounding of the hidden features
        (test: ``test_losses.py::test_bf16_update_stays_close_to_fp32``)."""
        return autocast(self.cfg.precision, batch.obs.x.device.type)

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        r"""One gradient step of every network on the sum of :math:`J(\theta)`, :math:`J(\eta)`,
        :math:`J(\kappa^1) + J(\kappa^2)` and :math:`J(\alpha)` (Algorithm 1, inner loop; :meth:`losses` under
        :meth:`loss_context`) and, every ``target_update_interval`` steps, the Polyak update of :math:`V_{\bar\eta}`
        (:meth:`~ipgnn.algos.base.Algorithm.target_update`)."""
        return super().update(batch)
