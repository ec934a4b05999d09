"""Refusing, up front and with the figure, a configuration whose networks cannot fit (sizes that grow with N:
the critics of MADDPG, the hyper-networks of QMIX). The replay buffer is checked separately, by the trainer."""

from __future__ import annotations

import torch

from ipgnn import cpu
from ipgnn.config import ConfigError

__all__ = ["MEMORY_FRACTION", "check_memory", "free_memory", "gib"]

MEMORY_FRACTION = 0.8  # refuse a configuration whose estimate exceeds this share of the free memory


def free_memory(device: torch.device | str | None = None) -> tuple[int | None, str]:
    """Free memory where the networks will live, in bytes, and what was read: CUDA's free memory for a CUDA
    device (``torch.cuda.mem_get_info``), otherwise the machine's available memory
    (:func:`ipgnn.cpu.available_memory`, ``MemAvailable``). ``None`` when unknown.

    ``device=None`` resolves as the trainer's ``device: auto`` does (CUDA when torch sees one)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    avail = cpu.available_memory(device)
    return avail, cpu.memory_source(device) if avail is not None else "unknown"


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_memory(name: str, need: int, detail: str, device: torch.device | str | None = None, advice: str = "") -> None:
    """Raise :class:`ConfigError` with the figure when ``need`` bytes exceed
    :data:`MEMORY_FRACTION` of the free memory (:func:`free_memory`)."""
    avail, what = free_memory(device)
    if avail is None or need <= MEMORY_FRACTION * avail:
        return
    raise ConfigError(
        f"algo.name: '{name}' needs about {gib(need)} for its networks and one minibatch ({detail}), "
        f"but only {gib(avail)} is available ({what}){'; ' + advice if advice else ''}"
    )
