"""MkDocs hooks: the generated pages and the committed results the pages link to.

- ``<!-- config-reference -->`` in a page becomes the configuration reference generated from the pydantic
  schema (``docs/config_reference.py``);
- ``<!-- api-reference -->`` becomes one mkdocstrings block per module of ``API_MODULES``;
- every ``../results/...`` (and ``../benchmarks/figures/...``) file a page links to (figures, the summaries'
  tables) is added to the site from the repository, so the pages link the committed artefacts without a
  second copy. The links are written relative to ``docs/`` so that they also work when the Markdown is read
  in the repository; in the site the files sit at ``results/...`` (``benchmarks/figures/...``) beside the
  pages, and the links are rewritten to match.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[1]
DOCS = Path(__file__).resolve().parent
# the documented source is this checkout's, even where another copy of ipgnn is installed
for path in (str(DOCS), str(ROOT / "src")):
    if path not in sys.path:
        sys.path.insert(0, path)

import config_reference  # noqa: E402

# The API reference, in this order; a module renamed away fails the strict build.
API_MODULES = {
    "Configuration and training": [
        "config",
        "trainer",
        "training.callbacks",
        "runs",
        "replay",
        "graphs",
        "seeding",
        "checkpoint",
        "cache",
    ],
    "Networks (ipgnn.nn)": ["nn.propagation", "nn.attention", "nn.critics", "nn.distributions", "nn.local"],
    "Algorithms (ipgnn.algos)": [
        "algos.base",
        "algos.ipsac",
        "algos.iql",
        "algos.dgn",
        "algos.qmix",
        "algos.maddpg",
        "algos.colight",
    ],
    "Environments": ["envs.traffic_graph", "traffic.simulator_env", "traffic.controllers"],
    "Execution and analysis": ["references", "decentralised", "compare", "analysis", "interpret", "robustness"],
}
_RESULT_LINK = re.compile(r"\]\(\.\./((?:results|benchmarks/figures)/[^)\s#]+)")


def api_markdown() -> str:
    out = []
    for title, modules in API_MODULES.items():
        out.append(f"## {title}\n")
        out += [f"::: ipgnn.{m}\n" for m in modules]
    return "\n".join(out)


def result_links(markdown: str) -> set[str]:
    """The ``results/...`` paths a page links to as ``../results/...`` (Markdown links and images)."""
    return set(_RESULT_LINK.findall(markdown))


def on_files(files: Files, config) -> Files:
    wanted: set[str] = set()
    for page in DOCS.glob("*.md"):
        wanted |= result_links(page.read_text(encoding="utf-8"))
    for rel in sorted(wanted):
        if (ROOT / rel).is_file() and files.get_file_from_path(rel) is None:
            # linked from the pages, not listed in the navigation
            file = File(rel, src_dir=str(ROOT), dest_dir=config["site_dir"], use_directory_urls=False)
            file.inclusion = InclusionLevel.NOT_IN_NAV
            files.append(file)
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- config-reference -->" in markdown:
        markdown = markdown.replace("<!-- config-reference -->", config_reference.markdown())
    if "<!-- api-reference -->" in markdown:
        markdown = markdown.replace("<!-- api-reference -->", api_markdown())
    return re.sub(r"\]\(\.\./(results|benchmarks/figures)/", r"](\1/", markdown)
