"""Form fields generated from a pydantic model's JSON schema, and the values read back.

Each connector's ``Params`` (and each credential type's secret model) becomes a list of
``Field``s; the template draws each as the control its schema calls for, and ``read``
turns the submitted strings back into config values (a step's value may be a template,
so a number or a JSON field that does not parse is kept as the string it is).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

#: Params whose value is a message body: a multi-line control.
LONG_TEXT = frozenset({"text", "content", "body"})


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    #: ``text``, ``textarea``, ``number``, ``boolean``, ``select`` or ``json``.
    control: str
    required: bool = False
    options: tuple[str, ...] = ()
    help: str = ""


def _kind(schema: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    variants = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    if len(variants) != 1:
        return "json", ()
    only = variants[0]
    if "enum" in only:
        return "select", tuple(str(v) for v in only["enum"])
    match only.get("type"):
        case "string":
            return "text", ()
        case "number" | "integer":
            return "number", ()
        case "boolean":
            return "boolean", ()
        case _:
            return "json", ()


def fields_for(model: type[BaseModel]) -> list[Field]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        control, options = _kind(prop)
        if control == "text" and name in LONG_TEXT:
            control = "textarea"
        help_ = "JSON" if control == "json" else ""
        if "default" in prop and prop["default"] not in (None, False):
            help_ = f"{help_} default: {prop['default']}".strip()
        fields.append(
            Field(
                name=name,
                label=str(prop.get("title", name)),
                control=control,
                required=name in required,
                options=options,
                help=help_,
            )
        )
    return fields


def shown(value: Any) -> str:
    """A config value as its control shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, indent=2)


def read(
    fields: list[Field], form: Mapping[str, str], prefix: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of ``prefix + field.name`` (empty ones left out) and per-field errors."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields:
        raw = form.get(prefix + field.name, "").strip()
        if not raw:
            continue
        match field.control:
            case "number":
                try:
                    values[field.name] = int(raw) if raw.lstrip("-").isdigit() else float(raw)
                except ValueError:
                    values[field.name] = raw  # a template, checked after rendering
            case "boolean":
                values[field.name] = raw == "true"
            case "json":
                try:
                    values[field.name] = json.loads(raw)
                except ValueError:
                    if "{{" in raw:
                        values[field.name] = raw
                    else:
                        errors[field.name] = "not valid JSON"
            case _:
                values[field.name] = raw
    return values, errors


def error_key(loc: Any) -> str:
    """An API error location (``["body", "steps", 0, "config", "text"]``) as a form key."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "form"


def errors_by_field(details: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for detail in details or []:
        key = error_key(detail.get("loc", ()))
        found[key] = f"{found[key]}; {detail['msg']}" if key in found else str(detail["msg"])
    return found
