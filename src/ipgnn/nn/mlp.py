r"""Feed-forward layers of the baselines: :class:`TypedMLP`, one MLP shared by all agents with a per-type first
layer, and :class:`BatchedLinear`, ``G`` independent linear layers evaluated as one ``baddbmm`` (the per-agent
critics of MADDPG)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ipgnn.nn.propagation import TypedEncoder

__all__ = ["BatchedLinear", "TypedMLP"]


class TypedMLP(nn.Module):
    r"""An MLP shared by all agents with a per-type first layer (:class:`~ipgnn.nn.propagation.TypedEncoder`,
    app. B.2 of the IP paper for heterogeneous agents):
    :math:`f(o_i) = W_L \mathrm{ReLU}(\cdots \mathrm{ReLU}(W_{\tau(i)} o_i + b_{\tau(i)}))`.

    Args:
        in_dim, hidden, out_dim: sizes; ``layers`` hidden layers of width ``hidden`` (>= 1).
        num_types: agent types (one first layer each).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int = 2, num_types: int = 1):
        super().__init__()
        self.encoder = TypedEncoder(in_dim, hidden, num_types)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, out_dim)

    def features(self, x: Tensor, agent_type: Tensor | None = None) -> Tensor:
        h = self.encoder(x, agent_type)
        for lin in self.hidden:
            h = F.relu(lin(h))
        return h

    def forward(self, x: Tensor, agent_type: Tensor | None = None) -> Tensor:
        return self.out(self.features(x, agent_type))


class BatchedLinear(nn.Module):
    r"""``G`` independent linear layers applied to ``G`` inputs at once: :math:`y_g = x_g W_g + b_g`,
    ``x`` ``[G, B, in] -> [G, B, out]`` with one ``baddbmm`` (no Python loop over ``g``). Each
    :math:`W_g` is initialised as ``nn.Linear`` would be (uniform in :math:`\pm 1/\sqrt{\mathrm{in}}`).

    ``detach=True`` evaluates with the weights detached: a loss then differentiates only w.r.t. the
    input (a frozen critic inside an actor's loss).
    """

    def __init__(self, groups: int, in_features: int, out_features: int):
        super().__init__()
        self.groups, self.in_features, self.out_features = groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, detach: bool = False) -> Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        return torch.baddbmm(b.unsqueeze(1), x, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, in_features={self.in_features}, out_features={self.out_features}"
