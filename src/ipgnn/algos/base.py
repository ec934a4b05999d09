r"""The interface every algorithm implements, and what they share: :class:`Algorithm`.

An algorithm is a class (a ``torch.nn.Module`` holding its networks), a documented configuration (the
``algo`` config section, with the method's own settings in ``algo.options`` described by :attr:`Algorithm.OPTIONS`)
and capability flags, registered once in :data:`ipgnn.algos.ALGOS` (the habit of BenchMARL's algorithms).

One gradient step (:meth:`Algorithm.update`) is the same for every method::

    terms = losses(batch)                        # every loss term and diagnostic, one forward
    zero every optimiser; backward(sum of the LOSSES terms)
    clip the gradient of each group in grad_groups to algo.max_grad_norm (norms logged before clipping)
    step every optimiser; num_updates += 1
    every algo.target_update_interval steps: target_update()   # Polyak, eq. below

and the full state (networks and targets, optimisers, counters) is written and read in one place.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ipgnn.algos.memory import check_memory
from ipgnn.algos.options import parse_options, require_discrete
from ipgnn.algos.targets import make_target, polyak_update
from ipgnn.config import AlgoConfig, ModelConfig
from ipgnn.replay import TransitionBatch

__all__ = ["Algorithm", "num_graphs"]


def num_graphs(obs: Data | Batch, num_agents: int) -> int:
    """How many environments (graphs of ``num_agents`` nodes) ``obs`` holds."""
    n = obs.x.size(0)
    if n % num_agents:
        raise ValueError(f"{n} nodes is not a whole number of graphs of {num_agents} agents")
    return n // num_agents


class Algorithm(nn.Module, ABC):
    r"""A multi-agent learner: its networks, optimisers, losses and one gradient step.

    A subclass builds its networks in ``__init__`` (after ``super().__init__``; the order of construction is
    the order of the random draws of their initialisation), registers each target network with
    :meth:`add_target`, and fills :attr:`optimizers` and :attr:`grad_groups`. It implements :meth:`act` and
    :meth:`losses`; :meth:`update`, :meth:`target_update` and the state are shared.

    Configuration and capability flags (class attributes):

    - :attr:`NAME`: the ``algo.name`` that selects it;
    - :attr:`OPTIONS`: the schema of ``algo.options``, ``{option: (accepted type(s), default)}`` (each
      algorithm's module docstring documents every option and its source);
    - :attr:`LOSSES`: the terms of :meth:`losses` that are summed and minimised (the others are diagnostics);
    - :attr:`supports_discrete_actions`, :attr:`supports_continuous_actions`: the action spaces it handles
      (:meth:`check` refuses the others);
    - :attr:`has_centralized_critic`: a critic that reads every agent (QMIX's mixer, MADDPG, MADDPG-S, PIC);
    - :attr:`mixed_precision`: it honours ``algo.precision: bf16`` (:func:`ipgnn.algos.make_algo` refuses bf16
      for the others).

    State: ``state_dict()`` / ``load_state_dict()`` are ``torch.nn.Module``'s (networks, targets, buffers; their
    keys are those of the checkpoints' ``algo.networks``); :meth:`full_state_dict` / :meth:`load_full_state_dict`
    add the optimisers and the counters, for an exact resume.

    Counters: ``num_updates`` (gradient steps) and ``env_steps``, the environment steps the policy explored
    (:meth:`count_steps`, called by :meth:`act` with ``deterministic=False`` in the algorithms whose exploration
    schedule reads it: one per environment of a batch). The schedules multiply their step counts by
    ``schedule_scale`` (set by :func:`ipgnn.algos.make_algo` from
    :attr:`ipgnn.config.TrainConfig.schedule_scale`: the same fraction of every run for every method).

    Args:
        spec: the task's agents (:class:`ipgnn.spec.AgentSpec`: ``obs_dim``, ``action_dim``, ``discrete``,
            ``num_agent_types``).
        algo: the ``algo`` config section.
        num_agents: N (None for an algorithm whose networks work for any N and that counts no steps).
    """

    NAME: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {}
    LOSSES: ClassVar[tuple[str, ...]] = ("loss",)
    supports_discrete_actions: ClassVar[bool] = True
    supports_continuous_actions: ClassVar[bool] = True
    has_centralized_critic: ClassVar[bool] = False
    mixed_precision: ClassVar[bool] = False
    MEMORY_ADVICE: ClassVar[str] = ""  # appended to the error of :meth:`check` when the networks cannot fit

    schedule_scale: float = 1.0

    def __init__(self, spec: Any, algo: AlgoConfig, num_agents: int | None):
        super().__init__()
        self.spec, self.cfg = spec, algo
        self.num_agents = None if num_agents is None else int(num_agents)
        self.opts = self.read_options(algo)
        self.num_updates = 0
        self.env_steps = 0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.grad_groups: dict[str, nn.Module] = {}
        self.target_pairs: list[tuple[str, str]] = []  # (target, online) attribute names, in update order

    # ----------------------------------------------------------------------------------------------
    # configuration

    @classmethod
    def read_options(cls, algo: AlgoConfig) -> dict[str, Any]:
        """``algo.options`` checked against :attr:`OPTIONS` (names and types), the defaults filled in."""
        return parse_options(algo.options, cls.OPTIONS, cls.NAME)

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        """Raise :class:`~ipgnn.config.ConfigError` for an option value this algorithm cannot use."""

    @classmethod
    def memory_bytes(
        cls, spec: Any, model: ModelConfig, opts: dict[str, Any], num_agents: int, batch_size: int
    ) -> tuple[int, str] | None:
        """Bytes the networks and one minibatch need, with a breakdown; None when they do not grow with N."""
        return None

    @classmethod
    def check(
        cls,
        spec: Any,
        model: ModelConfig,
        algo: AlgoConfig,
        num_agents: int,
        batch_size: int,
        device: Any = None,
    ) -> None:
        """Raise :class:`~ipgnn.config.ConfigError` before anything is built when this algorithm cannot run the
        task: an option (:meth:`read_options`, :meth:`check_options`), an action space it does not support, or
        memory it cannot have (:meth:`memory_bytes` against the free memory of ``device``)."""
        opts = cls.read_options(algo)
        cls.check_options(opts, model)
        if not cls.supports_continuous_actions:
            require_discrete(cls.NAME, spec)
        need = cls.memory_bytes(spec, model, opts, num_agents, batch_size)
        if need is not None:
            check_memory(cls.NAME, *need, device, advice=cls.MEMORY_ADVICE)

    # ----------------------------------------------------------------------------------------------
    # acting

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def count_steps(self, obs: Data | Batch) -> None:
        """Count the environments of ``obs`` as explored environment steps (``env_steps``)."""
        self.env_steps += num_graphs(obs, self.num_agents)

    def action_features(self, action: Tensor) -> Tensor:
        """A stored action as a critic reads it: one-hot (discrete) or the raw vector (continuous)."""
        if self.spec.discrete:
            return F.one_hot(action.long(), self.spec.action_dim).float()
        return action

    @abstractmethod
    def act(self, obs: Data | Batch, deterministic: bool = False) -> Tensor:
        """The joint action of the agents of ``obs``: ``[num_nodes]`` long (discrete) or ``[num_nodes, D]``;
        ``deterministic`` for the greedy policy (evaluation), otherwise the exploring one."""

    # ----------------------------------------------------------------------------------------------
    # learning

    @abstractmethod
    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """Every loss term (the :attr:`LOSSES` keys, with their graphs) and diagnostic of one minibatch."""

    def loss_context(self, batch: TransitionBatch) -> contextlib.AbstractContextManager:
        """The context :meth:`losses` runs in within :meth:`update` (IP-SAC: bfloat16 autocast)."""
        return contextlib.nullcontext()

    def total_loss(self, terms: dict[str, Tensor]) -> Tensor:
        """The sum of the :attr:`LOSSES` terms present in ``terms``, left to right."""
        parts = [terms[k] for k in self.LOSSES if k in terms]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One gradient step of every network on ``batch`` and, when due, the target update; returns every term
        of :meth:`losses` and the gradient norms ``grad_norm/<group>`` as floats."""
        with self.loss_context(batch):
            terms = self.losses(batch)
        norms = self.gradient_step(self.total_loss(terms))
        if self.target_due():
            self.target_update()
        return {**self.floats(terms), **norms}

    def gradient_step(self, loss: Tensor) -> dict[str, float]:
        """Zero, backward, clip each group to ``max_grad_norm`` (norms logged before clipping), step."""
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.max_grad_norm or float("inf")
        norms = {
            f"grad_norm/{k}": float(nn.utils.clip_grad_norm_(m.parameters(), clip)) for k, m in self.grad_groups.items()
        }
        for opt in self.optimizers.values():
            opt.step()
        self.num_updates += 1
        return norms

    @staticmethod
    def floats(terms: dict[str, Any]) -> dict[str, float]:
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}

    # ----------------------------------------------------------------------------------------------
    # target networks

    def add_target(self, name: str) -> nn.Module:
        """Register ``<name>_target``, a frozen copy of the network ``self.<name>`` that :meth:`target_update`
        moves towards it; returns it. Call it where the target belongs in the order of the modules (it draws no
        random numbers, but fixes the order of the state's keys)."""
        target = make_target(getattr(self, name))
        setattr(self, f"{name}_target", target)
        self.target_pairs.append((f"{name}_target", name))
        return target

    def target_due(self) -> bool:
        """Whether the gradient step just taken is one of every ``algo.target_update_interval``."""
        return self.num_updates % self.cfg.target_update_interval == 0

    def target_update(self) -> None:
        r"""Polyak averaging of every target network towards its online network (IP paper, Algorithm 1;
        :func:`~ipgnn.algos.targets.polyak_update`):

        .. math::
            \bar\theta \leftarrow \tau\,\theta + (1 - \tau)\,\bar\theta, \qquad \tau = \texttt{algo.tau}

        (``tau: 1``: a hard copy)."""
        for target, online in self.target_pairs:
            polyak_update(getattr(self, target), getattr(self, online), self.cfg.tau)

    # ----------------------------------------------------------------------------------------------
    # state

    def full_state_dict(self) -> dict:
        """Networks and targets (``state_dict()``), counters and optimisers: all an exact resume needs."""
        return {
            "networks": self.state_dict(),
            "num_updates": self.num_updates,
            "env_steps": self.env_steps,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
        }

    def load_full_state_dict(self, state: dict) -> None:
        """Restore :meth:`full_state_dict` (a checkpoint without ``env_steps`` restores 0)."""
        self.load_state_dict(state["networks"])
        self.num_updates = int(state["num_updates"])
        self.env_steps = int(state.get("env_steps", 0))
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
