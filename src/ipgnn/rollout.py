"""Parallel rollouts: ``rollout.workers`` environment workers feeding one learner.

Each worker owns one environment in its own process (``libsumo`` allows one simulation per process):
a ``multiprocessing`` process on this machine (``rollout.backend: process``) or a Ray actor
(``rollout.backend: ray``; ``rollout.address`` names a running cluster, e.g. ``ray://head:10001`` or
``auto`` after ``ray start`` on every node; without it a local Ray instance is started). The learner
sees the workers as one graph environment of ``num_envs = workers`` environments, like a batched task
(:class:`ipgnn.envs.vector.TensorGraphEnv`):

- **batched inference**: one forward of the propagation network over the ``Batch`` of all workers'
  graphs gives every agent's action;
- **collection overlaps learning**: :meth:`WorkerPoolEnv.step_async` hands the actions to the workers
  and returns at once; the trainer runs its gradient steps while the simulators advance, then
  :meth:`WorkerPoolEnv.step_wait` collects the transitions;
- worker ``w`` resets its episodes with seed ``seed + w``, and random warm-up actions are drawn by the
  learner, so a run is reproducible for a given number of workers and backend.

Episodes of all workers end together (every task here has a fixed horizon); a worker whose episode
ends before the others' is an error that says so.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ipgnn.config import ConfigError, EnvConfig
from ipgnn.cpu import set_threads
from ipgnn.envs.pettingzoo import StepResult, uniform_random_action


class EnvWorker:
    """One environment, driven by commands; the body of a worker process or a Ray actor."""

    def __init__(self, env_cfg: dict[str, Any]):
        set_threads(1)  # a simulator's process needs no intra-op threads of its own
        from ipgnn.envs import make_env

        self.env = make_env(EnvConfig.model_validate(env_cfg))

    def info(self) -> dict[str, Any]:
        g = self.env.graph
        return {
            "spec": self.env.spec,
            "num_agents": self.env.num_agents,
            "agent_type": self.env.agent_type,
            "integer_observations": getattr(self.env, "integer_observations", False),
            "is_static": g.is_static,
            "max_edges": g.max_edges,
            "static_edges": g(None) if g.is_static else None,
        }

    def reset(self, seed: int | None) -> tuple[Data, bool]:
        obs = self.env.reset(seed=seed)
        return obs, self.env.has_action_mask

    def step(self, action: Tensor) -> StepResult:
        res = self.env.step(action)
        res.infos = {}  # the learner needs none of the engine's per-agent infos; keep messages small
        return res

    def close(self) -> None:
        self.env.close()


def _serve(conn, env_cfg: dict[str, Any]) -> None:  # pragma: no cover - runs in the worker process
    try:
        worker = EnvWorker(env_cfg)
        conn.send(("ok", None))
    except Exception as exc:  # noqa: BLE001 - reported to the learner with its message
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        cmd, arg = conn.recv()
        try:
            if cmd == "close":
                worker.close()
                conn.send(("ok", None))
                return
            conn.send(("ok", getattr(worker, cmd)(*arg)))
        except Exception as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _StaticGraph:
    """The part of :class:`~ipgnn.graphs.GraphBuilder` the learner needs (sizes the replay buffer)."""

    def __init__(self, is_static: bool, max_edges: int, static_edges: Tensor | None):
        self.is_static, self.max_edges, self._static = is_static, max_edges, static_edges

    def __call__(self, pos: Tensor | None = None) -> Tensor:
        if self._static is None:
            raise ValueError("this task's graph changes every step; it comes with each observation")
        return self._static


class WorkerPoolEnv:
    """``workers`` copies of a task in worker processes (or Ray actors) as one graph environment.

    Args:
        env_cfg: the ``env`` config section (each worker builds its own environment from it).
        workers: number of environments.
        backend: ``process`` or ``ray``.
        address: Ray cluster address (``None``: start or reuse a local Ray instance).
    """

    def __init__(self, env_cfg: EnvConfig, workers: int, backend: str = "process", address: str | None = None):
        if workers < 1:
            raise ConfigError(f"rollout.workers: must be at least 1, got {workers}")
        self.backend = backend
        self.num_envs = workers
        cfg = env_cfg.model_dump(mode="json")
        self._pending: list[Any] | None = None
        # worker 0 is built first and alone: whatever a task prepares once and caches (a generated
        # scenario, its SUMO conversion) is then ready for the others, which start together
        if backend == "process":
            ctx = mp.get_context("spawn")  # fork would copy the learner's threads and simulator state
            self._conns, self._procs = [], []
            for group in ([0], list(range(1, workers))):
                for _ in group:
                    parent, child = ctx.Pipe()
                    proc = ctx.Process(target=_serve, args=(child, cfg), daemon=True)
                    proc.start()
                    child.close()
                    self._conns.append(parent)
                    self._procs.append(proc)
                for w in group:
                    status, msg = self._conns[w].recv()
                    if status != "ok":
                        self.close()
                        raise RuntimeError(f"rollout worker {w} could not build its environment: {msg}")
        elif backend == "ray":
            import ray

            if not ray.is_initialized():
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    **({} if address else {"num_cpus": max(workers, 1)}),
                )
            actor = ray.remote(num_cpus=1)(EnvWorker)
            self._actors = [actor.remote(cfg)]
            ray.get(self._actors[0].info.remote())
            self._actors += [actor.remote(cfg) for _ in range(workers - 1)]
        else:
            raise ConfigError(f"rollout.backend: expected 'process' or 'ray', got {backend!r}")
        info = self._call_all("info", [()] * workers)[0]
        self.spec = info["spec"]
        self.num_agents = int(info["num_agents"])
        self.agent_type = info["agent_type"]
        self.graph = _StaticGraph(info["is_static"], info["max_edges"], info["static_edges"])
        self.has_action_mask = False
        self.integer_observations = bool(info["integer_observations"])

    # ----------------------------------------------------------------------------------------------
    def _send(self, cmd: str, args: list[tuple]) -> list[Any]:
        if self.backend == "process":
            for conn, a in zip(self._conns, args):
                conn.send((cmd, a))
            return list(range(len(args)))
        return [getattr(actor, cmd).remote(*a) for actor, a in zip(self._actors, args)]

    def _recv(self, handles: list[Any], cmd: str) -> list[Any]:
        if self.backend == "process":
            out = []
            for w in handles:
                status, value = self._conns[w].recv()
                if status != "ok":
                    raise RuntimeError(f"rollout worker {w} failed in {cmd}: {value}")
                out.append(value)
            return out
        import ray

        return ray.get(handles)

    def _call_all(self, cmd: str, args: list[tuple]) -> list[Any]:
        return self._recv(self._send(cmd, args), cmd)

    # ----------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Batch:
        """Reset every worker (worker ``w`` with ``seed + w``) and return their graphs as one Batch."""
        seeds = [(None if seed is None else seed + w,) for w in range(self.num_envs)]
        out = self._call_all("reset", seeds)
        self.has_action_mask = any(m for _, m in out)
        return Batch.from_data_list([d for d, _ in out])

    def step_async(self, action: Tensor) -> None:
        """Hand every worker its agents' actions and return without waiting for the simulators."""
        if self._pending is not None:
            raise RuntimeError("step_async called twice without step_wait")
        parts = action.cpu().reshape(self.num_envs, self.num_agents, *action.shape[1:])
        self._pending = self._send("step", [(parts[w],) for w in range(self.num_envs)])

    def step_wait(self) -> StepResult:
        """Collect the step that :meth:`step_async` started, as one result over all workers."""
        if self._pending is None:
            raise RuntimeError("step_wait called without step_async")
        results: list[StepResult] = self._recv(self._pending, "step")
        self._pending = None
        ended = [r.done for r in results]
        if any(ended) and not all(ended):
            raise RuntimeError(
                f"rollout workers {[w for w, e in enumerate(ended) if e]} ended their episodes "
                "before the others; parallel rollouts need tasks whose episodes end together "
                "(a fixed horizon)"
            )
        episode = None
        if all(ended):
            keys = results[0].episode.keys()
            episode = {k: sum(float(r.episode[k]) for r in results) / len(results) for k in keys}
        return StepResult(
            Batch.from_data_list([r.obs for r in results]),
            torch.cat([r.reward for r in results]),
            torch.cat([r.terminated for r in results]),
            torch.cat([r.truncated for r in results]),
            all(ended),
            episode,
        )

    def step(self, action: Tensor) -> StepResult:
        self.step_async(action)
        return self.step_wait()

    def random_action(self, obs: Batch) -> Tensor:
        """Uniformly random valid actions for every agent of every worker, drawn by the learner's RNG."""
        return uniform_random_action(self.num_envs * self.num_agents, self.spec, getattr(obs, "action_mask", None))

    def close(self) -> None:
        if self.backend == "process":
            for conn, proc in zip(getattr(self, "_conns", []), getattr(self, "_procs", [])):
                try:
                    if proc.is_alive():
                        conn.send(("close", ()))
                        conn.recv()
                except (EOFError, BrokenPipeError, OSError):
                    pass
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
        else:
            import ray

            for actor in getattr(self, "_actors", []):
                try:
                    ray.get(actor.close.remote())
                except Exception:  # noqa: BLE001 - an actor that died has nothing left to close
                    pass
                ray.kill(actor)
