"""structlog: JSON or console lines carrying request, tenant and execution ids; secrets redacted."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import sys
import threading
import time
from typing import Any, TextIO

import orjson
import structlog

from ipaas.config import Environment, LogFormat, Settings
from ipaas.kit.secrets import MASK, SENSITIVE_HEADERS, SENSITIVE_KEYS
from ipaas.observability import tracing

_SENSITIVE = SENSITIVE_KEYS | SENSITIVE_HEADERS | {"secret", "webhook_url", "secret_ciphertext"}


def redact_sensitive(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Mask values of keys that name a secret, whatever logged them."""
    for key in list(event):
        if key.lower() in _SENSITIVE:
            event[key] = MASK
    return event


def add_trace_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """``trace_id`` and ``span_id`` of the current span (installed only with tracing on)."""
    ids = tracing.current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


#: The last whole second ``add_timestamp`` formatted, and its text.
_second: tuple[int, str] = (-1, "")


def add_timestamp(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """``timestamp``: UTC, ISO 8601 with microseconds and ``Z`` (as structlog's
    ``TimeStamper(fmt="iso", utc=True)``), formatting the date and time once a second.

    structlog's stamper builds a ``datetime`` and its ``isoformat`` for every line: a
    quarter of the access log's cost per webhook (docs/benchmarks.md)."""
    global _second  # a tuple, replaced whole: threads that race both write a right one
    now = time.time()
    whole = int(now)
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    event["timestamp"] = f"{second[1]}.{int((now - whole) * 1_000_000):06d}Z"
    return event


def _dumps(event: dict[str, Any], **kw: Any) -> str:
    """JSON for ``JSONRenderer`` by orjson: ~4x cheaper per line than ``json.dumps``, which
    was half the access log's cost per webhook. Non-string keys are written as strings;
    what orjson cannot write goes through structlog's fallback (``__structlog__``, repr),
    and a line orjson refuses whole (an integer beyond 64 bits) through ``json.dumps``."""
    default = kw.get("default")
    try:
        return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(event, default=default)


#: Info lines buffered beyond this many characters are written at once.
LOG_BUFFER_CHARS = 64 * 1024


class LineBuffer:
    """A text stream that batches writes: ``write`` keeps the text, a background thread
    writes what was kept every ``flush_s``, and ``flush`` writes it at once.

    One ``write`` system call per line cost a busy server about a tenth of its event
    loop: each released the GIL, and taking it back waited on the other threads
    (docs/benchmarks.md). Lines are written in the order they were given.
    """

    def __init__(self, file: TextIO, flush_s: float) -> None:
        self._file = file
        self._flush_s = flush_s
        self._kept: list[str] = []
        self._size = 0
        self._lock = threading.Lock()  # guards _kept and _size
        self._write_lock = threading.Lock()  # one batch at a time, in order
        self._closed = threading.Event()
        #: Lines lost to a stream that failed (``flush``).
        self.dropped = 0
        if flush_s > 0:
            thread = threading.Thread(target=self._flush_every, name="ipaas-log-flush")
            thread.daemon = True
            thread.start()

    @property
    def file(self) -> TextIO:
        return self._file

    @property
    def flush_s(self) -> float:
        return self._flush_s

    def write(self, text: str) -> int:
        with self._lock:
            self._kept.append(text)
            self._size += len(text)
            due = self._flush_s <= 0 or self._size >= LOG_BUFFER_CHARS
        if due:
            self.flush()
        return len(text)

    def flush(self) -> None:
        """Write what is kept. A stream that fails (closed, or a broken pipe: whatever read
        the logs has died) loses those lines, as the standard library's handlers do
        (``Handler.handleError``): a log call never fails the work that made it, a
        webhook's intake or an execution's finish."""
        with self._write_lock:
            with self._lock:
                kept, self._kept, self._size = self._kept, [], 0
            if kept:
                try:
                    self._file.write("".join(kept))
                    self._file.flush()
                except (OSError, ValueError):  # ValueError: "I/O operation on closed file"
                    self.dropped += len(kept)

    def close(self) -> None:
        """Write what is kept and stop the background thread."""
        self._closed.set()
        self.flush()

    def _flush_every(self) -> None:
        while not self._closed.wait(self._flush_s):
            with contextlib.suppress(Exception):  # nothing may end this thread
                self.flush()


_buffer: LineBuffer | None = None


def _line_buffer(file: TextIO, flush_s: float) -> LineBuffer:
    """The process's one ``LineBuffer`` (configuring again replaces it when the stream or
    the interval changed, writing out the old one first)."""
    global _buffer  # one buffer per process, like structlog's configuration
    if _buffer is not None and _buffer.file is file and _buffer.flush_s == flush_s:
        return _buffer
    if _buffer is not None:
        with contextlib.suppress(Exception):  # e.g. a test's captured stream, closed since
            _buffer.close()
    _buffer = LineBuffer(file, flush_s)
    return _buffer


@atexit.register
def _flush_at_exit() -> None:
    if _buffer is not None:
        with contextlib.suppress(Exception):
            _buffer.close()


class BufferedLogger:
    """structlog's logger over a ``LineBuffer``: debug and info lines are buffered;
    warnings and worse are written at once (and everything buffered before them)."""

    def __init__(self, buffer: LineBuffer) -> None:
        self._buffer = buffer

    def msg(self, message: str) -> None:
        self._buffer.write(message + "\n")

    def msg_now(self, message: str) -> None:
        self._buffer.write(message + "\n")
        self._buffer.flush()

    log = debug = info = msg
    warn = warning = err = error = critical = fatal = exception = failure = msg_now


def configure_logging(settings: Settings) -> None:
    """Call after ``configure_tracing``: trace ids join log lines only when it is on."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if settings.log_format is LogFormat.console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_timestamp,
        redact_sensitive,
    ]
    if tracing.enabled():
        shared.append(add_trace_ids)
    buffer = _line_buffer(sys.stderr, settings.log_flush_s)
    logger = BufferedLogger(buffer)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: logger,
        # Caching skips rebuilding a logger on every call (~15 % more intake requests/s
        # here) but freezes the configuration, so tests, which configure per app, do not.
        cache_logger_on_first_use=settings.env is not Environment.test,
    )
    # The standard library's records (warnings and worse) go through the same buffer, so
    # they are written in order with the rest, and at once.
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.WARNING) if level < logging.WARNING else level)
