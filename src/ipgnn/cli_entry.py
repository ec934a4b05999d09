"""``python -m ipgnn.cli_entry train|eval ...``: the console scripts without relying on PATH."""

import sys

from ipgnn.cli import eval_main, train_main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "eval"):
        print("usage: python -m ipgnn.cli_entry {train,eval} [args...]", file=sys.stderr)
        sys.exit(2)
    sys.exit((train_main if sys.argv[1] == "train" else eval_main)(sys.argv[2:]))
