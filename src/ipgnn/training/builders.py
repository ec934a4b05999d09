"""What a trainer is built from besides the learner: the rollout environment and the replay buffer, sized
from the config and the machine's memory."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch

from ipgnn.config import ConfigError, parse_bytes
from ipgnn.envs import make_env
from ipgnn.logger import RunLogger, resolve_wandb_mode
from ipgnn.replay import GraphReplayBuffer
from ipgnn.seeding import REPLAY, stream_seed
from ipgnn.training.faults import writing

log = logging.getLogger("ipgnn")


def new_run_dir(cfg, run_dir: Path | None = None) -> Path:
    """``run_dir``, or ``<logger.run_root>/<name>-<YYYYmmdd-HHMMSS>[-<n>]`` (a new name), created."""
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(cfg.logger.run_root) / f"{cfg.name}-{stamp}"
        suffix = 1
        while run_dir.exists():
            run_dir = Path(cfg.logger.run_root) / f"{cfg.name}-{stamp}-{suffix}"
            suffix += 1
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@contextmanager
def fresh_run_dir(cfg, run_dir: Path | None = None) -> Iterator[Path]:
    """:func:`new_run_dir` for the block that builds the run in it: a directory this call made is removed
    again, with what the block wrote, when the block fails (a bad config, a fault, Ctrl-C during set-up), so a
    run that never started leaves nothing. Its creation failing raises an :class:`OSError` tagged "creating the
    run directory" (:mod:`ipgnn.training.faults`). W&B's online mode without credentials is refused before it."""
    resolve_wandb_mode(cfg.logger.mode)
    made_here = run_dir is None or not Path(run_dir).exists()
    with writing("creating the run directory", Path(run_dir or cfg.logger.run_root)):
        path = new_run_dir(cfg, run_dir)
    try:
        yield path
    except BaseException:
        if made_here:
            shutil.rmtree(path, ignore_errors=True)
        raise


def make_logger(cfg, run_dir: Path, wandb_id: str | None) -> RunLogger:
    """The run's metrics file and W&B run (``wandb_id``: the one a resumed run continues)."""
    lc = cfg.logger
    return RunLogger(
        run_dir, cfg.to_dict(), lc.mode, lc.project, lc.entity, lc.group, lc.tags, name=run_dir.name, wandb_id=wandb_id
    )


def make_rollout_env(cfg):
    """The training environment: in this process, or ``rollout.workers`` workers (:mod:`ipgnn.rollout`)."""
    ro = cfg.rollout
    if ro.workers == 1 and ro.backend == "process":
        return make_env(cfg.env)
    if cfg.env.num_envs > 1:
        raise ConfigError(
            "rollout.workers: parallel workers are for tasks that step one environment; a batched "
            "task already steps env.num_envs environments in one process (set rollout.workers: 1)"
        )
    from ipgnn.rollout import WorkerPoolEnv

    log.info("rollouts: %d %s worker(s)", ro.workers, ro.backend)
    return WorkerPoolEnv(cfg.env, ro.workers, ro.backend, ro.address)


def make_replay(cfg, env, num_envs: int, device: torch.device) -> GraphReplayBuffer:
    """Size the buffer from ``replay.capacity`` (transitions, or a memory budget such as ``8GiB``),
    say what it will use before allocating, and refuse early, with the figure, when it cannot fit."""
    spec = env.spec
    has_mask = env.has_action_mask
    integer_obs = bool(getattr(env, "integer_observations", False))
    obs_dtype = torch.int16 if integer_obs else torch.float32  # exact for counts and one-hot phases
    sizing = dict(
        num_agents=env.num_agents,
        obs_dim=spec.obs_dim,
        action_dim=spec.action_dim,
        discrete=spec.discrete,
        max_edges=env.graph.max_edges,
        static_graph=env.graph.is_static,
        has_action_mask=has_mask,
        obs_dtype=obs_dtype,
        episode_length=cfg.env.max_steps,
        step_width=num_envs,
    )
    per = max(1, (GraphReplayBuffer.bytes_for(10_000, **sizing) + 9_999) // 10_000)
    if isinstance(cfg.replay.capacity, str):
        capacity = GraphReplayBuffer.capacity_for(parse_bytes(cfg.replay.capacity), **sizing)
        if capacity < cfg.replay.batch_size:  # the schema checks a capacity given in transitions
            raise ConfigError(
                f"replay.capacity: a budget of '{cfg.replay.capacity}' holds {capacity} transitions of "
                f"{env.num_agents} agents (about {per} B each), fewer than a minibatch (replay.batch_size: "
                f"{cfg.replay.batch_size}): give at least "
                f"'{-(-GraphReplayBuffer.bytes_for(cfg.replay.batch_size, **sizing) // 2**20)}MiB', or a number "
                "of transitions"
            )
    else:
        capacity = cfg.replay.capacity
    capacity = max(num_envs, min(capacity, cfg.train.total_steps))  # never more than the run can fill
    need = GraphReplayBuffer.bytes_for(capacity, **sizing)
    from ipgnn.cpu import available_memory, memory_source

    on = replay_device(cfg.replay.device, device, need)
    avail = available_memory(on)  # where the buffer will live: the machine's memory, or the GPU's
    log.info(
        "replay buffer: %d transitions of %d agents (observations as %s, stored once per step) = %.2f GiB",
        capacity,
        env.num_agents,
        str(obs_dtype).replace("torch.", ""),
        need / 2**30,
    )
    if avail is not None and need > 0.8 * avail:
        raise ConfigError(
            f"replay.capacity: {capacity} transitions of {env.num_agents} agents need "
            f"{need / 2**30:.1f} GiB (about {per} B each) but only {avail / 2**30:.1f} GiB of "
            f"memory is available ({memory_source(on)}); set replay.capacity to at most {int(0.8 * avail / per)} "
            f"transitions, or to a budget such as '{max(1, int(0.5 * avail / 2**30))}GiB'"
        )
    static = env.graph(None) if env.graph.is_static else None
    return GraphReplayBuffer(
        capacity,
        env.num_agents,
        spec.obs_dim,
        spec.action_dim,
        spec.discrete,
        env.graph.max_edges,
        static_edges=static,
        has_action_mask=has_mask,
        agent_type=env.agent_type,
        seed=stream_seed(cfg.seed, REPLAY),
        device=on,
        obs_dtype=obs_dtype,
        episode_length=cfg.env.max_steps,
        step_width=num_envs,
    )


def replay_device(choice: str, device: torch.device, need: int) -> torch.device:
    """The replay buffer on the learner's GPU when asked (``learner``) or when it fits in half of the
    GPU's free memory (``auto``): minibatches are then assembled where the networks run."""
    if choice == "cpu" or device.type == "cpu":
        return torch.device("cpu")
    if choice == "auto":
        free, _ = torch.cuda.mem_get_info(device)
        if need > 0.5 * free:
            log.info(
                "replay buffer on the CPU: %.1f GiB is more than half of the GPU's %.1f GiB free",
                need / 2**30,
                free / 2**30,
            )
            return torch.device("cpu")
    log.info("replay buffer on %s: minibatches are assembled on the learner's device", device)
    return device
