"""The per-agent policy heads :math:`q_i(a_i \\mid s)`: masked categorical and tanh-squashed Gaussian.

Both are thin, vectorised wrappers over one tensor per batch of agents: no Python object per agent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def check_mask(mask: Tensor) -> None:
    """Raise ``ValueError`` when a row of the action mask ``[..., A]`` has no valid action."""
    if not bool(mask.any(-1).all()):
        raise ValueError("an agent has no valid action: every row of action_mask needs one True")


def mask_invalid(values: Tensor, mask: Tensor | None) -> Tensor:
    """``values`` ``[..., A]`` with the invalid actions (``mask`` False) set to the lowest finite value, so that
    no max, argmax, softmax or Gumbel-max picks them; ``values`` itself when ``mask`` is None. Raises
    ``ValueError`` when a row of ``mask`` has no valid action (:func:`check_mask`)."""
    if mask is None:
        return values
    check_mask(mask)
    return values.masked_fill(~mask, torch.finfo(values.dtype).min)


@dataclass
class MaskedCategorical:
    """:math:`q_i(a) = \\mathrm{softmax}(z_i)_a` over the valid actions of agent ``i``.

    Args:
        logits: ``[N, A]`` unnormalised scores.
        mask: optional ``[N, A]`` bool, ``True`` where the action is valid. Invalid actions get
            probability 0 and ``log_prob`` :math:`-\\infty`; entropy terms treat ``0 log 0 = 0``.
    """

    logits: Tensor
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        self.logits = mask_invalid(self.logits, self.mask)
        self.log_probs = torch.log_softmax(self.logits, dim=-1)
        self.probs = self.log_probs.exp()

    @property
    def num_actions(self) -> int:
        return self.logits.size(-1)

    def entropy(self) -> Tensor:
        """:math:`-\\sum_a q(a) \\log q(a)` per agent, ``[N]``."""
        return -(self.probs * self.safe_log_probs()).sum(-1)

    def safe_log_probs(self) -> Tensor:
        """``log q`` ``[N, A]`` with invalid actions set to 0 (not :math:`-\\infty`), so that ``q * log q`` and
        ``q * (alpha log q - Q)`` are exactly 0 there: the form every expectation over the own action uses."""
        if self.mask is None:
            return self.log_probs
        return self.log_probs.masked_fill(~self.mask, 0.0)

    def sample(self) -> Tensor:
        """Actions ``[N]`` (long), sampled with torch's global generator."""
        return torch.multinomial(self.probs, 1).squeeze(-1)

    def greedy(self) -> Tensor:
        return self.logits.argmax(-1)

    def log_prob(self, action: Tensor) -> Tensor:
        return self.log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def gumbel_onehot(self, temperature: float = 1.0) -> Tensor:
        """A straight-through Gumbel-softmax sample ``[N, A]``: one-hot forward, soft gradient
        (Jang et al., 2017), so a loss of the sampled action differentiates w.r.t. the logits."""
        return F.gumbel_softmax(self.logits, tau=temperature, hard=True)


@dataclass
class TanhGaussian:
    """:math:`a = \\tanh(u)`, :math:`u \\sim \\mathcal{N}(m_i, \\sigma_i^2)`, with the change-of-variables
    correction :math:`\\log q(a) = \\log \\mathcal{N}(u) - \\sum_d \\log(1 - \\tanh^2 u_d)` (SAC, app. C).

    Args:
        mean: ``[N, D]``.
        log_std: ``[N, D]``, clamped to ``[-5, 2]``.
    """

    mean: Tensor
    log_std: Tensor

    def __post_init__(self) -> None:
        self.log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def rsample(self) -> tuple[Tensor, Tensor]:
        """Reparameterised action in ``[-1, 1]^D`` and its log-probability ``[N]``."""
        std = self.log_std.exp()
        u = self.mean + std * torch.randn_like(self.mean)
        return torch.tanh(u), self._log_prob_u(u)

    def _log_prob_u(self, u: Tensor) -> Tensor:
        std = self.log_std.exp()
        normal = -0.5 * ((u - self.mean) / std) ** 2 - self.log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return (normal - log_det).sum(-1)

    def log_prob(self, action: Tensor, eps: float = 1e-6) -> Tensor:
        u = torch.atanh(action.clamp(-1 + eps, 1 - eps))
        return self._log_prob_u(u)

    def greedy(self) -> Tensor:
        return torch.tanh(self.mean)

    def sample(self) -> Tensor:
        with torch.no_grad():
            return self.rsample()[0]
