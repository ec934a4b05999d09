"""One seed for everything: Python, NumPy, torch, the simulators and the replay sampler.

Every random stream of a run is derived from the run's seed with :class:`numpy.random.SeedSequence`
(:func:`stream_seed`): training episode ``e`` is reset with ``stream_seed(seed, TRAIN, e)``, evaluation
episode ``k`` with ``stream_seed(seed, EVAL, k)``, and the replay sampler's generator with
``stream_seed(seed, REPLAY)``. The seeds are hashes, not ``seed + e``, so run ``s + 1`` does not replay
run ``s``'s episodes shifted by one, and neighbouring runs do not share evaluation episodes: the ± over
seeds that ``ipgnn-compare`` reports is an honest spread. Streams are 62-bit integers; two of ``n``
derived seeds coincide with probability about ``n**2 / 2**63`` (SUMO, whose ``--seed`` is a C ``int``,
receives the seed modulo ``2**31``: about ``n**2 / 2**32`` there, 6e-3 for 5 runs of 1000 episodes).

RNG states are captured as plain tensors/lists so that checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

TRAIN = 0  #: stream of the training episodes' reset seeds
EVAL = 1  #: stream of the evaluation episodes' reset seeds (shared by the learned policy and the references)
REPLAY = 2  #: seed of the replay sampler's generator
MAX_SEED = 2**63 - 1  #: the largest run seed: torch.manual_seed takes a signed 64-bit integer
_MASK = 2**62 - 1  # room for the small offsets batched tasks and rollout workers add (seed + b, seed + w)


def stream_seed(seed: int, stream: int, index: int = 0) -> int:
    """The ``index``-th seed of stream ``stream`` of the run seeded ``seed``.

    Equal to the first 62 bits of the state of ``SeedSequence(seed).spawn(...)[stream].spawn(...)[index]``
    (a ``SeedSequence`` with ``spawn_key=(stream, index)``), so every stream of every run is an
    independent hash of ``(seed, stream, index)``.
    """
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to {MAX_SEED} (2**63 - 1), got {seed}")
    state = np.random.SeedSequence(int(seed), spawn_key=(int(stream), int(index))).generate_state(1, np.uint64)
    return int(state[0]) & _MASK


def episode_seed(seed: int, episode: int) -> int:
    """Reset seed of training episode ``episode`` of run ``seed``."""
    return stream_seed(seed, TRAIN, episode)


def eval_seed(seed: int, episode: int) -> int:
    """Reset seed of evaluation episode ``episode`` of run ``seed``: the same for every algorithm run with
    ``seed`` (a paired comparison), disjoint from every run's training episodes."""
    return stream_seed(seed, EVAL, episode)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA). Simulators get ``seed`` through ``reset``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
