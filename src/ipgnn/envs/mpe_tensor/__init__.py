"""Batched tensor MPE: ``mpe2``'s particle physics and the paper's four MPE tasks over ``B`` worlds.

- :mod:`.physics`: :class:`TensorWorld`, ``mpe2``'s world step as tensor operations (any device);
- :mod:`.scenarios`: cooperative navigation (``spread``), heterogeneous navigation (``hetero``),
  cooperative push (``push``), prey and predator (``predator``) with local observations and local
  per-agent rewards; :func:`make_scenario` builds one by name;
- :mod:`.parallel`: :class:`TensorMPEParallelEnv`, a PettingZoo ``ParallelEnv`` over one world.

Physics matches ``mpe2`` to float rounding (tested against ``simple_spread_v3`` step by step); what
differs from ``mpe2`` (action encoding, observations, rewards, world size) is stated in each module.
"""

from ipgnn.envs.mpe_tensor.parallel import TensorMPEParallelEnv
from ipgnn.envs.mpe_tensor.physics import TensorWorld, contact_forces
from ipgnn.envs.mpe_tensor.scenarios import (
    DISCRETE_DIRECTIONS,
    SCENARIOS,
    HeteroScenario,
    PredatorScenario,
    PushScenario,
    SpreadScenario,
    TensorMPEScenario,
    make_scenario,
)

__all__ = [
    "DISCRETE_DIRECTIONS",
    "SCENARIOS",
    "HeteroScenario",
    "PredatorScenario",
    "PushScenario",
    "SpreadScenario",
    "TensorMPEParallelEnv",
    "TensorMPEScenario",
    "TensorWorld",
    "contact_forces",
    "make_scenario",
]
