"""Repository hygiene that a review once found broken: no control characters in source files (a
docstring's \\t and \\b had become TAB and BACKSPACE bytes and garbled its mathematics), and imports that
follow the layering (environments and networks never import the algorithms or the CLI); ruff's lint and
format checks pass on the whole tree, as .ci/run runs them, so that a plain `python -m pytest` catches them too."""

import ast
import re
import subprocess
import sys

import pytest

from conftest import REPO

TEXT = (".py", ".yaml", ".yml", ".md", ".toml", ".cfg", ".ipynb", ".txt")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def tracked(*suffixes):
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [REPO / f for f in out.stdout.splitlines() if f.endswith(suffixes)]


def test_no_control_characters_in_source_files():
    bad = []
    for path in tracked(*TEXT):
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if CONTROL.search(line):
                bad.append(f"{path.relative_to(REPO)}:{no}: {line.strip()[:60]!r}")
    assert not bad, "control characters (write \\\\t, \\\\b in raw strings):\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", ["envs", "nn", "traffic"])
def test_lower_layers_never_import_algorithms_or_the_cli(layer):
    """cli -> trainer -> envs -> algos -> nn: envs, traffic and nn import neither ipgnn.algos nor the CLI."""
    bad = []
    for path in sorted((REPO / "src" / "ipgnn" / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                if name.startswith(("ipgnn.algos", "ipgnn.cli", "ipgnn.trainer", "ipgnn.compare")):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not bad, "\n".join(bad)


def test_traffic_never_imports_the_graph_environments():
    """envs -> traffic, one way: the simulator package (engines, scenarios, the simulator environment) never
    imports ipgnn.envs, whose traffic_graph adapter imports it."""
    bad = []
    for path in sorted((REPO / "src" / "ipgnn" / "traffic").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.startswith("ipgnn.envs")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    """`ruff check .` and `ruff format --check .` with pyproject.toml's settings; fails with ruff's report."""
    pytest.importorskip("ruff", reason="ruff comes with the dev extra")
    out = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        how = "`ruff check --fix .` fixes the safe ones" if command[0] == "check" else "`ruff format .` fixes it"
        pytest.fail(f"ruff {' '.join(command)} failed ({how}):\n{out.stdout}{out.stderr}", pytrace=False)
