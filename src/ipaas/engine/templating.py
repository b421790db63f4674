"""Sandboxed Jinja rendering of step configs over the trigger and earlier steps' outputs.

A string that is exactly one expression (``"{{ trigger.body.items }}"``) renders to the
native value, so lists and objects pass through untouched; any other string renders to text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Output of one rendered string; larger output fails the step instead of bloating a record.
MAX_RENDERED_CHARS = 64 * 1024
#: ``range()`` inside templates is capped so ``range(10**9)`` cannot hang a worker.
MAX_RANGE = 10_000

_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%).)*)\}\}$", re.S)


class TemplateRenderError(Exception):
    """A template could not be compiled or rendered; the message says where."""


def _safe_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        msg = f"range of {len(r)} items exceeds the limit of {MAX_RANGE}"
        raise TemplateRenderError(msg)
    return r


class _Environment(ImmutableSandboxedEnvironment):
    def __init__(self) -> None:
        super().__init__(autoescape=False, undefined=Undefined)
        self.globals = {"range": _safe_range}

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Payload keys win over dict methods: ``trigger.body.items`` is the "items" field.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _Environment()


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    match = _SINGLE_EXPRESSION.match(source.strip())
    if match:
        return ("expr", _ENV.compile_expression(match["expr"], undefined_to_none=True))
    return ("text", _ENV.from_string(source))


def render_string(source: str, context: dict[str, Any]) -> Any:
    if not is_template(source):
        return source
    try:
        kind, compiled = _compile(source)
        value = compiled(**context) if kind == "expr" else compiled.render(context)
    except TemplateRenderError:
        raise
    except (TemplateError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        msg = f"{type(exc).__name__}: {exc}"
        raise TemplateRenderError(msg) from exc
    if isinstance(value, str) and len(value) > MAX_RENDERED_CHARS:
        msg = f"rendered text of {len(value)} characters exceeds {MAX_RENDERED_CHARS}"
        raise TemplateRenderError(msg)
    return value


def render(value: Any, context: dict[str, Any], path: str = "config") -> Any:
    """Render every string leaf of a JSON-like value; errors name the failing field."""
    if isinstance(value, str):
        try:
            return render_string(value, context)
        except TemplateRenderError as exc:
            msg = f"{path}: {exc}"
            raise TemplateRenderError(msg) from exc
    if isinstance(value, dict):
        return {k: render(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def check_syntax(value: Any, path: str = "config") -> list[tuple[str, str]]:
    """Every template in ``value`` that does not compile, as ``(path, message)``."""
    errors: list[tuple[str, str]] = []
    if isinstance(value, str) and is_template(value):
        try:
            _compile(value)
        except TemplateError as exc:
            errors.append((path, f"template syntax error: {exc}"))
    elif isinstance(value, dict):
        for k, v in value.items():
            errors.extend(check_syntax(v, f"{path}.{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            errors.extend(check_syntax(v, f"{path}[{i}]"))
    return errors
