r"""What the value-based baselines (IQL, DGN, QMIX) share: :class:`QLearningAlgo`, with the linear
:math:`\epsilon` schedule over explored environment steps (options :data:`EPSILON_OPTIONS`), :math:`\epsilon`-greedy
acting over valid actions, and the next state's value of the temporal-difference target."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ipgnn.algos.base import Algorithm
from ipgnn.algos.exploration import epsilon_greedy, linear_epsilon, masked_argmax, masked_max
from ipgnn.algos.optim import make_optimizer
from ipgnn.algos.options import require_positive, require_unit
from ipgnn.config import ModelConfig
from ipgnn.replay import TransitionBatch

__all__ = ["EPSILON_OPTIONS", "QLearningAlgo", "check_epsilon"]

EPSILON_OPTIONS: dict[str, tuple[Any, Any]] = {
    "epsilon_start": (float, 1.0),
    "epsilon_end": (float, 0.05),
    "epsilon_decay_steps": (int, 50_000),
}


def check_epsilon(opts: dict[str, Any], name: str) -> None:
    """The :data:`EPSILON_OPTIONS`: both ends in [0, 1], a non-negative number of decay steps."""
    require_unit(opts, ["epsilon_start", "epsilon_end"], name)
    require_positive(opts, ["epsilon_decay_steps"], name, allow_zero=True)


class QLearningAlgo(Algorithm):
    r"""A value-based learner: discrete actions only, :math:`\epsilon`-greedy exploration whose
    :math:`\epsilon` is logged with every update (``epsilon``)."""

    LOSSES: ClassVar[tuple[str, ...]] = ("q_loss",)
    supports_continuous_actions: ClassVar[bool] = False

    opts: dict[str, Any]

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        check_epsilon(opts, cls.NAME)

    def use_q_network(self, q: nn.Module) -> None:
        """``q`` as the one Q-network (IQL, DGN): ``self.q``, its target ``self.q_target``, one optimiser at
        ``algo.lr`` and its gradient norm logged as ``grad_norm/q``."""
        self.q = q
        self.add_target("q")
        self.optimizers = {"q": make_optimizer(self.q.parameters(), self.cfg.lr)}
        self.grad_groups = {"q": self.q}

    @property
    def epsilon(self) -> float:
        o = self.opts
        return linear_epsilon(self.env_steps, o["epsilon_start"], o["epsilon_end"], self.epsilon_decay_steps)

    @property
    def epsilon_decay_steps(self) -> int:
        """The option ``epsilon_decay_steps`` scaled to this run (``schedule_scale``), at least one step."""
        steps = self.opts["epsilon_decay_steps"]
        return steps if steps <= 0 else max(1, round(steps * self.schedule_scale))

    def act_on_q(self, q: Tensor, obs: Data | Batch, deterministic: bool) -> Tensor:
        r"""The greedy valid action of each row of ``q`` or, when exploring, an :math:`\epsilon`-greedy one
        (exploring counts the environment steps the schedule reads)."""
        mask = getattr(obs, "action_mask", None)
        if deterministic:
            return masked_argmax(q, mask)
        eps = self.epsilon
        self.count_steps(obs)
        return epsilon_greedy(q, mask, eps)

    def next_value(self, q_next_target: Tensor, q_next_online: Tensor | None, mask: Tensor | None) -> Tensor:
        r""":math:`\max_{a' \text{ valid}} \bar Q(s', a')`, or with ``double_q`` (``q_next_online`` given)
        :math:`\bar Q(s', \arg\max_{a' \text{ valid}} Q(s', a'))` (van Hasselt et al., 2016)."""
        if q_next_online is None:
            return masked_max(q_next_target, mask)
        best = masked_argmax(q_next_online, mask)
        return q_next_target.gather(-1, best.unsqueeze(-1)).squeeze(-1)

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """:meth:`Algorithm.update`, with the current :math:`\\epsilon` logged."""
        return {**super().update(batch), "epsilon": self.epsilon}
