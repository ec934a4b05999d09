"""A Griffe extension that turns the docstrings' reStructuredText into Markdown for mkdocstrings.

The package's docstrings are Google-style (``Args:``, ``Returns:``) with Sphinx roles, as PyG's are. Without
this, ``:class:`~ipgnn.x.Y``` would show its role name and ``.. math::`` blocks would render as prose. Only the
rendered copy changes; the source is left alone.
"""

from __future__ import annotations

import re
import textwrap

import griffe

# :class:`~a.b.C` -> `C`; :func:`a.b.f` -> `a.b.f`; :meth:`f` -> `f`
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")


def _role(match: re.Match) -> str:
    target = match.group(1)
    whole = match.group(0)
    if ":`~" in whole:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _math_blocks(text: str) -> str:
    """``.. math::`` and its indented body -> a ``$$ ... $$`` block (arithmatex renders it)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(".. math::"):
            indent = len(line) - len(line.lstrip())
            body = [stripped[len(".. math::") :].strip()] if stripped != ".. math::" else []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            block = textwrap.dedent("\n".join(b for b in body)).strip("\n")
            pad = " " * indent
            out += [pad + "$$"] + [pad + b for b in block.split("\n")] + [pad + "$$", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """The docstring's reST (roles, math, ``literals``) as the Markdown mkdocstrings renders."""
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: "\\(" + m.group(1) + "\\)", text)
    text = _ROLE.sub(_role, text)
    # ``literal`` is also valid Markdown, but `` ``a`` `` nests badly next to the roles' single backticks
    return re.sub(r"``([^`]+)``", r"`\1`", text)


class SphinxRoles(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`to_markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
