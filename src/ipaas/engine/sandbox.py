"""The Jinja sandbox templates render in, with limits on time and size.

Jinja's ``ImmutableSandboxedEnvironment`` stops attribute escapes and mutation but not a
template that computes for hours or builds a gigabyte string. A render runs inline on the
worker's event loop (a thread hand-off would cost ~10x a typical render), so the limits are
cooperative checks at the places where work can multiply, and size checks before every
operation that can amplify its input:

- **time**: loop iterations (each ``for`` iterable is wrapped at compile time) and calls
  (macros, methods) check the render's deadline; nothing else can repeat work.
- **iterations**: all loops of one render together run at most ``MAX_ITERATIONS`` times.
- **output**: everything emitted, at any depth (set blocks and macro bodies too), counts
  against ``MAX_EMITTED_CHARS``; a loop counts its literal text once per iteration.
- **values**: no string, list or number is built beyond ``MAX_VALUE_CHARS`` (or
  ``MAX_INT_BITS``); sizes are computed *before* ``*``, ``**``, ``%``, ``+``, ``str.format``,
  ``replace``, ``join`` and the padding filters allocate.
- **depth**: macro calls nest at most ``MAX_CALL_DEPTH`` deep.
- **escapes**: an unsafe attribute (``__class__``...) is an error at once, not an empty value.
"""

from __future__ import annotations

import functools
import json
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.runtime import Context, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ipaas.engine.filters import FILTERS as EXTRA_FILTERS

#: ``range()`` inside templates is capped so ``range(10**9)`` cannot hang a worker.
MAX_RANGE = 10_000
#: Loop iterations of one render, all loops together: nested loops multiply.
MAX_ITERATIONS = 1_000_000
#: Characters emitted by one render at every level (the result is capped lower, at 64 KiB).
MAX_EMITTED_CHARS = 1024 * 1024
#: Length of any string or list a template builds.
MAX_VALUE_CHARS = 1024 * 1024
#: Characters (or items) of all strings and lists one render builds, garbage included: bounds
#: the memory a render can take however it spreads it (``map`` over many large items...).
MAX_PRODUCED_CHARS = 32 * 1024 * 1024
#: Size of an integer a template computes (``10**10**10`` would hang in C).
MAX_INT_BITS = 4096
#: Nesting of macro calls (recursion), well under Python's own limit.
MAX_CALL_DEPTH = 64
#: Time budget of one render when the caller sets none (``IPAAS_TEMPLATE_TIMEOUT_S``).
DEFAULT_TIMEOUT_S = 1.0
#: Iterations between two clock reads in a loop (a read costs ~50 ns; an iteration more).
_CLOCK_EVERY = 64

_SEQUENCES = (str, bytes, list, tuple)
#: printf-style conversions: ``%-10.5s``, ``%(name)08d``, ``%*d``.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


class TemplateLimitError(SecurityError):
    """A template went over one of the limits; the message says which."""


@dataclass(slots=True)
class Budget:
    """What is left to one render."""

    deadline: float
    timeout_s: float
    iterations: int = MAX_ITERATIONS
    emitted: int = MAX_EMITTED_CHARS
    produced: int = MAX_PRODUCED_CHARS
    depth: int = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            msg = f"template render took longer than {self.timeout_s:g} s"
            raise TemplateLimitError(msg)

    def check(self) -> None:
        if self.iterations < 0:
            msg = f"template loops ran over {MAX_ITERATIONS} iterations"
            raise TemplateLimitError(msg)
        if self.emitted < 0:
            raise _output_too_long()
        self.tick()


_BUDGET: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


def start_budget(timeout_s: float) -> Budget:
    return Budget(deadline=time.monotonic() + timeout_s, timeout_s=timeout_s)


def _too_long(what: str, size: int) -> TemplateLimitError:
    return TemplateLimitError(f"{what} of {size} characters exceeds {MAX_VALUE_CHARS}")


def check_size(value: Any, what: str = "value") -> Any:
    if isinstance(value, _SEQUENCES):
        if len(value) > MAX_VALUE_CHARS:
            raise _too_long(what, len(value))
        _produce(len(value))
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        msg = f"{what} is a number of {value.bit_length()} bits, over {MAX_INT_BITS}"
        raise TemplateLimitError(msg)
    return value


def _check_count(count: Any, what: str) -> None:
    """A width, count or indent that will be allocated must fit ``MAX_VALUE_CHARS``."""
    if isinstance(count, int) and count > MAX_VALUE_CHARS:
        raise _too_long(what, count)


def _produce(size: int) -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.produced -= size
    if budget.produced < 0:
        msg = f"template built over {MAX_PRODUCED_CHARS} characters of values"
        raise TemplateLimitError(msg)


def _measured(items: Iterable[Any], what: str) -> list[Any]:
    """``items`` as a list, refused as soon as their text would exceed ``MAX_VALUE_CHARS``."""
    if isinstance(items, list | tuple):
        return list(items)
    out: list[Any] = []
    size = 0
    for item in items:
        size += len(item) if isinstance(item, _SEQUENCES) else 1
        if size > MAX_VALUE_CHARS:
            raise _too_long(what, size)
        out.append(item)
    return out


def _emit(size: int) -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.emitted -= size
    if budget.emitted < 0:
        raise _output_too_long()


def _output_too_long() -> TemplateLimitError:
    return TemplateLimitError(f"template output of over {MAX_EMITTED_CHARS} characters")


def guard_iter(iterable: Any, weight: int) -> Any:
    """Every ``for`` loop's iterable (wrapped at compile time): each iteration costs one of
    the render's iterations and ``weight`` characters (the loop body's literal text)."""
    budget = _BUDGET.get()
    if budget is None or isinstance(iterable, Undefined):
        return iterable
    return _Guarded(iterable, budget, weight)


class _Guarded:
    __slots__ = ("_budget", "_iterable", "_weight")

    def __init__(self, iterable: Iterable[Any], budget: Budget, weight: int) -> None:
        self._iterable = iterable
        self._budget = budget
        self._weight = weight

    def __len__(self) -> int:  # ``loop.length`` without consuming the iterable
        return len(self._iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        budget, weight = self._budget, self._weight
        for index, item in enumerate(self._iterable):
            budget.iterations -= 1
            budget.emitted -= weight
            if not index % _CLOCK_EVERY or budget.iterations < 0 or budget.emitted < 0:
                budget.check()
            yield item


class _GuardedCodeGenerator(CodeGenerator):
    """Wraps every ``for`` loop's iterable in ``guard_iter`` before compiling."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            guard = nodes.ImportedName(f"{__name__}.guard_iter")
            weight = nodes.Const(_literal_chars(loop.body))
            loop.iter = nodes.Call(guard, [loop.iter, weight], [], None, None)
            loop.iter.set_lineno(loop.lineno)
        super().visit_Template(node, frame)


def _literal_chars(body: list[nodes.Node]) -> int:
    """Literal text a loop body emits per iteration itself (nested loops count their own)."""
    total = 0
    pending: list[nodes.Node] = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif isinstance(node, nodes.Const) and isinstance(node.value, str):
            total += len(node.value)  # ``{{ "literal" }}`` is folded into the output
        elif not isinstance(node, nodes.For | nodes.Macro | nodes.CallBlock):
            pending.extend(node.iter_child_nodes())
    return total


def _safe_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        msg = f"range of {len(r)} items exceeds the limit of {MAX_RANGE}"
        raise TemplateLimitError(msg)
    return r


_JSON_TEXT = (dict, list, tuple)


def _finalize(value: Any) -> Any:
    """Applied by Jinja to every ``{{ ... }}`` output in text: the value as text, counted
    against the budget. Payloads are JSON, and so is their text here: an object or a list
    is written as JSON, a boolean as ``true``/``false``, and ``null`` as nothing (as a
    missing field is). Python's own ``str`` wrote ``{'a': None, 'ok': True}`` into a Slack
    message and ``n=None`` into a URL."""
    # Identity and a tuple of types: ``isinstance`` with ``dict | list | tuple`` cost 300 ns.
    if isinstance(value, str):
        text = value
    elif value is None:
        text = ""
    elif value is True:
        text = "true"
    elif value is False:
        text = "false"
    elif isinstance(value, _JSON_TEXT):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    _emit(len(text))
    return text


# -- operators --------------------------------------------------------------------------------
def _mul(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, _SEQUENCES) and isinstance(count, int):
            if len(seq) * max(count, 0) > MAX_VALUE_CHARS:
                raise _too_long("repetition", len(seq) * count)
            return seq * count
    if isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            msg = f"product is a number of about {bits} bits, over {MAX_INT_BITS}"
            raise TemplateLimitError(msg)
    return left * right


def _pow(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        bits = (abs(left).bit_length() - 1) * right
        if bits > MAX_INT_BITS:
            msg = f"power is a number of about {bits} bits, over {MAX_INT_BITS}"
            raise TemplateLimitError(msg)
    return left**right


def _mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_percent(left)
    return check_size(left % right, "formatted text")


def _check_percent(fmt: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*":
                msg = "a '*' width in % formatting is not allowed in templates"
                raise TemplateLimitError(msg)
            if number:
                _check_count(int(number), "% format width")


def _add(left: Any, right: Any) -> Any:
    if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        size = len(left) + len(right)
        if size > MAX_VALUE_CHARS:
            raise _too_long("concatenation", size)
    return left + right


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": _mul,
    "**": _pow,
    "%": _mod,
    "+": _add,
}


# -- calls, methods and filters ---------------------------------------------------------------
def _check_format_spec(fmt: str) -> None:
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None or not spec:
            continue
        if "{" in spec:
            msg = "nested fields in a format spec are not allowed in templates"
            raise TemplateLimitError(msg)
        for number in _DIGITS.findall(spec):
            _check_count(int(number), "format width")


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Size a str/list method's result before it is built; the arguments to call it with
    (an iterable to join is materialised to be measured)."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, _SEQUENCES):
        return args
    for arg in (*args, *kwargs.values()):
        _check_count(arg, f"{getattr(obj, '__name__', 'method')}() argument")
    name = getattr(obj, "__name__", "")
    if name == "replace" and isinstance(owner, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        hits = owner.count(old) if old else len(owner) + 1
        _check_result(len(owner) + hits * (len(new) - len(old)), "replace()")
    elif name == "join" and isinstance(owner, str) and args:
        items = _measured(args[0], "join() input")
        lengths = sum(len(i) for i in items if isinstance(i, str))
        _check_result(lengths + len(owner) * max(len(items) - 1, 0), "join()")
        return (items, *args[1:])
    elif name == "expandtabs" and isinstance(owner, str):
        tab = int(args[0]) if args else 8
        _check_result(len(owner) + owner.count("\t") * tab, "expandtabs()")
    return args


def _check_result(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        raise _too_long(f"result of {what}", size)


#: Filters whose integer arguments are sizes to allocate (widths, counts, indents).
_SIZED_FILTERS = frozenset({"center", "indent", "batch", "slice", "wordwrap", "tojson", "format"})


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Filters that take the context, eval context or environment get it first.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    what = f"result of the {name} filter"
    if name not in _SIZED_FILTERS | {"join", "replace"}:

        @functools.wraps(func)
        def sized(*args: Any, **kwargs: Any) -> Any:
            return check_size(func(*args, **kwargs), what)

        return sized

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if name == "join" and len(args) > skip and not isinstance(args[skip], list | tuple):
            items = _measured(args[skip], "join input")
            args = (*args[:skip], items, *args[skip + 1 :])
        values = [*args[skip:], *kwargs.values()]
        if name in _SIZED_FILTERS:
            for arg in values[1:]:
                _check_count(arg, f"{name} argument")
        if name == "tojson" and any(isinstance(v, int) and v > 16 for v in values[1:]):
            raise TemplateLimitError("tojson indent over 16")
        if name == "indent":
            _check_indent(values)
        elif name in ("join", "replace", "format"):
            _precheck_text_filter(name, values)
        return check_size(func(*args, **kwargs), what)

    return guarded


def _check_indent(values: list[Any]) -> None:
    text = str(values[0]) if values else ""
    width = values[1] if len(values) > 1 else 4
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
    _check_result(len(text) + (text.count("\n") + 1) * pad, "indent")


def _precheck_text_filter(name: str, values: list[Any]) -> None:
    if name == "format" and values and isinstance(values[0], str):
        _check_percent(values[0])
    elif name == "replace" and len(values) >= 3:
        text, old, new = str(values[0]), str(values[1]), str(values[2])
        hits = text.count(old) if old else len(text) + 1
        _check_result(len(text) + hits * (len(new) - len(old)), "replace")
    elif name == "join" and values:
        items = values[0] if isinstance(values[0], _SEQUENCES) else None
        if items is not None:
            sep = values[1] if len(values) > 1 and isinstance(values[1], str) else ""
            lengths = sum(len(str(i)) for i in items)
            _check_result(lengths + len(sep) * max(len(items) - 1, 0), "join")


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the limits above. ``render`` callers set the budget."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset(_BINOPS)

    def __init__(self) -> None:
        super().__init__(autoescape=False, undefined=Undefined, finalize=_finalize)
        self.globals = {"range": _safe_range}
        filters = {**DEFAULT_FILTERS, **EXTRA_FILTERS}
        self.filters = {name: _guard_filter(name, f) for name, f in filters.items()}

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Payload keys win over dict methods: ``trigger.body.items`` is the "items" field.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        msg = f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
        raise SecurityError(msg)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return _BINOPS[operator](left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_format_spec(value.__self__)

        def limited(*args: Any, **kwargs: Any) -> str:
            return str(check_size(wrapped(*args, **kwargs), "formatted text"))

        return limited

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.tick()
        args = _check_method(__obj, args, kwargs)
        if not isinstance(__obj, Macro) or budget is None:
            return check_size(super().call(__context, __obj, *args, **kwargs), "call result")
        if budget.depth >= MAX_CALL_DEPTH:
            msg = f"macro calls nested over {MAX_CALL_DEPTH} deep"
            raise TemplateLimitError(msg)
        budget.depth += 1
        try:
            return check_size(super().call(__context, __obj, *args, **kwargs), "macro output")
        finally:
            budget.depth -= 1


def run_with_budget(budget: Budget, render: Callable[[], Any]) -> Any:
    token = _BUDGET.set(budget)
    try:
        return render()
    finally:
        _BUDGET.reset(token)
