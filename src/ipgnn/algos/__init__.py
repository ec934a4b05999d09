"""Learning algorithms, selected by ``algo.name``: IP-SAC, the paper's baselines (sec. 5.2, app. B.1) and CoLight.

Every algorithm subclasses :class:`~ipgnn.algos.base.Algorithm` (a ``torch.nn.Module``) and is built as
``cls(spec, model_cfg, algo_cfg, num_agents)``. The interface the trainer uses:

- ``check(spec, model_cfg, algo_cfg, num_agents, batch_size, device=None)`` (classmethod): raises
  :class:`~ipgnn.config.ConfigError` before anything is built (an option, a task the algorithm cannot handle,
  or memory it cannot have);
- ``act(obs, deterministic=False) -> Tensor`` (``[num_nodes]`` long or ``[num_nodes, D]``);
- ``losses(batch) -> dict[str, Tensor]`` (every loss term and diagnostic of one minibatch);
- ``update(batch: TransitionBatch) -> dict[str, float]`` (one gradient step; every loss logged);
- ``target_update()`` (Polyak averaging of the target networks);
- ``state_dict()`` / ``load_state_dict()`` (networks) and ``full_state_dict()`` / ``load_full_state_dict()``
  (with the optimisers and the counters ``num_updates``, ``env_steps``);
- the capability flags ``supports_discrete_actions``, ``supports_continuous_actions``, ``has_centralized_critic``
  and ``mixed_precision`` (it honours ``algo.precision: bf16``; only IP-SAC does).

Adding an algorithm is one subclass and one entry in :data:`ALGOS` (``name -> "module:Class"``, imported on use).

The modules: :mod:`~ipgnn.algos.base` (the interface), :mod:`~ipgnn.algos.targets` (target networks, Polyak
averaging, TD targets), :mod:`~ipgnn.algos.exploration` (epsilon-greedy, action masks, Gumbel-softmax),
:mod:`~ipgnn.algos.qlearning` (what the value-based baselines share), :mod:`~ipgnn.algos.options` (option and
task checks), :mod:`~ipgnn.algos.optim` (optimisers), :mod:`~ipgnn.algos.memory` (refusing what cannot fit), and
one module per method.
"""

from __future__ import annotations

import importlib
from typing import Any

from ipgnn.algos.base import Algorithm
from ipgnn.config import AlgoConfig, ConfigError, ModelConfig
from ipgnn.precision import check_precision

ALGOS: dict[str, str] = {
    "ipsac": "ipgnn.algos.ipsac:IPSAC",
    "iql": "ipgnn.algos.iql:IQL",
    "dgn": "ipgnn.algos.dgn:DGN",
    "qmix": "ipgnn.algos.qmix:QMIX",
    "maddpg": "ipgnn.algos.maddpg:MADDPG",
    "maddpg_s": "ipgnn.algos.maddpg:MADDPGS",
    "pic": "ipgnn.algos.maddpg:PIC",
    "colight": "ipgnn.algos.colight:CoLight",
}


def algo_class(name: str) -> type[Algorithm]:
    """The class registered as ``name`` in :data:`ALGOS` (a ConfigError naming the known ones otherwise)."""
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
) -> Algorithm:
    """Check that ``algo.name`` can run this task on ``device`` (raising a ConfigError that says why not:
    an unsupported action kind, or memory it cannot have), then build it. ``schedule_scale``
    (:attr:`ipgnn.config.TrainConfig.schedule_scale`) multiplies the algorithm's step-denominated
    schedules (the epsilon decay of the value-based baselines)."""
    cls = algo_class(algo.name)
    check_precision(algo.precision, algo.name, cls.mixed_precision)
    cls.check(spec, model, algo, num_agents, batch_size, device=device)
    built = cls(spec, model, algo, num_agents)
    built.schedule_scale = float(schedule_scale)
    return built


__all__ = ["ALGOS", "Algorithm", "algo_class", "make_algo"]
