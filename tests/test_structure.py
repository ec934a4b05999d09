"""The package's shape, measured: short functions, a short trainer, one home per concept.

These are read from the source with :mod:`ast`, so they fail the moment a function grows past the limit or a
second definition of a shared concept appears.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ipgnn"
MAX_FUNCTION_LINES = 80
MAX_TRAINER_LINES = 250


def _trees() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def _definitions(name: str) -> list[str]:
    found = []
    for path, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def test_no_function_is_longer_than_the_limit():
    long = []
    for path, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n >= MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions of {MAX_FUNCTION_LINES} lines or more: {long}"


def test_the_trainer_class_is_short():
    tree = ast.parse((SRC / "trainer.py").read_text())
    (trainer,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer"]
    assert trainer.end_lineno - trainer.lineno + 1 < MAX_TRAINER_LINES


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("load_run", "runs.py"),
        ("available_memory", "cpu.py"),
        ("set_threads", "cpu.py"),
        ("seed_everything", "seeding.py"),
        ("native_bf16", "precision.py"),
        ("polyak_update", "algos/targets.py"),
    ],
)
def test_one_definition_per_concept(name, home):
    (where,) = _definitions(name) or ["nowhere"]
    assert where.split(":")[0] == home


def test_torch_threads_are_set_in_one_place():
    calls = []
    for path, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("set_num_threads", "set_num_interop_threads"):
                calls.append(str(path.relative_to(SRC)))
    assert set(calls) == {"cpu.py"}, calls
