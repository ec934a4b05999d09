"""Task-registry entries of the tensor MPE scenarios (``env.task`` names and their scenarios).

=========================  ===========================  =====================================
``env.task``               scenario                     paper
=========================  ===========================  =====================================
``mpe_navigation``         cooperative navigation       Table 1, Fig. 8a-c (N = 15, 30, 200)
``mpe_hetero_navigation``  heterogeneous navigation     Table 1 (N = 100)
``mpe_push``               cooperative push             Table 1, Fig. 8f (N = 100)
``mpe_predator_prey``      prey and predator            Table 1, Fig. 8e (N = 100)
=========================  ===========================  =====================================

``env.options`` are the scenario's own options (see each scenario class), plus ``sim_device``
(``cpu`` by default; ``cuda`` steps the physics on the GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ipgnn.config import ConfigError, EnvConfig
from ipgnn.envs.vector import TensorGraphEnv


def make_tensor_mpe(scenario: str, cfg: EnvConfig) -> TensorGraphEnv:
    from ipgnn.envs.mpe_tensor.scenarios import make_scenario

    opts = dict(cfg.options)
    device = str(opts.pop("sim_device", "cpu"))
    try:
        task = make_scenario(
            scenario,
            cfg.num_agents,
            num_envs=cfg.num_envs,
            max_steps=cfg.max_steps,
            continuous=cfg.continuous_actions,
            device=device,
            **opts,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"env.options (task '{cfg.task}'): {exc}") from None
    return TensorGraphEnv(task, cfg.graph)


TENSOR_MPE_TASKS: dict[str, Callable[[EnvConfig], TensorGraphEnv]] = {
    "mpe_navigation": partial(make_tensor_mpe, "spread"),
    "mpe_hetero_navigation": partial(make_tensor_mpe, "hetero"),
    "mpe_push": partial(make_tensor_mpe, "push"),
    "mpe_predator_prey": partial(make_tensor_mpe, "predator"),
}
