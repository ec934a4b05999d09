"""Checks of ``algo.options`` and of the task, raising :class:`~ipgnn.config.ConfigError` with the key, what was
expected and what was got, before anything is built (:meth:`ipgnn.algos.base.Algorithm.check`).

:func:`parse_options` checks the options against a schema ``name -> (accepted type(s), default)`` and fills in
the defaults; the ``require_*`` functions check values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ipgnn.config import ConfigError, check_options

NoneType = type(None)  # in a schema: an option that may be null

__all__ = ["NoneType", "parse_options", "require_choice", "require_discrete", "require_positive", "require_unit"]


def parse_options(options: dict[str, Any], schema: dict[str, tuple[Any, Any]], name: str) -> dict[str, Any]:
    """``algo.options`` checked against ``{option: (accepted type(s), default)}``; returns every option,
    the defaults filled in. Errors name ``algo.options.<key>`` and the algorithm."""
    opts = check_options(dict(options), {k: v[0] for k, v in schema.items()}, name, section="algo.options")
    return {k: opts.get(k, default) for k, (_, default) in schema.items()}


def require_discrete(name: str, spec: Any, instead: str = "maddpg, maddpg_s, pic or ipsac") -> None:
    """Q-learning methods take a max over actions: refuse continuous tasks with what to use instead."""
    if not spec.discrete:
        raise ConfigError(
            f"algo.name: '{name}' is a Q-learning method (a max over a finite set of actions) and this task has "
            f"continuous actions ({spec.action_dim}-dimensional); use {instead}, or set "
            f"env.continuous_actions: false if the task has a discrete version"
        )


def require_positive(opts: dict[str, Any], keys: Iterable[str], name: str, allow_zero: bool = False) -> None:
    """Every ``opts[key]`` that is not None is > 0 (``allow_zero``: >= 0)."""
    for k in keys:
        v = opts[k]
        if v is not None and (v < 0 or (v == 0 and not allow_zero)):
            raise ConfigError(
                f"algo.options.{k}: expected a {'non-negative' if allow_zero else 'positive'} "
                f"number for '{name}', got {v!r}"
            )


def require_choice(opts: dict[str, Any], key: str, valid: Iterable[str], name: str) -> None:
    """``opts[key]`` must be one of ``valid``."""
    valid = tuple(valid)
    if opts[key] not in valid:
        raise ConfigError(
            f"algo.options.{key}: expected {' or '.join(map(str, valid))} for '{name}', got {opts[key]!r}"
        )


def require_unit(opts: dict[str, Any], keys: Iterable[str], name: str) -> None:
    """Every ``opts[key]`` lies in [0, 1]."""
    for k in keys:
        if not 0.0 <= opts[k] <= 1.0:
            raise ConfigError(f"algo.options.{k}: expected a value in [0, 1] for '{name}', got {opts[k]!r}")
