"""The field reference of site configs (site_configs/README.md), generated from the models."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from evdlm.config.models import SiteConfig

INTRO = """# Site configs

One YAML file describes one site. `evdlm validate FILE` checks it and reports every error at
once with file, line, column and field; `schema.json` (generated: `evdlm schema -o
site_configs/schema.json`) lets editors complete and check it. Top-level keys starting with
`x-` are free-form: a home for YAML anchors (`&name` / `<<: *name`) shared by many chargers.

Units are in the field names (`_kw`, `_a`, `_v`, `_s`, `_pct`, `_kwh`). Signs, everywhere:
grid + = import, PV + = production, battery + = discharge, EV + = consumption; a device that
reports the other way sets `invert_sign: true`. Secrets (charger passwords, broker passwords)
are never written in the file: give `{env: NAME}` or `{file: path}`.

Examples here: `demo.yaml` (the embedded demo site), `workplace-12.yaml` (12 chargers, PV, an
RS-485 meter line, an MQTT sub-meter), `depot-200.yaml` (200 chargers, 3-level tree, DC bus
chargers, battery), `stress-1000.yaml` (1000 EVSEs). The two large ones are written by
`generate_large_sites.py`.

## Field reference

This section is generated from the config models (`evdlm.config.reference`); a test keeps it
current.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for field in model.model_fields.values():
            for candidate in _nested(field.annotation):
                visit(candidate)

    visit(root)
    return seen


def _nested(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _nested(arg)]


def field_reference() -> str:
    lines = [INTRO]
    for model in _models(SiteConfig):
        lines.append(f"### {model.__name__}\n")
        if model.__doc__ and model is not SiteConfig:
            lines.append(" ".join(model.__doc__.split()) + "\n")
        lines.append("| field | type | default | meaning |")
        lines.append("| --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            if field.is_required():
                default = "**required**"
            elif field.default_factory is not None:
                default = "(empty)" if name not in ("ocpp", "recording", "observability") else "(defaults)"
            elif field.default is PydanticUndefined:
                default = ""
            else:
                default = f"`{field.default!r}`" if not hasattr(field.default, "value") else f"`{field.default.value}`"
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {default} | {description} |")
        lines.append("")
    return "\n".join(lines)
