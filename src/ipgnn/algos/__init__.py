"""Learning algorithms, selected by ``algo.name``: IP-SAC and the paper's baselines (sec. 5.2, app. B.1).

Every algorithm is a ``torch.nn.Module`` with the interface the trainer uses:

- ``__init__(spec, model_cfg, algo_cfg, num_agents)``;
- ``act(obs, deterministic=False) -> Tensor`` (``[num_nodes]`` long or ``[num_nodes, D]``);
- ``update(batch: TransitionBatch) -> dict[str, float]`` (one gradient step; every loss logged);
- ``num_updates``, ``full_state_dict()``, ``load_full_state_dict(state)``;
- optionally ``mixed_precision = True`` when it honours ``algo.precision: bf16`` (only IP-SAC does);
- optionally a classmethod ``check(spec, model_cfg, algo_cfg, num_agents, batch_size, device=None)`` that raises
  :class:`~ipgnn.config.ConfigError` before anything is built (a task the algorithm cannot handle, or
  memory it cannot have).

Adding an algorithm is one entry in :data:`ALGOS` (``name -> "module:Class"``, imported on use).
"""

from __future__ import annotations

import importlib
from typing import Any

from ipgnn.config import AlgoConfig, ConfigError, ModelConfig

ALGOS: dict[str, str] = {
    "ipsac": "ipgnn.algos.ipsac:IPSAC",
    "iql": "ipgnn.algos.iql:IQL",
    "dgn": "ipgnn.algos.dgn:DGN",
    "qmix": "ipgnn.algos.qmix:QMIX",
    "maddpg": "ipgnn.algos.maddpg:MADDPG",
    "maddpg_s": "ipgnn.algos.maddpg:MADDPGS",
    "pic": "ipgnn.algos.maddpg:PIC",
}


def algo_class(name: str) -> Any:
    if name not in ALGOS:
        raise ConfigError(f"algo.name: unknown algorithm '{name}'; known: {', '.join(ALGOS)}")
    module, cls = ALGOS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_algo(
    spec: Any,
    model: ModelConfig,
    algo: AlgoConfig,
    num_agents: int,
    batch_size: int = 1024,
    device: Any = None,
    schedule_scale: float = 1.0,
) -> Any:
    """Check that ``algo.name`` can run this task on ``device`` (raising a ConfigError that says why not:
    an unsupported action kind, or memory it cannot have), then build it. ``schedule_scale``
    (:attr:`ipgnn.config.TrainConfig.schedule_scale`) multiplies the algorithm's step-denominated
    schedules (the epsilon decay of the value-based baselines)."""
    cls = algo_class(algo.name)
    if algo.precision != "fp32" and not getattr(cls, "mixed_precision", False):
        raise ConfigError(
            f"algo.precision: {algo.precision} is implemented for ipsac only (its networks keep their "
            f"outputs in float32 under autocast); '{algo.name}' runs in fp32: set algo.precision: fp32"
        )
    check = getattr(cls, "check", None)
    if check is not None:
        check(spec, model, algo, num_agents, batch_size, device=device)
    built = cls(spec, model, algo, num_agents)
    built.schedule_scale = float(schedule_scale)
    return built


__all__ = ["ALGOS", "algo_class", "make_algo"]
