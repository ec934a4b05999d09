"""Tensor operations shared by the environments and the graph builders.

:func:`smallest_k` selects the ``k`` smallest of many rows of non-negative values (distances or
squared distances): the observation of the ``k`` nearest landmarks and agents in the tensor MPE
scenarios, and the k-NN communication graph. ``torch.topk`` does this exactly, but on the CPU it costs
about 1.5 us per row of 200 whatever ``k`` is (measured: 19 ms for ``[64, 200, 200]``, ``k = 5``, one
thread), which was half of a tensor MPE step at ``N = 200``. The CPU path here is exact too, and
2.7x (two threads) to 3.6x (one thread) faster at that size; the measurements are in
``benchmarks/README.md`` (``python benchmarks/bench_mpe.py --select``).
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable

import torch
from torch import Tensor

_INDEX_BITS = 0xFFFFFFFF
#: added to every value's bits in the key's high word, so that no key is a float64 denormal (a zero
#: or denormal distance would otherwise make one, and flush-to-zero, which a library built with
#: fast-math may switch on, reads every denormal as 0 and loses the index).
_BIAS = 0x00100000
#: high word of the padding keys: above every non-negative float32 plus the bias (+inf, canonical NaN),
#: and still a finite float64.
_PAD_HIGH = 0x7FEFFFFF
#: ``topk`` is used below ``_MIN_VALUES * threads**2`` values (rows x candidates), and for more than
#: ``_MAX_CANDIDATES`` candidates per row. ``topk`` runs its rows in parallel and the tournament's small
#: steps do not, so the crossover grows with the thread count: on the 2-core CPU of
#: ``benchmarks/README.md`` the tournament wins from about ``2**15`` values with one thread (1.3-4.8x)
#: and ``2**17`` with two (1.5-2.9x), and loses on ``[1, 1225, 1225]`` with two threads (0.78x).
_MIN_VALUES = 2**15
_MAX_CANDIDATES = 512
#: keys per block of rows (8 bytes each): a block's keys stay in the CPU's caches through the rounds.
_BLOCK_BYTES = 4 * 2**20


_local = threading.local()  # per-thread work buffers: two threads never share one


def _cached(key: tuple, make: Callable[[], Tensor]) -> Tensor:
    """A work buffer kept between calls (at most 8 per thread): allocating a fresh multi-megabyte
    tensor costs page faults on every call, about 1 ms per 10 MB on the CPU. Made outside inference
    mode, so that a buffer first needed under ``torch.inference_mode()`` can be written after it."""
    cache = getattr(_local, "buffers", None)
    if cache is None:
        cache = _local.buffers = {}
    buf = cache.get(key)
    if buf is None:
        if len(cache) >= 8:
            cache.clear()
        with torch.inference_mode(False):
            buf = cache[key] = make()
    return buf


def _key_buffer(shape: tuple[int, ...], m: int, device: torch.device) -> Tensor:
    """``[*rows, m_pad, 2]`` int32 words whose low words hold the candidate index and whose high words
    receive the values' biased bits; the padding slots ``m .. m_pad - 1`` have their own indices and a
    high word above every value's, so they rank after all ``m >= k`` candidates and are never chosen."""

    def make() -> Tensor:
        buf = torch.empty(*shape, 2, dtype=torch.int32, device=device)
        buf[..., 0] = torch.arange(shape[-1], dtype=torch.int32, device=device)
        buf[..., m:, 1] = _PAD_HIGH
        return buf

    return _cached(("keys", shape, m, device), make)


def _group_buffer(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """The groups' current smallest keys (overwritten by every call)."""
    return _cached(("groups", shape, device), lambda: torch.empty(shape, dtype=torch.float64, device=device))


def smallest_k(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest entries along the last dimension, in ascending order, with their indices.

    Args:
        values: ``[..., M]``: distances or squared distances, ``+inf`` for a candidate that must not be
            chosen. Any float input is accepted; the fast path below serves the non-negative ones.
        k: how many, ``0 <= k <= M``.

    Returns:
        ``(values [..., k], indices [..., k])``, as ``values.topk(k, largest=False, sorted=True)``.

    On the CPU, for float32 inputs large enough (see ``_MIN_VALUES``; ``2**15`` values with one
    thread) with ``4 k <= M <= 512``, a tournament over packed keys replaces ``topk``, with the same
    result. A non-negative float32's bits, read as an integer, order like its value; plus a bias
    (``_BIAS``), in the high word of a 64-bit key whose low word is the candidate's index, every key is
    distinct, orders by ``(value, index)`` and, read as a float64, is a finite positive normal number,
    so that the vectorised float64 ``amin`` finds the smallest. The candidates are split into ``C``
    strided groups (candidate ``j`` in group ``j mod C``); one ``amin`` gives each group's smallest
    key, and ``k`` rounds each take the smallest of the ``C`` group minima and replace it by the next
    key of its group. Ties are broken by the lower index; ``topk`` (every other case) breaks them in an
    unspecified order, so only tied candidates can come out in another order. When a chosen value is
    negative or NaN (keys do not order those), the call is answered by ``topk``; inputs that need a
    gradient also go to ``topk``, whose values carry one.
    """
    m = values.shape[-1]
    if not 0 <= k <= m:
        raise ValueError(f"smallest_k: k must be in [0, {m}] (the number of candidates), got {k}")
    if (
        values.device.type != "cpu"
        or values.dtype != torch.float32
        or m < 4 * k
        or m > _MAX_CANDIDATES
        or values.numel() < _MIN_VALUES * torch.get_num_threads() ** 2
        or k == 0
        or sys.byteorder != "little"
        or (values.requires_grad and torch.is_grad_enabled())
    ):
        return values.topk(k, dim=-1, largest=False, sorted=True)
    if values.dim() == 1:
        v, i = smallest_k(values.unsqueeze(0), k)
        return v[0], i[0]
    # blocks along the first dimension, each with its keys in cache through the k rounds (at
    # [64, 200, 200], blocks of 16 worlds: 5.3 ms against 7.2 ms in one block, one thread)
    inner = math.prod(values.shape[1:-1])
    block = max(1, _BLOCK_BYTES // (8 * m * inner))
    out = torch.empty(*values.shape[:-1], k, dtype=torch.float64, device=values.device)
    for start in range(0, values.shape[0], block):  # blocks of rows, not single rows
        _tournament(values[start : start + block], k, out[start : start + block])
    packed = out.view(torch.int64)
    chosen = ((packed >> 32) - _BIAS).to(torch.int32).view(torch.float32)
    if not bool((chosen >= 0).all()):
        # a negative value or a NaN (keys order non-negative numbers only): it ranks first, or its
        # key is not a number, so it is among the chosen; topk orders these cases
        return values.topk(k, dim=-1, largest=False, sorted=True)
    return chosen, packed & _INDEX_BITS


def _tournament(values: Tensor, k: int, out: Tensor) -> None:
    """Write the ``k`` smallest packed keys of ``values [..., M]`` into ``out [..., k]`` (float64)."""
    m = values.shape[-1]
    rows = values.shape[:-1]
    per_group = max(1, round(math.sqrt(m / (2.0 * k))))  # c: each group's size
    groups = -(-m // per_group)  # C
    m_pad = groups * per_group
    buf = _key_buffer((*rows, m_pad), m, values.device)
    torch.add(values.view(torch.int32), _BIAS, out=buf[..., :m, 1])
    keys = buf.view(torch.float64).squeeze(-1)  # [..., m_pad]: (value bits + bias) << 32 | index, as float64
    grouped = keys.view(*rows, per_group, groups)
    best = torch.amin(grouped, -2, out=_group_buffer((*rows, groups), values.device))  # [..., C]: groups' smallest
    offsets = torch.arange(per_group, device=values.device) * groups
    for s in range(k):  # k rounds (k is small); no loop over rows or candidates
        top = best.amin(-1, keepdim=True)  # [..., 1]: the s-th smallest key overall
        out[..., s : s + 1] = top
        group = (top.view(torch.int64) & _INDEX_BITS) % groups
        members = keys.gather(-1, group + offsets)  # [..., c]: that group's keys
        members.masked_fill_(members <= top, float("inf"))  # those already taken
        best.scatter_(-1, group, members.amin(-1, keepdim=True))
