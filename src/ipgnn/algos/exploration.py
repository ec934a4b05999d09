r"""Exploration and action masks: the linear :math:`\epsilon` schedule, :math:`\epsilon`-greedy over the valid
actions, masked max / argmax (the max over next actions of a Q-learning target only ranges over the actions
valid in :math:`s'`), and Gumbel-softmax samples of masked logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ipgnn.nn.distributions import check_mask, mask_invalid

__all__ = [
    "epsilon_greedy",
    "gumbel_onehot",
    "linear_epsilon",
    "masked_argmax",
    "masked_logits",
    "masked_max",
    "masked_values",
    "random_valid_actions",
]


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    r""":math:`\epsilon_t = \epsilon_0 + \min(1, t / T)(\epsilon_T - \epsilon_0)`: linear from ``start`` to
    ``end`` over ``decay_steps`` environment steps, then constant (the schedule of Rashid et al. 2018,
    sec. 6: "annealed linearly from 1.0 to 0.05 over 50k time steps")."""
    if decay_steps <= 0:
        return float(end)
    frac = min(1.0, max(0, step) / decay_steps)
    return float(start + frac * (end - start))


def masked_values(q: Tensor, mask: Tensor | None) -> Tensor:
    """``q`` with invalid actions set to the lowest finite value (so no max or argmax picks them)."""
    return mask_invalid(q, mask)


def masked_max(q: Tensor, mask: Tensor | None) -> Tensor:
    r""":math:`\max_{a \in \mathcal A_i(s)} q_i(a)` per row, ``[..., A] -> [...]``."""
    return masked_values(q, mask).max(-1).values


def masked_argmax(q: Tensor, mask: Tensor | None) -> Tensor:
    r""":math:`\arg\max_{a \in \mathcal A_i(s)} q_i(a)` per row (long)."""
    return masked_values(q, mask).argmax(-1)


def random_valid_actions(num: int, num_actions: int, mask: Tensor | None, device: torch.device) -> Tensor:
    """Uniformly random valid actions ``[num]`` from torch's global generator."""
    if mask is None:
        return torch.randint(num_actions, (num,), device=device)
    check_mask(mask)
    return torch.multinomial(mask.float(), 1).squeeze(-1)


def epsilon_greedy(q: Tensor, mask: Tensor | None, epsilon: float) -> Tensor:
    r"""Per agent: a uniformly random valid action with probability :math:`\epsilon`, otherwise
    :math:`\arg\max_{a \text{ valid}} q_i(a)`. ``q``: ``[n, A]``."""
    greedy = masked_argmax(q, mask)
    if epsilon <= 0.0:
        return greedy
    explore = torch.rand(q.size(0), device=q.device) < epsilon
    rand = random_valid_actions(q.size(0), q.size(-1), mask, q.device)
    return torch.where(explore, rand, greedy)


def masked_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Logits with invalid actions at the lowest finite value: softmax and Gumbel-max never pick them."""
    return mask_invalid(logits, mask)


def gumbel_onehot(logits: Tensor, temperature: float, hard: bool = True) -> Tensor:
    r"""Gumbel-softmax sample :math:`\mathrm{softmax}((z + g) / T)`, :math:`g \sim \mathrm{Gumbel}(0, 1)`
    (Jang et al. 2017). ``hard``: straight-through, a one-hot sample forward and the gradient of the relaxed
    sample backward; otherwise the relaxed sample. ``logits`` should already be masked."""
    return F.gumbel_softmax(logits, tau=temperature, hard=hard)
