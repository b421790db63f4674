"""Sandboxed Jinja rendering of step configs over the trigger and earlier steps' outputs.

A string that is exactly one expression (``"{{ trigger.body.items }}"``) renders to the
native value, so lists and objects pass through untouched; any other string renders to text.
What a template may cost (time, loops, size) is bounded by ``engine/sandbox.py``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError

from ipaas.engine.sandbox import (
    DEFAULT_TIMEOUT_S,
    MAX_RANGE,
    LimitedEnvironment,
    TemplateLimitError,
    run_with_budget,
    start_budget,
)

#: Output of one rendered string; larger output fails the step instead of bloating a record.
MAX_RENDERED_CHARS = 64 * 1024

_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%).)*)\}\}$", re.S)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_RANGE",
    "MAX_RENDERED_CHARS",
    "TemplateRenderError",
    "check_syntax",
    "is_template",
    "render",
]


class TemplateRenderError(Exception):
    """A template could not be compiled or rendered; the message says where."""


_ENV = LimitedEnvironment()


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    match = _SINGLE_EXPRESSION.match(source.strip())
    if match:
        return ("expr", _ENV.compile_expression(match["expr"], undefined_to_none=True))
    return ("text", _ENV.from_string(source))


def _render_string(source: str, context: dict[str, Any]) -> Any:
    if not is_template(source):
        return source
    try:
        kind, compiled = _compile(source)
        value = compiled(**context) if kind == "expr" else compiled.render(context)
    except TemplateLimitError as exc:
        raise TemplateRenderError(str(exc)) from exc
    except (
        TemplateError,
        TypeError,
        ValueError,
        AttributeError,
        ArithmeticError,
        LookupError,
        RecursionError,
        MemoryError,
    ) as exc:
        msg = f"{type(exc).__name__}: {exc}"
        raise TemplateRenderError(msg) from exc
    if isinstance(value, str) and len(value) > MAX_RENDERED_CHARS:
        msg = f"rendered text of {len(value)} characters exceeds {MAX_RENDERED_CHARS}"
        raise TemplateRenderError(msg)
    return value


def render(value: Any, context: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Render every string leaf of a JSON-like value; errors name the failing field.

    All leaves share one budget: over ``timeout_s`` in total fails the render.
    """
    budget = start_budget(timeout_s)
    return run_with_budget(budget, lambda: _render(value, context, "config"))


def _render(value: Any, context: dict[str, Any], path: str) -> Any:
    if isinstance(value, str):
        try:
            return _render_string(value, context)
        except TemplateRenderError as exc:
            msg = f"{path}: {exc}"
            raise TemplateRenderError(msg) from exc
    if isinstance(value, dict):
        return {k: _render(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
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
