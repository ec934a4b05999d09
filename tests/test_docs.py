"""The README as a front door and the documentation site behind it.

The README keeps the two quick-start commands (the second is the one `.ci/run` runs) and a Python example that
runs as written; the configuration reference is generated from the pydantic schema and lists every field; the
comparison table is the same on the README and the Results page; no page refers to issue numbers or to how the
package was developed; and the site builds in strict mode (a broken link or reference fails it)."""

import importlib.util
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import ipgnn
from ipgnn.config import ExperimentConfig

from conftest import REPO

DOCS = REPO / "docs"
README = REPO / "README.md"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(text: str, title: str) -> str:
    """The Markdown from the ``## title`` heading to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


# --- the README ---


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_command():
    quick = _section(README.read_text(encoding="utf-8"), "Quick start")
    commands = [b.strip() for b in _blocks(quick, "bash")]
    assert commands == [
        'pip install -e ".[traffic]" && ipgnn-train --config configs/manhattan96.yaml',
        'pip install -e ".[dev]" && python -m pytest',
    ]
    ci = (REPO / ".ci" / "run").read_text()
    # .ci/run installs the same extra and runs the same test command (with its checks in between)
    assert re.search(r'pip install -q -e "\.\[dev\]"', ci)
    assert re.search(r"&& python -m pytest\s*$", ci)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    """The README's Python block, run unchanged from a directory that has the repository's configs."""
    (example,) = _blocks(_section(README.read_text(encoding="utf-8"), "In Python"), "python")
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "example.py").write_text(example)
    env = dict(os.environ, PYTHONPATH=str(Path(ipgnn.__file__).parents[1]), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "'eval/episode_return'" in out.stdout
    assert "torch.Size([3, 128])" in out.stdout


def test_comparison_table_is_the_same_on_the_readme_and_the_results_page():
    pattern = re.compile(r"<!-- paper-table:begin -->\n(.*?)\n<!-- paper-table:end -->", re.S)
    readme = pattern.findall(README.read_text(encoding="utf-8"))
    results_page = (DOCS / "results.md").read_text(encoding="utf-8")
    results = pattern.findall(results_page)
    assert len(readme) == len(results) == 1
    assert readme == results
    # the findings stay between their markers, for whoever updates them
    for marker in ("paper-findings", "ablation-findings"):
        assert results_page.count(f"<!-- {marker}:begin -->") == results_page.count(f"<!-- {marker}:end -->") == 1


def test_paper_table_writes_every_page_that_holds_the_table(tmp_path):
    paper_table = _module("paper_table", REPO / "benchmarks" / "paper_table.py")
    assert "README.md" in paper_table.PAGES and "docs/results.md" in paper_table.PAGES
    page = tmp_path / "page.md"
    page.write_text(f"before\n{paper_table.BEGIN}\nold\n{paper_table.END}\nafter\n")
    paper_table.write_between_markers(page, "| new |")
    assert page.read_text() == f"before\n{paper_table.BEGIN}\n| new |\n{paper_table.END}\nafter\n"


# --- pages that describe the package, not its development ---

DEVELOPMENT = re.compile(
    r"\bissues? #?\d+|(?<![\w&/])#\d+\b|\bsessions?\b|\bthe lead\b|\bthis stop\b|\bhelpers?\b",
    re.I,
)


def _pages():
    yield README
    yield REPO / "benchmarks" / "README.md"
    yield from sorted(DOCS.glob("*.md"))
    yield from sorted((REPO / "configs").rglob("*.yaml"))


def test_no_page_refers_to_issue_numbers_or_to_development():
    bad = []
    for path in _pages():
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if path.suffix == ".yaml" and "#" not in line:
                continue  # only a YAML file's comments are prose
            text = line.split("#", 1)[1] if path.suffix == ".yaml" else line
            if DEVELOPMENT.search(text):
                bad.append(f"{path.relative_to(REPO)}:{no}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad)


# --- the configuration reference ---

config_reference = _module("config_reference", DOCS / "config_reference.py")


def _dumped_keys(value: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a default config as pydantic dumps it (an independent walk of the schema)."""
    keys = []
    for key, item in value.items():
        keys.append(prefix + key)
        if isinstance(item, dict) and item:
            keys += _dumped_keys(item, f"{prefix}{key}.")
    return keys


def test_config_reference_lists_every_field():
    text = config_reference.markdown()
    keys = _dumped_keys(ExperimentConfig().model_dump())
    assert len(keys) > 60
    assert sorted(config_reference.fields(ExperimentConfig)) == sorted(keys)
    missing = [k for k in keys if f"| `{k}` |" not in text]
    assert not missing, missing


def test_config_reference_rows_carry_type_default_and_description():
    text = config_reference.markdown()
    (row,) = [line for line in text.splitlines() if line.startswith("| `model.hidden` |")]
    field = ExperimentConfig.model_fields["model"].annotation.model_fields["hidden"]
    assert row == f"| `model.hidden` | `int` | `128` | {field.description} (≥ 1, ≤ 16384) |"
    assert "| `algo.policy_lr` | `float \\| None` | `null` |" in text
    assert "### `env.graph`" in text


def test_config_reference_type_names():
    type_name = config_reference.type_name
    assert type_name(typing.Literal["fp32", "bf16"]) == "'fp32' | 'bf16'"
    assert type_name(int | None) == "int | None"
    assert type_name(typing.Optional[int]) == "int | None"  # noqa: UP045 (the spelling under test)
    assert type_name(typing.Annotated[int, "meta"]) == "int"
    assert type_name(dict[str, typing.Any]) == "dict[str, Any]"


# --- the docstrings as the API reference renders them ---


def test_sphinx_roles_and_math_become_markdown():
    pytest.importorskip("griffe")
    to_markdown = _module("griffe_sphinx", DOCS / "griffe_sphinx.py").to_markdown
    text = "See :class:`~ipgnn.nn.propagation.IntentionPropagationConv` and :func:`ipgnn.seeding.stream_seed`."
    assert to_markdown(text) == "See `IntentionPropagationConv` and `ipgnn.seeding.stream_seed`."
    assert to_markdown(r"width :math:`\tilde\mu_i` of ``x``") == r"width \(\tilde\mu_i\) of `x`"
    block = "Update:\n\n.. math::\n    a = b\n        + c\n\nwhere a is new."
    assert to_markdown(block) == "Update:\n\n$$\na = b\n    + c\n$$\n\nwhere a is new."


# --- the site ---


def test_pages_link_only_committed_results():
    pytest.importorskip("mkdocs")
    hooks = _module("docs_hooks", DOCS / "hooks.py")
    missing = [
        f"{page.name}: {rel}"
        for page in sorted(DOCS.glob("*.md"))
        for rel in hooks.result_links(page.read_text(encoding="utf-8"))
        if not (REPO / rel).is_file()
    ]
    assert not missing, missing


def test_site_builds_in_strict_mode(tmp_path):
    """What .ci/run runs before the tests: a broken link, anchor or API reference fails the build."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    reference = (tmp_path / "site" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "env.graph.k" in reference
