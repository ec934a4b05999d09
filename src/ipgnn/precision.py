"""The update's numeric precision, ``algo.precision``: ``fp32``, or ``bf16`` (the forward of the networks under
bfloat16 autocast; their outputs, the losses, the parameters and the optimiser states in float32). The one
place that knows what bf16 needs: the autocast region (:func:`autocast`), which algorithms honour it
(:func:`check_precision`), whether this machine computes it natively (:func:`native_bf16`), and the advice the
trainer prints about it (:func:`precision_warnings`, :func:`bf16_advice`).

The measured speed-up is :data:`BF16_SPEEDUP`, written here once (``benchmarks/README.md``, ``bench_update.py``).

torch is imported inside the functions, so that reading this module costs nothing before the CLI decides
whether to re-execute itself.
"""

from __future__ import annotations

import functools
from typing import Any

#: An IP-SAC update in bf16 against fp32 on the 2-core AMD EPYC with AVX512-BF16, by problem size
#: (``benchmarks/bench_update.py``; ``benchmarks/README.md``).
BF16_SPEEDUP = "1.8-3.7x"


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, as oneDNN reports it). Without it,
    ``algo.precision: bf16`` is emulated and slower than fp32; with it, an IP-SAC update measured
    :data:`BF16_SPEEDUP` faster than fp32. Probed once per process."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: assume not
        return False


def autocast(precision: str, device_type: str) -> Any:
    """The region an update's forward runs in: bfloat16 autocast on ``device_type`` when ``precision`` is
    ``bf16``, a disabled (pass-through) autocast for ``fp32``."""
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def check_precision(precision: str, algo_name: str, mixed_precision: bool) -> None:
    """Raise :class:`~ipgnn.config.ConfigError` when ``precision`` is not fp32 and the algorithm does not
    honour it (its class has no ``mixed_precision = True``: only IP-SAC keeps its outputs in float32 under
    autocast)."""
    if precision != "fp32" and not mixed_precision:
        from ipgnn.config import ConfigError

        raise ConfigError(
            f"algo.precision: {precision} is implemented for ipsac only (its networks keep their "
            f"outputs in float32 under autocast); '{algo_name}' runs in fp32: set algo.precision: fp32"
        )


def precision_warnings(precision: str, device_type: str) -> list[str]:
    """Why ``precision`` on a ``device_type`` device would be slow or unsupported (empty when it is fine):
    bf16 on a CPU without native bfloat16 (emulated, slower than fp32), or on a GPU without bfloat16."""
    if precision != "bf16":
        return []
    if device_type == "cpu" and not native_bf16():
        return [
            "algo.precision is bf16 but this CPU has no native bfloat16 (AVX512-BF16 or AMX): torch emulates "
            "it, which is slower than fp32 here; set --algo.precision=fp32"
        ]
    if device_type == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            return ["algo.precision is bf16 but this GPU does not support bfloat16; set --algo.precision=fp32"]
    return []


def bf16_advice(precision: str, mixed_precision: bool) -> str:
    """The sentence to add to a slow-CPU warning when bf16 would help (an fp32 run of an algorithm that honours
    bf16, on a CPU that computes it natively), else ``""``."""
    if precision == "bf16" or not native_bf16() or not mixed_precision:
        return ""
    return (
        " This CPU computes bfloat16 natively: --algo.precision=bf16 makes each update about 2x "
        f"faster ({BF16_SPEEDUP} measured, by size; float32 outputs and losses; see the docs' benchmarks page)."
    )
