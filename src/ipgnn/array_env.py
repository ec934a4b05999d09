"""The optional array protocol of a PettingZoo ``ParallelEnv``: a floor below both :mod:`ipgnn.envs` (whose
:class:`~ipgnn.envs.pettingzoo.ParallelGraphEnv` reads it) and a simulator package such as :mod:`ipgnn.traffic`
(whose :class:`~ipgnn.traffic.simulator_env.TrafficSignalEnv` offers it), so that a simulator never imports the
graph adapters above it: ``envs`` imports ``traffic``, never the other way.
"""

from __future__ import annotations

import numpy as np
from pettingzoo.utils.env import ParallelEnv


class ArrayParallelEnv(ParallelEnv):
    """The optional array protocol of a ``ParallelEnv``, which :class:`~ipgnn.envs.pettingzoo.ParallelGraphEnv`
    uses when an environment has it: the same episode as ``reset``/``step``, with every per-agent quantity an array in
    ``possible_agents`` order instead of a dictionary (at a thousand agents, the dictionaries and the
    per-agent loops that fill them cost more than some simulators' step; see ``benchmarks/README.md``).

    - ``reset_arrays(seed) -> (x [N, obs_dim] float32, action_mask [N, A] bool or None)``;
    - ``step_arrays(actions [N] or [N, D]) -> (x, reward [N], terminated [N] bool, truncated [N] bool,
      action_mask or None)``.
    """

    def reset_arrays(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def step_arrays(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        raise NotImplementedError
