"""The configuration reference, generated from the pydantic schema in ``ipgnn.config``.

Walks :class:`ipgnn.config.ExperimentConfig` and its nested sections and writes one Markdown table per
section: every field's dotted key, type, default and description, as the schema states them. The
documentation build calls :func:`markdown` (``docs/hooks.py``); ``python docs/config_reference.py`` prints it.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A short, readable name for a field's annotation (``int | str``, ``'fp32' | 'bf16'``, ``list[str]``)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def default_text(field: FieldInfo) -> str:
    """The field's default as YAML would spell it; the factory's result when the default is built."""
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def constraints(field: FieldInfo) -> str:
    """The numeric bounds pydantic checks (``ge``, ``gt``, ``le``, ``lt``) as ``≥ 1``, ``> 0`` ..."""
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    out = []
    for meta in field.metadata:
        for attr, sign in signs.items():
            bound = getattr(meta, attr, None)
            if bound is not None:
                out.append(f"{sign} {bound}")
    return ", ".join(out)


def sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """``(dotted prefix, model)`` for the model and every nested section, depth first in field order."""
    found = [(prefix, model)]
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            found += sections(field.annotation, f"{prefix}{name}.")
    return found


def fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included (``env``, ``env.graph``, ``env.graph.k`` ...)."""
    keys = []
    for section_prefix, section in sections(model, prefix):
        keys += [section_prefix + name for name in section.model_fields]
    return keys


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(model: type[BaseModel] | None = None) -> str:
    """The reference as Markdown: one ``###`` heading and table per section of the schema."""
    if model is None:
        from ipgnn.config import ExperimentConfig

        model = ExperimentConfig
    out = []
    for prefix, section in sections(model):
        title = prefix.rstrip(".") or "top level"
        out.append(f"### `{title}`\n")
        doc = (section.__doc__ or "").strip()
        if doc:
            out.append(doc.split("\n\n")[0].replace("\n", " ").replace("``", "`") + "\n")
        out.append("| key | type | default | description |")
        out.append("|---|---|---|---|")
        for name, field in section.model_fields.items():
            if _is_section(field.annotation):
                desc = f"section: see [`{prefix}{name}`](#{(prefix + name).replace('.', '')})"
                out.append(f"| `{prefix}{name}` | section | | {desc} |")
                continue
            desc = field.description or ""
            bounds = constraints(field)
            if bounds:
                desc = f"{desc} ({bounds})" if desc else bounds
            out.append(
                f"| `{prefix}{name}` | `{_cell(type_name(field.annotation))}` | `{_cell(default_text(field))}` "
                f"| {_cell(desc)} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
