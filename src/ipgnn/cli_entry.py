"""The console scripts' entry points (``ipgnn-train``, ``ipgnn-eval``, ...), and ``python -m ipgnn.cli_entry
COMMAND ...`` for the same commands without relying on PATH.

Each command runs under :func:`run`, which sets its signal handling before anything heavy is imported:
importing the package's command modules pulls in torch, seconds of start-up on a loaded machine. A Ctrl-C
(SIGINT) or a SIGTERM (schedulers, ``timeout``, ``docker stop``) that arrives then, or at any moment a command
does not handle itself, ends in one line and exit status 130 or 143, never a traceback. (A signal in the
interpreter's own start-up, its first ~0.1-0.2 s before any code of this module runs, ends as Python's does.)
``ipgnn-train`` installs its own handlers as soon as it starts (a safe-point checkpoint during training:
:mod:`ipgnn.training.stopping`); this module imports nothing but the standard library.
"""

import importlib
import os
import signal
import sys

COMMANDS = {
    "train": "ipgnn.cli:train_main",
    "eval": "ipgnn.cli:eval_main",
    "data": "ipgnn.traffic.datasets:main",
    "compare": "ipgnn.compare:main",
    "interpret": "ipgnn.interpret:main",
    "export": "ipgnn.cli:export_main",
    "robustness": "ipgnn.robustness:main",
}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's ``KeyboardInterrupt`` so that ``finally`` blocks still run."""


def _terminate(signum, frame):
    raise _Terminated()


def run(command: str, argv: list[str] | None = None, reexec: bool = False) -> int:
    """Run ``command`` (a key of :data:`COMMANDS`) with ``argv`` (default: the process's own arguments, as a
    console script); return its exit status. SIGINT and SIGTERM that reach this level print one line and give
    130 and 143. ``reexec``: first re-execute the process with glibc's huge pages (:mod:`ipgnn.cpu`; ``train``
    only, which does it itself when run as a console script)."""
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        if reexec and command == "train":
            from ipgnn.cpu import reexec_with_huge_pages

            reexec_with_huge_pages()
        module, func = COMMANDS[command].split(":")
        main = getattr(importlib.import_module(module), func)
        return main() if argv is None else main(argv)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
        print(f"\nipgnn-{command}: {how} before it finished; nothing more to save", file=sys.stderr)
        status = 143 if isinstance(exc, _Terminated) else 130
        if argv is None or __name__ == "__main__":  # this process is the command: see _exit
            _exit(status)
        return status


def _exit(status: int) -> None:
    """Leave with ``status`` after the exit handlers, without the interpreter's own exit: a ``KeyboardInterrupt``
    that passed through code run by the interpreter's C API (torch's import does) marks it unhandled, and
    CPython then ends the process by SIGINT (status -2) even though it was caught here (measured: 2 of 12
    start-up interrupts)."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def train() -> int:
    """``ipgnn-train``."""
    return run("train")


def evaluate() -> int:
    """``ipgnn-eval``."""
    return run("eval")


def data() -> int:
    """``ipgnn-data``."""
    return run("data")


def compare() -> int:
    """``ipgnn-compare``."""
    return run("compare")


def interpret() -> int:
    """``ipgnn-interpret``."""
    return run("interpret")


def export() -> int:
    """``ipgnn-export``."""
    return run("export")


def robustness() -> int:
    """``ipgnn-robustness``."""
    return run("robustness")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m ipgnn.cli_entry {{{','.join(COMMANDS)}}} [args...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[1], sys.argv[2:], reexec=True))
