"""``python -m ipgnn.cli_entry COMMAND ...``: the console scripts without relying on PATH."""

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

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m ipgnn.cli_entry {{{','.join(COMMANDS)}}} [args...]", file=sys.stderr)
        sys.exit(2)
    import importlib

    if sys.argv[1] == "train":
        from ipgnn.cpu import reexec_with_huge_pages

        reexec_with_huge_pages()  # glibc's huge pages need the process's start (ipgnn.cpu)

    module, func = COMMANDS[sys.argv[1]].split(":")
    sys.exit(getattr(importlib.import_module(module), func)(sys.argv[2:]))
