r"""Targets: the target networks and their Polyak update, and the bootstrapped temporal-difference targets.

- :func:`polyak_update`: :math:`\bar\theta \leftarrow \tau\theta + (1-\tau)\bar\theta` (:math:`\tau = 1`: a hard
  copy), the one implementation of every algorithm's :meth:`~ipgnn.algos.base.Algorithm.target_update`;
- :func:`td_target`: :math:`y = r + \gamma (1 - d)\, v'`, termination only (a time-limit truncation bootstraps);
- :func:`team_targets` / :func:`team_terminated`: the team reward and the episode-level termination of the team
  critics (QMIX, PIC, MADDPG-S).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["make_target", "polyak_update", "td_target", "team_targets", "team_terminated"]


def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` (the target network)."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    r"""Polyak averaging of a target network towards its online network, for every parameter:

    .. math::
        \bar\theta \leftarrow \tau\,\theta + (1 - \tau)\,\bar\theta

    (IP paper, Algorithm 1 and Table 2: :math:`\tau = 0.01` every step; ``tau >= 1`` is a hard copy, as DQN's and
    QMIX's periodic target updates). ``tau < 1`` is ``torch.lerp`` in place, which rounds once per element."""
    for tp, p in zip(target.parameters(), source.parameters()):
        if tau >= 1.0:
            tp.copy_(p)
        else:
            tp.lerp_(p, tau)


def td_target(reward: Tensor, terminated: Tensor, next_value: Tensor, gamma: float) -> Tensor:
    r""":math:`y = r + \gamma (1 - d)\, v'`: the bootstrapped target of every critic (IP-SAC's
    :math:`\hat Q_i = r_i + \gamma (1 - d_i) V_{\bar\eta}(s')_i`, sec. 4.3 / eq. 16; DQN's, QMIX's and MADDPG's
    with their own :math:`v'`). :math:`d` is termination only: a time-limit truncation bootstraps."""
    return reward + gamma * (1.0 - terminated) * next_value


def team_terminated(terminated: Tensor) -> Tensor:
    r"""Episode-level termination of a team value, ``[B, N] -> [B]``: :math:`D = \prod_i d_i`, 1 only when
    every agent has terminated (an agent that left earlier is reported terminated from then on). A team
    value bootstraps while any agent is still in the episode; one agent's termination does not end the
    team's return (QMIX's and PIC's team critics)."""
    return terminated.amin(1)


def team_targets(r: Tensor, d: Tensor, team_reward: str) -> tuple[Tensor, Tensor]:
    r""":math:`R = \sum_i r_i` (``sum``) or :math:`\frac1N\sum_i r_i` (``mean``), and the episode-level
    termination :math:`D` (every agent terminated), from per-agent ``r, d`` ``[B, N]``."""
    return (r.sum(1) if team_reward == "sum" else r.mean(1)), team_terminated(d)
