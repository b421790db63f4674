"""Sandboxed Jinja rendering of step configs over the trigger and earlier steps' outputs.

A string that is exactly one expression (``"{{ trigger.body.items }}"``) renders to the
native value, so lists and objects pass through untouched; any other string renders to text.
What one render may cost (time, loops, size) is bounded by ``engine/sandbox.py``; what one
tenant's renders may take of a process's time, by ``TemplateRenderer``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, meta, nodes

from ipaas.engine.sandbox import (
    DEFAULT_TIMEOUT_S,
    MAX_RANGE,
    LimitedEnvironment,
    TemplateLimitError,
    run_with_budget,
    start_budget,
)
from ipaas.executions.models import TriggerData

#: Output of one rendered string; larger output fails the step instead of bloating a record.
MAX_RENDERED_CHARS = 64 * 1024
#: Template tags in one workflow's steps together. Found by hand: a step text of 45,000
#: ``{{ }}`` (945 KB, under the API's body limit) took 5.5 s to compile on the event loop,
#: every other request waiting, and the server's peak RSS from 190 to 840 MB; and once per
#: process again when it ran. At this bound a compile takes ~0.3 s at most; real workflows
#: use tens (``template_size``).
MAX_TEMPLATE_TAGS = 2000
#: Characters inside those tags, together: one expression listing 100,000 items (200 KB)
#: took 3.4 s to compile. At this bound, ~0.3 s at most.
MAX_TEMPLATE_CODE_CHARS = 20_000
#: Share of a process's time one tenant's renders may take, on average
#: (``IPAAS_TEMPLATE_TENANT_SHARE``).
DEFAULT_TENANT_SHARE = 0.1
#: Render time a tenant may owe before its renders wait: the length of its bursts, which
#: is how long another tenant may wait behind them (plus one render, up to the timeout).
BURST_S = 0.25

_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%).)*)\}\}$", re.S)

__all__ = [
    "BURST_S",
    "DEFAULT_TENANT_SHARE",
    "DEFAULT_TIMEOUT_S",
    "MAX_RANGE",
    "MAX_RENDERED_CHARS",
    "MAX_TEMPLATE_CODE_CHARS",
    "MAX_TEMPLATE_TAGS",
    "RenderShareSpent",
    "TemplateRenderError",
    "TemplateRenderer",
    "TemplateTooComplex",
    "check_references",
    "check_syntax",
    "is_template",
    "render",
    "template_size",
]


class TemplateRenderError(Exception):
    """A template could not be compiled or rendered; the message says where."""


class RenderShareSpent(Exception):
    """The tenant's renders took their share of this process's time: this one did not run,
    and may in ``wait_s``."""

    def __init__(self, message: str, *, wait_s: float) -> None:
        super().__init__(message)
        self.wait_s = wait_s


_ENV = LimitedEnvironment()


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


class TemplateTooComplex(TemplateError):
    """Jinja could not compile the template: nested deeper, or an expression longer, than
    Python's compiler or parser can take."""


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    try:
        match = _SINGLE_EXPRESSION.match(source.strip())
        if match:
            return ("expr", _ENV.compile_expression(match["expr"], undefined_to_none=True))
        return ("text", _ENV.from_string(source))
    except (RecursionError, SyntaxError, MemoryError) as exc:
        # Found by hand, each a 500 on create and dry run: 200 nested parentheses or one
        # expression of 20,000 terms (RecursionError in Jinja's parser), 30 nested loops
        # ("too many statically nested blocks" from Python's compiler).
        msg = f"too deeply nested or too long to compile ({type(exc).__name__})"
        raise TemplateTooComplex(msg) from None


#: A tag and its code, from its opening to its closing (or to the end of an unclosed one).
_TAG = re.compile(r"\{\{.*?(?:\}\}|\Z)|\{%.*?(?:%\}|\Z)|\{#.*?(?:#\}|\Z)", re.S)


def _templates(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every template string in ``value``, at any depth, with its path."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _templates(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _templates(v, f"{path}[{i}]")


def template_size(value: Any) -> tuple[int, int]:
    """The template tags (``{{``, ``{%``, ``{#``) in the strings of ``value``, at any depth,
    and the characters they span: a compile's time and memory grow with both, so a
    workflow's are bounded (``MAX_TEMPLATE_TAGS``, ``MAX_TEMPLATE_CODE_CHARS``) before any
    is compiled. Literal text between tags costs next to nothing (500 KB: 27 ms)."""
    tags = chars = 0
    for _, source in _templates(value, ""):
        spans = [match.end() - match.start() for match in _TAG.finditer(source)]
        tags += len(spans)
        chars += sum(spans)
    return tags, chars


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
        SyntaxError,
    ) as exc:
        msg = f"{type(exc).__name__}: {exc}"
        raise TemplateRenderError(msg) from exc
    if isinstance(value, str) and len(value) > MAX_RENDERED_CHARS:
        msg = f"rendered text of {len(value)} characters exceeds {MAX_RENDERED_CHARS}"
        raise TemplateRenderError(msg)
    _check_unicode(value)
    return value


def _check_unicode(value: Any) -> None:
    """``TemplateRenderError`` for a string (at any depth of an expression's value) holding a
    lone surrogate, which no JSON, database or remote takes as text. A template makes one
    with ``'\\ud800'`` or ``'%c' % 55296``; found by hand: the step's call went out, then
    its record could not be stored (before, the execution was left running and the reaper
    sent the call again at every lease). Everything else a template sees was checked when
    it came in (``kit/jsontext.py``), so only what a template computes can hold one."""
    if isinstance(value, str):
        if value.isascii():
            return
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = value[exc.start]
            msg = (
                f"rendered text holds U+{ord(char):04X}, a lone surrogate, which is not "
                "Unicode text"
            )
            raise TemplateRenderError(msg) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key)
            _check_unicode(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_unicode(item)


def render(value: Any, context: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Render every string leaf of a JSON-like value; errors name the failing field.

    All leaves share one budget: over ``timeout_s`` in total fails the render.
    """
    budget = start_budget(timeout_s)
    return run_with_budget(budget, lambda: _render(value, context, "config"))


class TemplateRenderer:
    """Renders step configs for the tenants of one process, each tenant within its share of
    the process's time.

    A render runs inline on the event loop (``engine/sandbox.py``): while it runs, nothing
    else in the process does, intake and every other tenant's executions included. The
    render timeout bounds one render; this bounds what one tenant's renders take together.

    Each tenant owes the render time it took, and pays it back at ``tenant_share`` seconds
    per second. Once it owes ``burst_s`` or more, its renders stop until it owes nothing:
    ``RenderShareSpent`` says how long that is, and the waiting steps all come back then,
    oldest first, each with the whole timeout (a render is never cut short for its tenant's
    share: cut at what was left, a render longer than that would never finish). So a tenant
    gets ``tenant_share`` of the loop on average, in bursts of about ``burst_s`` (or one
    render, when that is longer).

    Renders of a few ``{{ }}`` take microseconds: most tenants never owe enough to wait.
    """

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tenant_share: float = DEFAULT_TENANT_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.tenant_share = tenant_share
        self.burst_s = min(BURST_S, timeout_s)
        self._clock = clock
        #: tenant id -> what it owed after its last render (forgotten once paid back, at
        #: most 1,024 renders later).
        self._owed: dict[str, _Owed] = {}
        self._charges = 0

    def wait_s(self, tenant_id: str) -> float:
        """How long the tenant's renders must wait (0: they may run now)."""
        return self._wait_s(tenant_id, self._clock())

    def render(self, tenant_id: str, value: Any, context: dict[str, Any]) -> Any:
        """``render(value, context)`` unless the tenant must wait (``RenderShareSpent``)."""
        start = self._clock()
        wait_s = self._wait_s(tenant_id, start)
        if wait_s > 0:
            msg = (
                f"this tenant's templates took their share of render time "
                f"({self.tenant_share:.0%} of a process, IPAAS_TEMPLATE_TENANT_SHARE): "
                f"not rendered; next try in {wait_s:.1f} s"
            )
            raise RenderShareSpent(msg, wait_s=wait_s)
        try:
            return render(value, context, timeout_s=self.timeout_s)
        finally:
            self._charge(tenant_id, start)

    def _owed_at(self, entry: _Owed, now: float) -> float:
        return max(0.0, entry.seconds - (now - entry.at) * self.tenant_share)

    def _wait_s(self, tenant_id: str, now: float) -> float:
        entry = self._owed.get(tenant_id)
        if entry is None or not entry.waiting:
            return 0.0
        owed = self._owed_at(entry, now)
        if owed == 0.0:
            del self._owed[tenant_id]
        return owed / self.tenant_share

    def _charge(self, tenant_id: str, start: float) -> None:
        end = self._clock()
        entry = self._owed.get(tenant_id)
        owed = (self._owed_at(entry, end) if entry is not None else 0.0) + (end - start)
        # A render ran, so the tenant was not waiting: it does from a whole burst on.
        self._owed[tenant_id] = _Owed(owed, end, waiting=owed >= self.burst_s)
        self._charges += 1
        if self._charges % 1024 == 0:  # forget the tenants that owe nothing
            for key in [k for k, e in self._owed.items() if self._owed_at(e, end) == 0.0]:
                del self._owed[key]


@dataclass(slots=True)
class _Owed:
    seconds: float
    #: When ``seconds`` was owed (the clock of ``TemplateRenderer``).
    at: float
    #: It owed a whole burst: its renders wait until it owes nothing.
    waiting: bool


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
    for where, source in _templates(value, path):
        try:
            _compile(source)
        except TemplateError as exc:
            errors.append((where, f"template syntax error: {exc}"))
    return errors


#: What a template sees: ``trigger`` (an execution's ``TriggerData``), ``steps``, each
#: earlier step's ``output`` and ``status``, and ``execution`` (``engine/steps.py``).
CONTEXT_NAMES = frozenset({"trigger", "steps", "execution"})
#: What the config of a ``for_each`` step sees besides (``engine.steps._run_loop``).
LOOP_NAMES = frozenset({"item", "index"})
TRIGGER_KEYS = frozenset(TriggerData.model_fields)
STEP_KEYS = frozenset({"output", "status"})
EXECUTION_KEYS = frozenset({"id", "workflow_id", "created_at"})


def _key(node: nodes.Node) -> str | None:
    """The name ``node`` looks up: ``x.name`` or ``x["name"]``."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return node.arg.value if isinstance(node.arg.value, str) else None
    return None


def _context_name(node: nodes.Node, free: set[str]) -> str | None:
    """``trigger`` or ``steps`` when ``node`` is that name as the context has it."""
    if isinstance(node, nodes.Name) and node.name in free and node.name in CONTEXT_NAMES:
        return node.name
    return None


def _reference_errors(
    source: str, before: Sequence[str], after: Sequence[str], names: frozenset[str]
) -> list[str]:
    ast = _ENV.parse(source)
    # Jinja counts a name set in one branch of an ``if`` as looked up from the context too
    # (the other branch may not set it): any name the template sets is its own.
    own = {name.name for name in ast.find_all(nodes.Name) if name.ctx in ("store", "param")}
    own |= {macro.name for macro in ast.find_all(nodes.Macro)}
    free = meta.find_undeclared_variables(ast) - own
    sees = "trigger, steps, execution, item and index" if names else "trigger, steps and execution"
    errors = [
        f"unknown name {name!r}: a template sees {sees}"
        + ("" if names or name not in LOOP_NAMES else " (item and index: in a for_each step)")
        for name in sorted(free - CONTEXT_NAMES - names - _ENV.globals.keys())
    ]
    # ``steps.get("a")`` and ``trigger.items()`` call a dict's method: not a lookup.
    called = {id(call.node) for call in ast.find_all(nodes.Call)}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        key = _key(node)
        if key is None or id(node) in called:
            continue
        name = _context_name(node.node, free)  # type: ignore[attr-defined]
        if name == "trigger" and key not in TRIGGER_KEYS:
            errors.append(f"trigger has no {key!r} (it has {', '.join(sorted(TRIGGER_KEYS))})")
        elif name == "execution":
            if key not in EXECUTION_KEYS:
                has = ", ".join(sorted(EXECUTION_KEYS))
                errors.append(f"execution has no {key!r} (it has {has})")
        elif name == "steps" and key not in before:
            if key in after:
                errors.append(f"steps.{key} runs after this step: a step sees those before it")
            else:
                earlier = ", ".join(before) or "none"
                errors.append(f"no step {key!r} before this one (before it: {earlier})")
        elif key not in STEP_KEYS and id(node.node) not in called:  # type: ignore[attr-defined]
            inner = node.node  # type: ignore[attr-defined]
            step = _key(inner)
            if step in before and _context_name(inner.node, free) == "steps":
                errors.append(f"steps.{step} has no {key!r} (it has output and status)")
    return errors


def check_references(
    value: Any,
    *,
    before: Sequence[str],
    after: Sequence[str],
    path: str = "config",
    names: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """Every name a template in ``value`` looks up that no execution can have, as ``(path,
    message)``: a name other than ``trigger`` and ``steps``, a key ``trigger`` does not
    have, a step that is not one of those ``before`` this one (``after``: those after it),
    and a key of a step other than ``output`` and ``status``. Undefined is not an error
    (a payload's optional field may be missing), so one such lookup rendered as nothing in
    every execution (``"Hi {{ steps.notify.outptu }}"`` sent ``"Hi "``), and one with more
    after it failed every execution at that step. Run on templates that compile
    (``check_syntax``)."""
    errors: list[tuple[str, str]] = []
    for where, source in _templates(value, path):
        try:
            _compile(source)  # cached: check_syntax compiled it just before
            found = _reference_errors(source, before, after, names)
        except (TemplateError, RecursionError):  # check_syntax says why
            continue
        errors.extend((where, message) for message in found)
    return errors
