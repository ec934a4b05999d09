"""A trained run, loaded back: its config, a fresh environment of its task and its learner.

::

    from ipgnn.runs import load_run
    run = load_run("runs/mpe_spread_small-20261125-170000")  # a run directory, or a checkpoint .pt
    run.evaluate(episodes=10)  # {"eval/episode_return": ...}: the trainer's greedy evaluation

``cfg, env, algo = run`` unpacks it. This is the one place where a checkpoint becomes networks: ``ipgnn-eval``,
``ipgnn-export``, ``ipgnn-robustness``, ``ipgnn-interpret`` and :mod:`ipgnn.analysis` call :func:`load_run`
(or :func:`read_checkpoint` first, to check the saved config before an environment is built). It also holds
what the trainer and these commands share to play a policy: :func:`evaluate` (the evaluation episodes of a
run seed), :func:`greedy_policy`, :func:`random_policy` and :func:`resolve_device`.

Layering: this module builds environments (:mod:`ipgnn.envs`) and learners (:mod:`ipgnn.algos`); the
trainer and the commands import it, never the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ipgnn import checkpoint as checkpoint_file
from ipgnn.algos import make_algo
from ipgnn.config import ConfigError, ExperimentConfig, deep_merge, parse_overrides, validate
from ipgnn.envs import make_env
from ipgnn.seeding import eval_seed

LATEST = Path("checkpoints") / "latest.pt"  # a run directory's checkpoint (written by ipgnn.training.checkpointing)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(name)


def evaluate(act, env, episodes: int, seed: int) -> dict[str, float]:
    """Run the evaluation episodes of the run seeded ``seed`` (reset ``k`` with
    :func:`ipgnn.seeding.eval_seed` ``(seed, k)``; a batched task of ``B`` environments plays ``B`` at a
    time, so at least ``episodes``) with ``act(obs) -> action`` and return the
    means of the episode metrics as ``eval/<metric>`` (``eval/episode_return`` is
    :math:`\\sum_t \\sum_i r_i^t`). A policy with a ``begin_episode(key)`` method is told each episode's
    seed before its reset (:class:`ipgnn.decentralised.DecentralisedPolicy` empties its mailboxes)."""
    totals: dict[str, float] = {}
    per_reset = int(getattr(env, "num_envs", 1))  # a batched task plays num_envs episodes per reset
    resets = max(1, math.ceil(episodes / per_reset))
    begin = getattr(act, "begin_episode", None)  # a policy with state across steps (decentralised execution)
    for ep in range(resets):
        if begin is not None:
            begin(eval_seed(seed, ep))
        obs = env.reset(seed=eval_seed(seed, ep))
        while True:
            res = env.step(act(obs))
            obs = res.obs
            if res.done:
                for k, v in res.episode.items():
                    totals[k] = totals.get(k, 0.0) + v
                break
    return {f"eval/{k}": v / resets for k, v in totals.items()}


def greedy_policy(algo: torch.nn.Module, device: torch.device | None = None, deterministic: bool = True):
    """``obs -> action`` with the trained policy: the mode of each :math:`q_i` when ``deterministic``.
    ``device``: where ``algo`` runs (default: where its parameters are)."""
    if device is None:
        device = next(algo.parameters()).device

    def act(obs):
        return algo.act(obs.to(device), deterministic=deterministic).cpu()

    return act


def random_policy(env):
    """``obs -> action``: uniformly random valid actions (the baseline every learning claim beats)."""
    return env.random_action


def restore_algo(state: dict, cfg: ExperimentConfig, env, device: torch.device | None = None):
    """The learner a checkpoint holds (``state`` from :func:`ipgnn.checkpoint.load`, ``cfg`` its validated
    config), built for ``env``'s task on ``device`` (default CPU) and put in evaluation mode.

    Raises :class:`ValueError` naming the first mismatched tensor when the task's observation, action or agent
    sizes differ from the checkpoint's (an override changed the task)."""
    device = torch.device("cpu") if device is None else device
    algo = make_algo(
        env.spec, cfg.model, cfg.algo, env.num_agents, cfg.replay.batch_size, device, cfg.train.schedule_scale
    ).to(device)
    try:
        algo.load_full_state_dict(state["algo"])
    except RuntimeError as exc:  # shapes
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise ValueError(f"the checkpoint's networks do not fit this task ({first[0].strip()})") from exc
    return algo.eval()


@dataclass(frozen=True)
class SavedRun:
    """A checkpoint file read and its saved config validated; no environment or network is built yet."""

    path: Path
    state: dict[str, Any]
    cfg: ExperimentConfig  # the config the run was trained with

    @property
    def env_step(self) -> int:
        return int(self.state.get("env_step", 0))


def read_checkpoint(checkpoint: str | Path) -> SavedRun:
    """Read a checkpoint ``.pt`` written by ``ipgnn-train`` (or a run directory: its ``checkpoints/latest.pt``)
    and validate the config saved in it.

    The file is checked against the digest it was saved with (:func:`ipgnn.checkpoint.read`); one written
    before digests loads with a warning that it is unverified.

    Raises:
        FileNotFoundError: no such checkpoint (or a directory without ``checkpoints/latest.pt``).
        ValueError (ConfigError included): an unreadable or damaged file (digest mismatch:
            :class:`ipgnn.checkpoint.CheckpointDamaged`), one without config and networks, or a saved
            config that no longer validates (the message names the file).
    """
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / LATEST).is_file():
            raise FileNotFoundError(
                f"'{path}' is a directory without {LATEST}: pass a checkpoint .pt or a run directory"
            )
        path = path / LATEST
    state, digest = checkpoint_file.read(path)
    if not isinstance(state.get("config"), dict) or "algo" not in state:
        raise ValueError(
            f"checkpoint '{path}' holds no config and networks: not a checkpoint written by ipgnn-train "
            f"(pass <run>/{LATEST} or the run directory)"
        )
    saved = SavedRun(path, state, validate(state["config"], str(path)))
    if digest is None:  # written before checkpoints carried digests: warned once the file proved usable
        checkpoint_file.warn_unverified(path)
    return saved


def with_overrides(cfg: ExperimentConfig, overrides: Sequence[str] | None, source: str) -> ExperimentConfig:
    """``cfg`` with ``--section.key=value`` overrides applied (an error names the override and ``source``)."""
    if not overrides:
        return cfg
    return validate(deep_merge(cfg.to_dict(), parse_overrides(list(overrides))), f"command-line override on {source}")


@dataclass
class Run:
    """A run rebuilt from its checkpoint: its config, a fresh environment of its task and the trained learner
    (in evaluation mode, on ``device``). Unpacks as ``cfg, env, algo = run``; ``with load_run(...) as run:``
    closes the environment at the end."""

    cfg: ExperimentConfig
    env: Any
    algo: torch.nn.Module
    path: Path  # the checkpoint file
    env_step: int  # environment steps the learner was trained for
    device: torch.device

    def __iter__(self) -> Iterator[Any]:
        return iter((self.cfg, self.env, self.algo))

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.env.close()

    def evaluate(self, episodes: int | None = None, seed: int | None = None, deterministic: bool = True):
        """The trainer's evaluation (:meth:`ipgnn.trainer.Trainer.evaluate`): the greedy policy on the
        ``episodes`` (default ``train.eval_episodes``) evaluation episodes of run seed ``seed`` (default the
        run's), as ``{"eval/<metric>": mean}``."""
        return evaluate(
            greedy_policy(self.algo, self.device, deterministic),
            self.env,
            episodes or self.cfg.train.eval_episodes,
            self.cfg.seed if seed is None else seed,
        )


def load_run(
    checkpoint: str | Path | SavedRun,
    overrides: Sequence[str] | None = None,
    device: str | torch.device | None = "cpu",
) -> Run:
    """Rebuild a trained run from a checkpoint ``.pt`` or a run directory (or a :class:`SavedRun` already
    read by :func:`read_checkpoint`).

    Args:
        checkpoint: ``runs/<run>``, ``runs/<run>/checkpoints/latest.pt`` or a :class:`SavedRun`.
        overrides: ``["--env.max_steps=20", "--env.options.engine=sumo", ...]``, as ``ipgnn-train`` takes them.
            The policy is shared across agents, so it can play another scenario of the same observation
            layout; an override that changes the networks' sizes is refused by the networks (``ValueError``).
        device: where the learner runs (default CPU; ``run.cfg.device`` then says so); ``None``: the
            device the run's config asks for (``auto``: CUDA when torch sees one), as ``ipgnn-eval`` does.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError (ConfigError included): unreadable checkpoint, bad override or config, or networks that do
            not fit the task (the message names the first mismatched tensor and the overrides).
    """
    saved = checkpoint if isinstance(checkpoint, SavedRun) else read_checkpoint(checkpoint)
    cfg = with_overrides(saved.cfg, overrides, str(saved.path))
    if device is None:
        where = resolve_device(cfg.device)
    else:
        where = torch.device(device)
        cfg = cfg.model_copy(update={"device": where.type})
    env = make_env(cfg.env)
    try:
        algo = restore_algo(saved.state, cfg, env, where)
    except ValueError as exc:
        env.close()
        if not overrides:
            raise
        raise ValueError(
            f"{exc}; an override ({' '.join(overrides)}) changed its observations, actions or agents"
        ) from exc
    except BaseException:
        env.close()
        raise
    return Run(cfg, env, algo, saved.path, saved.env_step, where)
