r"""IQL: independent deep Q-learning, one Q-network shared by all agents (a baseline of sec. 5.2).

Independent Q-learning (Tan, 1993) treats every agent as a single-agent learner whose environment
contains the others. Its deep version is DQN (Mnih et al., 2015) run per agent; here, as in the IP
paper's and QMIX's IQL baselines, the agents share one network :math:`Q_\theta(o_i, \cdot)` (an MLP on
the agent's own observation, with a per-type first layer for heterogeneous agents), so it scales to any
N. The communication graph is not used.

Loss (DQN's temporal-difference loss, per agent, mean over the minibatch's agents):

.. math::
    L(\theta) = \mathbb E_{(o_i, a_i, r_i, o'_i, d_i) \sim D}\big[(Q_\theta(o_i, a_i) - y_i)^2\big],\qquad
    y_i = r_i + \gamma (1 - d_i) \max_{a' \in \mathcal A_i(s')} Q_{\bar\theta}(o'_i, a')

with :math:`d_i` termination only (a time limit bootstraps) and the max over the actions valid in
:math:`s'` (``next_obs.action_mask``). With ``double_q`` the max is replaced by Double DQN's
(van Hasselt et al., 2016) :math:`Q_{\bar\theta}(o'_i, \arg\max_{a'} Q_\theta(o'_i, a'))`.

Target: :math:`\bar\theta \leftarrow \tau\theta + (1-\tau)\bar\theta` every ``algo.target_update_interval``
gradient steps (Table 2: Polyak :math:`\tau = 0.01` every step; :math:`\tau = 1` gives DQN's periodic
hard copy).

Exploration: :math:`\epsilon`-greedy over the valid actions, :math:`\epsilon` linear from
``epsilon_start`` to ``epsilon_end`` over ``epsilon_decay_steps`` environment steps taken by the
policy (the ``train.learning_starts`` uniform warm-up is not counted), scaled to the run's length:
``epsilon_decay_steps`` is written for a run of ``train.schedule_reference_steps`` (:math:`10^6`, Table 2's
runs) and the schedule lasts ``epsilon_decay_steps * total_steps / schedule_reference_steps`` steps, the same
fraction of every run for every method (:attr:`ipgnn.config.TrainConfig.schedule_scale`).

Options (``algo.options``), with defaults and sources:

==========================  =======  ===============================================================
``epsilon_start``           1.0      Rashid et al. 2018 (QMIX), sec. 6, used for all its methods, IQL too
``epsilon_end``             0.05     same
``epsilon_decay_steps``     50000    same ("over 50k time steps")
``double_q``                false    Tan 1993 / DQN: the plain max (Double DQN is an option)
``layers``                  2        hidden layers of width ``model.hidden`` (Table 2: 128 units)
==========================  =======  ===============================================================
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ipgnn.algos.options import require_positive
from ipgnn.algos.qlearning import EPSILON_OPTIONS, QLearningAlgo
from ipgnn.algos.targets import td_target
from ipgnn.config import AlgoConfig, ModelConfig
from ipgnn.nn.mlp import TypedMLP
from ipgnn.replay import TransitionBatch

__all__ = ["IQL"]


class IQL(QLearningAlgo):
    """Independent DQN with one shared Q-network (see the module docstring)."""

    NAME = "iql"
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        **EPSILON_OPTIONS,
        "double_q": (bool, False),
        "layers": (int, 2),
    }

    def __init__(self, spec: Any, model: ModelConfig, algo: AlgoConfig, num_agents: int):
        super().__init__(spec, algo, num_agents)
        self.use_q_network(
            TypedMLP(spec.obs_dim, model.hidden, spec.action_dim, self.opts["layers"], spec.num_agent_types)
        )

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        super().check_options(opts, model)
        require_positive(opts, ["layers"], cls.NAME)

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Data | Batch, deterministic: bool = False) -> Tensor:
        """Greedy valid action per agent, or :math:`\\epsilon`-greedy when exploring."""
        return self.act_on_q(self.q(obs.x, getattr(obs, "agent_type", None)), obs, deterministic)

    @torch.no_grad()
    def target(self, batch: TransitionBatch) -> Tensor:
        r""":math:`y_i = r_i + \gamma (1 - d_i) \max_{a' \text{ valid}} Q_{\bar\theta}(o'_i, a')` ``[B*N]``."""
        nxt = batch.next_obs
        types, mask = getattr(nxt, "agent_type", None), getattr(nxt, "action_mask", None)
        v_next = self.next_value(
            self.q_target(nxt.x, types), self.q(nxt.x, types) if self.opts["double_q"] else None, mask
        )
        return td_target(batch.reward, batch.terminated, v_next, self.cfg.gamma)

    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        r"""DQN's loss :math:`L(\theta) = \mathbb E[(Q_\theta(o_i, a_i) - y_i)^2]` (see the module docstring)."""
        obs = batch.obs
        q = self.q(obs.x, getattr(obs, "agent_type", None))
        q_sa = q.gather(-1, batch.action.long().unsqueeze(-1)).squeeze(-1)
        y = self.target(batch)
        return {"q_loss": (q_sa - y).pow(2).mean(), "q_mean": q_sa.detach().mean(), "q_target": y.mean()}
