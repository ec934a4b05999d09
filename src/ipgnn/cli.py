"""Command-line entry points ``ipgnn-train``, ``ipgnn-eval`` and ``ipgnn-export``.

::

    ipgnn-train --config configs/mpe_spread_small.yaml --train.total_steps=5000 --model.rounds=3
    ipgnn-train --config configs/mpe_spread30.yaml --config configs/algos/qmix.yaml
    ipgnn-train --resume runs/mpe_spread_small-20261125-170000
    ipgnn-eval --checkpoint runs/<run>/checkpoints/latest.pt --episodes 10
    ipgnn-eval --checkpoint runs/<run>/checkpoints/latest.pt --decentralised --drop 0.3 --delay 1
    ipgnn-export --checkpoint runs/<run>/checkpoints/latest.pt --out agent_step.pt

Overrides take the form ``wandb agent`` passes (``--section.key=value``) or ``section.key=value``.
Errors in configs and overrides are printed as one clear message and exit with status 2.

Exit statuses of ``ipgnn-train``, each failure told in one ``error:`` line on stderr, without a traceback:

* 0: the run finished; its final metrics are printed as JSON.
* 1: the environment failed the run: a file-system fault (a full disk, a read-only or immutable directory,
  the run directory deleted or a file in the way; the line names the operation, the path and what to do, and
  the last complete checkpoint is kept: :mod:`ipgnn.training.faults`), or a diverged run.
* 2: bad input: the command line, a config file or override, or an environment variable (``IPGNN_CACHE``
  set but empty, or a cache that cannot be written: :mod:`ipgnn.cache`); nothing is written.
* 130 (Ctrl-C, SIGINT) and 143 (SIGTERM): stopped by a signal, with a checkpoint to resume from once training
  has begun, or, during set-up, nothing; any number of signals ends the same way (:mod:`ipgnn.training.stopping`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ipgnn.config import ConfigError, clip, load_config
from ipgnn.logger import json_safe

if TYPE_CHECKING:
    from ipgnn.config import ExperimentConfig
    from ipgnn.decentralised import Links
    from ipgnn.runs import Run


def _split(
    argv: Sequence[str], known: set[str], flags: frozenset[str] = frozenset({"-h", "--help", "--print-config"})
) -> tuple[list[str], list[str]]:
    """Separate our own options (``known``; those in ``flags`` take no value) from config overrides."""
    ours, overrides = [], []
    it = iter(argv)
    for arg in it:
        head = arg.split("=", 1)[0]
        if head in known:
            ours.append(arg)
            if "=" not in arg and head not in flags:  # options with a value in the next argument
                nxt = next(it, None)
                if nxt is not None:
                    ours.append(nxt)
        else:
            overrides.append(arg)
    return ours, overrides


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


class _UsageError(Exception):
    """A command line that cannot run: printed as ``error: <message>``, exit status 2 (see :func:`_fail`)."""


_TRAIN_OPTIONS = {"--config", "--resume", "--run-dir", "--print-config", "--no-replay", "-h", "--help"}
_TRAIN_FLAGS = frozenset({"-h", "--help", "--print-config", "--no-replay"})


def _train_parser() -> argparse.ArgumentParser:
    """The options of ``ipgnn-train``; everything else on its command line is a config override."""
    parser = argparse.ArgumentParser(
        prog="ipgnn-train",
        description="Train intention propagation (IP-SAC). Any --section.key=value overrides the config.",
        epilog="example: ipgnn-train --config configs/mpe_spread_small.yaml --train.total_steps=5000",
    )
    parser.add_argument(
        "--config",
        action="append",
        help="YAML experiment file; repeat to layer files, later ones win "
        "(e.g. --config configs/mpe_spread30.yaml --config configs/algos/qmix.yaml)",
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    parser.add_argument("--run-dir", help="write the run here instead of <logger.run_root>/<name>-<time>/")
    parser.add_argument(
        "--no-replay",
        action="store_true",
        help="with --resume: continue without the saved replay buffer (when it is missing or damaged; "
        "the buffer refills and the run no longer reproduces the uninterrupted one)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (files + overrides) as YAML and exit without training",
    )
    return parser


def train_main(argv: Sequence[str] | None = None) -> int:
    """``ipgnn-train``: build the trainer (a new run from ``--config`` or ``--resume RUN_DIR``) and train it.

    Returns the exit status (module docstring); a signal during set-up ends it with one line, 130 or 143."""
    previous = _exit_on_signals()  # from here SIGTERM, like Ctrl-C, ends the set-up with one line
    try:
        return _train_main(argv)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if getattr(exc, "signum", None) == signal.SIGTERM else "interrupted"
        print(f"\n{how} while setting up, before any training step: nothing to save", file=sys.stderr)
        return 143 if getattr(exc, "signum", None) == signal.SIGTERM else 130
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def _train_main(argv: Sequence[str] | None) -> int:
    if argv is None:  # the console script: this process is the run (ipgnn.cpu, huge pages)
        from ipgnn.cpu import reexec_with_huge_pages

        reexec_with_huge_pages()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _train_parser()
    ours, overrides = _split(argv, _TRAIN_OPTIONS, _TRAIN_FLAGS)
    args = parser.parse_args(ours)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from ipgnn.cache import cache_root
    from ipgnn.trainer import Trainer  # the one import of the trainer: only ipgnn-train builds one
    from ipgnn.training.checkpointing import ResumeError

    try:
        if args.resume:
            _check_resume(args, overrides)
            cache_root()  # an empty IPGNN_CACHE is refused before anything is built
            trainer = Trainer.resume(args.resume, overrides, with_replay=not args.no_replay)
            print(f"resuming {args.resume} at step {trainer.env_step}", file=sys.stderr)
        else:
            if not args.config:
                return _fail("pass --config FILE (e.g. configs/mpe_spread_small.yaml) or --resume RUN_DIR")
            cfg = load_config(args.config, overrides)
            if args.print_config:
                import yaml

                print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
                return 0
            cache_root()
            trainer = Trainer.from_config(cfg, Path(args.run_dir) if args.run_dir else None)
    except (_UsageError, ConfigError, ValueError, ResumeError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        if exc.errno is None:  # a message of ours (no checkpoint to resume): bad input
            return _fail(str(exc))
        run_dir = args.resume or args.run_dir
        return _fault(exc, Path(run_dir) if run_dir else None, existing=bool(args.resume))
    return _train(trainer)


def _check_resume(args: argparse.Namespace, overrides: list[str]) -> None:
    """``--resume RUN_DIR`` takes its config from the run: no ``--config``, and only the keys that
    :data:`ipgnn.training.checkpointing.RESUME_OVERRIDABLE` names may change (edits of the run's
    ``config.yaml`` are checked by :func:`ipgnn.training.checkpointing.read_latest`)."""
    from ipgnn.training.checkpointing import resume_safe

    if args.config:
        raise _UsageError("--resume uses the config saved in the run; do not pass --config with it")
    bad = [o for o in overrides if not resume_safe(o.lstrip("-"))]
    if bad:
        raise _UsageError(
            f"on --resume only train.total_steps, threads and logger.* may be overridden (got {bad}); "
            "start a new run to change anything else"
        )


def _train(trainer) -> int:
    """Train ``trainer`` (an :class:`ipgnn.trainer.Trainer`) with Ctrl-C and SIGTERM saving a checkpoint to
    resume from (:func:`ipgnn.training.stopping.signal_handler`, installed until the run is closed); print the
    final metrics as JSON. Returns the exit status (module docstring)."""
    from ipgnn.training.stopping import signal_handler

    print(f"run directory: {trainer.run_dir}", file=sys.stderr)
    handler = signal_handler(trainer)  # Ctrl-C, and SIGTERM from schedulers, timeout, docker stop
    previous = signal.signal(signal.SIGTERM, handler), signal.signal(signal.SIGINT, handler)
    try:
        return _run(trainer)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def _run(trainer) -> int:
    """:meth:`Trainer.train`, then each way it can end told in one line (or the metrics), and the run closed."""
    from ipgnn.training.divergence import TrainingDiverged
    from ipgnn.training.stopping import StopRequested

    try:
        metrics = trainer.train()
    except StopRequested as stop:
        how = "terminated (SIGTERM)" if stop.reason == "SIGTERM" else "interrupted"
        print(
            f"{how} at step {trainer.env_step}, at a safe point; checkpoint saved to {stop.path} (it resumes "
            f"exactly). Continue with: ipgnn-train --resume {trainer.run_dir}",
            file=sys.stderr,
        )
        _close(trainer)
        return 143 if stop.reason == "SIGTERM" else 130
    except KeyboardInterrupt as exc:  # outside a safe point: save where the run stands
        return _save_interrupted(trainer, exc)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        _close(trainer)
        return 1
    except OSError as exc:  # a file-system fault: the run directory, a checkpoint, the metrics
        _close(trainer)
        return _fault(exc, trainer.run_dir)
    _close(trainer)
    print(
        json.dumps(
            json_safe({"run_dir": str(trainer.run_dir), "env_step": trainer.env_step, **metrics}),
            indent=2,
            allow_nan=False,
        )
    )
    return 0


def _save_interrupted(trainer, exc: KeyboardInterrupt) -> int:
    """Checkpoint a run stopped by Ctrl-C (exit 130) or SIGTERM (143) between safe points; 1 if it diverged or
    the checkpoint could not be written (the previous one is then kept)."""
    from ipgnn.training.divergence import TrainingDiverged
    from ipgnn.training.faults import describe
    from ipgnn.training.stopping import Terminated

    how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    try:
        path = trainer.save_checkpoint()
    except TrainingDiverged as div:
        print(f"\n{how} at step {trainer.env_step}; {div}", file=sys.stderr)
        _close(trainer)
        return 1
    except OSError as fault:
        print(f"\nerror: {how} at step {trainer.env_step}, then {describe(fault, trainer.run_dir)}", file=sys.stderr)
        _close(trainer)
        return 1
    print(
        f"\n{how} at step {trainer.env_step}; checkpoint saved to {path}. "
        f"Continue with: ipgnn-train --resume {trainer.run_dir}",
        file=sys.stderr,
    )
    _close(trainer)
    return 143 if isinstance(exc, Terminated) else 130


def _fault(exc: OSError, run_dir: Path | None, existing: bool = True) -> int:
    """A file-system fault of ``ipgnn-train`` in one line (:func:`ipgnn.training.faults.describe`): status 1."""
    from ipgnn.training.faults import describe

    print(f"error: {describe(exc, run_dir, existing)}", file=sys.stderr)
    return 1


def _close(trainer) -> None:
    """Close the run; a fault while closing (the disk that just failed the run) is logged, not raised."""
    try:
        trainer.close()
    except OSError as exc:
        logging.getLogger("ipgnn").warning("closing the run: %s", exc)


class _Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (``signum``) during ``ipgnn-train``'s set-up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _exit_on_signals() -> tuple:
    """Until training begins, SIGINT and SIGTERM raise :class:`_Interrupted` (a ``KeyboardInterrupt``); one more
    while the set-up unwinds exits at once (nothing is saved before training). Returns the previous handlers."""
    raised = []

    def handle(signum, frame):
        if not raised:
            raised.append(signum)
            raise _Interrupted(signum)
        print("\nexiting now, while setting up: nothing to save", file=sys.stderr, flush=True)
        os._exit(143 if signum == signal.SIGTERM else 130)

    return signal.signal(signal.SIGTERM, handle), signal.signal(signal.SIGINT, handle)


def check_count(option: str, value: int, low: int, high: int, why: str = "") -> None:
    """Raise ``ValueError`` (one line naming ``option``) unless ``low <= value <= high``; ``why`` says where
    ``high`` comes from. The command-line tools bound every count they are given with it, up front."""
    if not low <= value <= high:
        raise ValueError(f"{option} must be an integer from {low} to {high}{why}, got {clip(str(value), 40)}")


def check_output(path: str | Path, option: str, directory: bool) -> Path:
    """``path`` as a :class:`~pathlib.Path` when a tool can write there (a new or existing file, or with
    ``directory`` a directory, to be created with its parents); otherwise raise ``ValueError``, one line
    naming ``option``, the path and what to do. Checked up front, before any work: the path (or its file
    counterpart) must not be of the other kind, and the nearest existing ancestor must be a writable directory."""
    path = Path(path)
    shown = clip(str(path))
    if directory and path.exists() and not path.is_dir():
        raise ValueError(f"{option} '{shown}' is a file, not a directory: pass a directory for the results")
    if not directory and path.is_dir():
        raise ValueError(f"{option} '{shown}' is a directory: pass a file name, e.g. {clip(str(path / 'x.pt'))}")
    parent = path if directory and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} '{shown}': '{clip(str(parent))}' is a file, not a directory: choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} '{shown}': cannot write in '{clip(str(parent))}' (permission denied)")
    return path


MAX_EPISODES = 100_000  #: the most evaluation episodes ipgnn-eval and ipgnn-robustness play in one call
MAX_DELAY = 1_000_000  #: the longest --delay in rounds (beyond an episode's rounds no message arrives: --drop 1)
MAX_PROCESSES = 4096  #: the most worker processes of --decentralised (at most one per agent as well)


_EVAL_OPTIONS = {
    "--checkpoint",
    "--config",
    "--controller",
    "--episodes",
    "--seed",
    "--stochastic",
    "--decentralised",
    "--processes",
    "--drop",
    "--delay",
    "--fallback",
    "-h",
    "--help",
}
_EVAL_FLAGS = frozenset({"-h", "--help", "--stochastic", "--decentralised"})
_REFERENCE_CONTROLLERS = {
    "maxpressure": "MaxPressure",
    "fixedtime": "FixedTime",
    "advanced-mp": "Advanced-MP",
    "sotl": "SOTL",
}


def _eval_parser() -> argparse.ArgumentParser:
    """The options of ``ipgnn-eval``; everything else on its command line is a config override."""
    parser = argparse.ArgumentParser(
        prog="ipgnn-eval",
        description="Evaluate a trained policy (greedy by default) or a reference controller "
        "and print the evaluation metrics as JSON. Any --section.key=value overrides "
        "the config (the checkpoint's or --config's), as for ipgnn-train.",
        epilog="example: ipgnn-eval --checkpoint runs/x/checkpoints/latest.pt --env.options.engine=cityflow",
    )
    parser.add_argument("--checkpoint", help="a checkpoint .pt written by ipgnn-train (or its run directory)")
    parser.add_argument(
        "--config",
        action="append",
        help="with --controller random or a rule and no --checkpoint: the experiment whose task to "
        "run (repeatable, later files win); with --checkpoint the task is the checkpoint's, changed by overrides",
    )
    parser.add_argument(
        "--controller",
        choices=["policy", "random", "maxpressure", "fixedtime", "advanced-mp", "sotl"],
        default="policy",
        help="policy: the checkpoint's learned policy; random: uniformly random valid actions; "
        "maxpressure, fixedtime, advanced-mp, sotl: the traffic-signal rules (traffic tasks; "
        "ipgnn.traffic.controllers)",
    )
    parser.add_argument("--episodes", type=int, default=10, help=f"evaluation episodes, 1 to {MAX_EPISODES}")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="play the evaluation episodes of this run seed, 0 to 2**63 - 1 (default: the run's own, the episodes "
        "its training evaluated on; see ipgnn.seeding)",
    )
    parser.add_argument("--stochastic", action="store_true", help="sample from q_i instead of taking its mode")
    _add_decentralised_options(parser)
    return parser


def _add_decentralised_options(parser: argparse.ArgumentParser) -> None:
    """``ipgnn-eval``'s options for running the policy agent by agent over lossy links (ipgnn.decentralised)."""
    dec = parser.add_argument_group(
        "decentralised execution",
        "every agent computes its own step from its own observation and the intentions "
        "its neighbours send it (ipgnn.decentralised); the links may lose or delay messages",
    )
    dec.add_argument(
        "--decentralised",
        action="store_true",
        help="run the checkpoint's policy agent by agent, exchanging intentions by messages between worker processes",
    )
    dec.add_argument(
        "--processes",
        type=int,
        default=None,
        help="worker processes hosting the agents (default: "
        "the usable cores, at most N; N: one per agent; 0: every agent in this process)",
    )
    dec.add_argument(
        "--drop", type=float, default=0.0, help="probability that a message is lost, per link and round, in [0, 1]"
    )
    dec.add_argument(
        "--delay", type=int, default=0, help=f"rounds a message takes to arrive, 0 (default) to {MAX_DELAY}"
    )
    dec.add_argument(
        "--fallback",
        choices=["last", "own", "skip"],
        default="last",
        help="for a neighbour not heard in a round: its last intention received (stale), the agent's "
        "own mu^0, or leave it out of the attention (default: last)",
    )


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``ipgnn-eval``: evaluate a checkpoint's policy or a reference controller; print the metrics as JSON.
    Every argument is checked (:func:`_eval_links`) before a checkpoint is read or an environment built."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _eval_parser()
    ours, overrides = _split(argv, _EVAL_OPTIONS, _EVAL_FLAGS)
    args = parser.parse_args(ours)
    try:
        links = _eval_links(args)
        run, cfg, env, act = _eval_setup(args, overrides, links)
        seed = cfg.seed if args.seed is None else args.seed
    except _UsageError as exc:
        return _fail(str(exc))

    from ipgnn.runs import evaluate
    from ipgnn.seeding import seed_everything

    seed_everything(seed)  # the stochastic policy's and the random controller's actions
    try:
        metrics = evaluate(act, env, args.episodes, seed)
    finally:
        env.close()
        if links is not None:
            stats = act.stats
            act.close()
    out = {"controller": args.controller, "episodes": args.episodes}
    if links is not None:
        out |= {
            "decentralised": {
                "processes": act.processes,
                "drop": links.drop,
                "delay": links.delay,
                "fallback": links.fallback,
                **stats,
            }
        }
    if cfg.env.task == "traffic":
        out["engine"] = getattr(env, "reference_key", "").split(":")[0] or cfg.env.options.get("engine")
    if run is not None:
        out |= {"checkpoint": args.checkpoint, "env_step": run.env_step}
    print(json.dumps(json_safe(out | metrics), indent=2, allow_nan=False))
    return 0


def _eval_links(args: argparse.Namespace) -> Links | None:
    """Check the arguments before anything is read or built (the flags that must go together, the ranges
    of --seed, --episodes, --processes, --drop and --delay); the message links of ``--decentralised``
    (None without it)."""
    from ipgnn.seeding import MAX_SEED

    if args.checkpoint and args.config:
        raise _UsageError(
            "--config is for --controller random or a rule (maxpressure, ...) without a checkpoint; with --checkpoint "
            "the task is the checkpoint's: change it with overrides such as --env.options.engine=sumo or "
            "--env.max_steps=100"
        )
    try:
        check_count("--episodes", args.episodes, 1, MAX_EPISODES)
        if args.seed is not None:
            check_count("--seed", args.seed, 0, MAX_SEED, " (2**63 - 1)")
        if args.processes is not None:
            check_count("--processes", args.processes, 0, MAX_PROCESSES, " (and at most one per agent)")
        check_count("--delay", args.delay, 0, MAX_DELAY, " rounds (a longer delay loses every message: --drop 1)")
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc
    link_flags = [
        f
        for f, v in (
            ("--processes", args.processes is not None),
            ("--drop", args.drop != 0.0),
            ("--delay", args.delay != 0),
            ("--fallback", args.fallback != "last"),
        )
        if v
    ]
    if link_flags and not args.decentralised:
        raise _UsageError(f"{', '.join(link_flags)} only apply with --decentralised")
    if args.decentralised and (args.controller != "policy" or args.stochastic):
        raise _UsageError(
            "--decentralised runs the checkpoint's learned policy greedily (the mode of each q_i): "
            "drop --controller and --stochastic"
        )
    if not args.decentralised:
        return None
    from ipgnn.decentralised import Links

    try:
        return Links(args.drop, args.delay, args.fallback)
    except ValueError as exc:
        raise _UsageError(f"--{exc}") from exc


def _eval_setup(
    args: argparse.Namespace, overrides: list[str], links: Links | None
) -> tuple[Run | None, ExperimentConfig, object, Callable]:
    """``(run, cfg, env, act)``: the loaded run (None for a controller without one), its config, the
    environment and the function choosing the actions."""
    from ipgnn.envs import make_env
    from ipgnn.runs import load_run, read_checkpoint, with_overrides

    try:
        run = None
        if args.controller == "policy":
            if not args.checkpoint:
                raise _UsageError("pass --checkpoint PATH (or --controller random --config FILE)")
            run = load_run(args.checkpoint, overrides, device=None)
            cfg = run.cfg
        elif args.config:
            cfg = load_config(args.config, overrides)
        elif args.checkpoint:
            cfg = with_overrides(read_checkpoint(args.checkpoint).cfg, overrides, args.checkpoint)
        else:
            raise _UsageError(f"--controller {args.controller} needs --config FILE or --checkpoint PATH")
        env = make_env(cfg.env) if run is None else run.env
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        raise _UsageError(str(exc)) from exc
    try:
        return run, cfg, env, _eval_actor(args, run, cfg, env, links)
    except BaseException as exc:
        env.close()  # a simulator it started (SUMO, CityFlow) does not outlive the error
        if isinstance(exc, (ValueError, KeyError)):
            raise _UsageError(str(exc)) from exc
        raise


def _eval_actor(args: argparse.Namespace, run: Run | None, cfg: ExperimentConfig, env, links: Links | None) -> Callable:
    """The function choosing the actions: the checkpoint's policy (greedy, stochastic or decentralised), random
    valid actions, or a reference controller of a traffic task."""
    from ipgnn.runs import greedy_policy, random_policy

    if run is not None:
        if links is None:
            return greedy_policy(run.algo, run.device, deterministic=not args.stochastic)
        from ipgnn.decentralised import decentralised_policy

        return decentralised_policy(run.algo, env.num_agents, links, args.processes)
    if args.controller == "random":
        return random_policy(env)
    name = _REFERENCE_CONTROLLERS[args.controller]
    references = env.reference_policies() if hasattr(env, "reference_policies") else {}
    if name not in references:
        raise _UsageError(
            f"--controller {args.controller} needs a traffic task (env.task: traffic), not '{cfg.env.task}'"
        )
    return references[name]


def export_main(argv: Sequence[str] | None = None) -> int:
    """``ipgnn-export``: the per-agent step of a checkpoint's policy as one TorchScript file and a JSON file
    beside it. ``--out`` is checked before the checkpoint is read (exit 2); a write that fails later (a full
    disk) exits 1 and leaves neither file nor a temporary one (:func:`ipgnn.nn.local.export_agent_step`)."""
    parser = argparse.ArgumentParser(
        prog="ipgnn-export",
        description="Write the per-agent step of a trained intention-propagation policy "
        "(ipgnn.nn.local.AgentStep: encode, update per round, act) as one TorchScript file that runs with torch "
        "alone (or libtorch in C++), without PyG or ipgnn; a JSON file beside it describes the inputs.",
        epilog="example: ipgnn-export --checkpoint runs/x/checkpoints/latest.pt --out agent_step.pt",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint .pt written by ipgnn-train (or its run directory)"
    )
    parser.add_argument("--out", required=True, help="the file to write (e.g. agent_step.pt; its .json goes beside)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    from ipgnn.nn.local import export_agent_step
    from ipgnn.runs import load_run, read_checkpoint

    try:
        out = _export_target(args.out)
        saved = read_checkpoint(args.checkpoint)
        if saved.cfg.algo.name != "ipsac":
            return _fail(
                f"checkpoint '{clip(args.checkpoint)}': algo.name is '{saved.cfg.algo.name}'; only an "
                "intention-propagation policy (ipsac) has a per-agent step to export"
            )
        with load_run(saved) as run:  # on the CPU; the environment gives the observation and action sizes
            policy = run.algo.policy
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        return _fail(str(exc))
    step, meta = _export_step(policy, saved, args.checkpoint)
    try:
        path = export_agent_step(step, out, meta)
    except (OSError, RuntimeError) as exc:
        reason = clip(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        print(
            f"error: --out '{clip(str(out))}': writing the export failed ({reason}); nothing was written",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) and {path.with_suffix('.json')}")
    return 0


def _export_target(out: str) -> Path:
    """``--out`` checked up front (:func:`check_output`), and its ``.json`` companion as well."""
    path = check_output(out, "--out", directory=False)
    if path.suffix == ".json":
        raise ValueError(f"--out '{clip(out)}': the description goes to a .json file beside it; name the export .pt")
    if path.with_suffix(".json").is_dir():
        raise ValueError(f"--out '{clip(out)}': {path.with_suffix('.json').name} beside it is a directory; remove it")
    return path


def _export_step(policy, saved, checkpoint: str) -> tuple:
    """The policy's :class:`~ipgnn.nn.local.AgentStep` and the description written beside it."""
    import torch

    from ipgnn.nn.local import AgentStep
    from ipgnn.nn.propagation import IntentionPropagationNetwork

    assert isinstance(policy, IntentionPropagationNetwork)
    step = AgentStep.from_network(policy)
    meta = {
        "checkpoint": str(checkpoint),
        "env_step": saved.state.get("env_step"),
        "torch": torch.__version__,
        "obs_dim": int(step.enc_weight.size(2)),
        "agent_types": int(step.enc_weight.size(0)),
        "hidden": step.channels,
        "rounds": step.rounds,
        "heads": step.heads,
        "hops": step.hops,
        "discrete": step.discrete,
        "bytes_per_message": 4 * step.channels,
        "methods": {
            "encode": "(x [B, obs_dim], agent_type [B] or None) -> state term c [B, d]",
            "initial": "c -> mu^0 = relu(c) [B, d]",
            "update": "(mu^{m-1} [B, d], c [B, d], received [B, K, d], heard [B, K] bool) -> mu^m",
            "act": "(cat(mu^0..mu^M) [B, (M+1) d], action_mask [B, A] bool or None) -> action",
        },
    }
    return step, meta


if __name__ == "__main__":  # pragma: no cover
    sys.exit(train_main())
