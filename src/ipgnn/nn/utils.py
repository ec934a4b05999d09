"""Small helpers shared by the learners' losses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Evaluate ``module`` without accumulating gradients in its parameters (inputs still get them)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def float32_output(layer: nn.Module, z: Tensor) -> Tensor:
    """``layer(z)`` in float32, also inside a bfloat16 autocast region: the last layer of a network whose output
    is regressed or differenced (Q, V, logits). bfloat16 keeps 8 bits of mantissa, so ``Q = -40`` would be
    known only to +-0.125, coarser than the TD errors the critics learn from. Without autocast: ``layer(z)``."""
    if torch.is_autocast_enabled(z.device.type):
        with torch.autocast(z.device.type, enabled=False):
            return layer(z.float())
    return layer(z)
