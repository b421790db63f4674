"""OpenTelemetry tracing, off unless ``OTEL_TRACES_EXPORTER`` names an exporter.

One trace per execution: the webhook's server span, its ``enqueue`` child (whose context is
stored with the execution as a W3C ``traceparent``), then in whichever process claims it a
``claim`` and an ``execution`` span, a ``step`` span per step, and a client span per
outbound call, which sends ``traceparent`` on.

Off (the default), nothing here imports the SDK: every helper is one global check and
returns a shared no-op context manager. Spans are made here by hand rather than by the
contrib instrumentations: the intake is a plain Starlette route, outbound calls skip
``httpx.AsyncClient.send`` (the httpx instrumentation would miss them), and those
instrumentations record full URLs, which for Slack and Discord webhooks are secrets.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ipaas.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_NOOP: AbstractContextManager[None] = contextlib.nullcontext()

#: The attribute names of our own spans (OpenTelemetry's for HTTP).
EXECUTION_ID = "ipaas.execution_id"


def enabled() -> bool:
    return _tracer is not None


def configure_tracing(settings: Settings, *, exporter: SpanExporter | None = None) -> None:
    """Turn tracing on when the settings (``OTEL_*``) ask for it, once per process.

    Args:
        exporter: export to this instead, synchronously (tests' in-memory exporter).
    """
    global _tracer, _provider
    if _provider is not None:
        return
    name = (settings.otel_traces_exporter or "none").strip().lower()
    if exporter is None and (settings.otel_sdk_disabled or name == "none"):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG) and the resource attributes from
    # OTEL_RESOURCE_ATTRIBUTES, read by the SDK itself.
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    _provider = provider
    _tracer = provider.get_tracer("ipaas")


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        # Endpoint, headers and timeout from OTEL_EXPORTER_OTLP_(TRACES_)* (HTTP/protobuf).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    msg = f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none"
    raise ValueError(msg)


def flush_tracing() -> None:
    """Export the spans still buffered (a process stopping)."""
    if _provider is not None:
        _provider.force_flush()


def shutdown_tracing() -> None:
    """Flush pending spans and turn tracing off (process exit; tests)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def server_span(name: str, headers: Mapping[str, str]) -> AbstractContextManager[Span | None]:
    """A server span that continues the caller's trace when it sent ``traceparent``."""
    if _tracer is None:
        return _NOOP
    from opentelemetry.trace import SpanKind

    parent = _propagator().extract(headers)
    return _tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER)


def span(name: str, **attributes: Any) -> AbstractContextManager[Span | None]:
    """A child of the current span."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=attributes)


def continued(
    name: str, traceparent: str | None, **attributes: Any
) -> AbstractContextManager[Span | None]:
    """A span whose parent is a stored ``traceparent`` (a new trace when it is ``None``)."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(
        name, context=_context_of(traceparent), attributes=attributes
    )


def record(
    name: str, traceparent: str | None, start_ns: int, end_ns: int, **attributes: Any
) -> None:
    """A finished span, afterwards (a claim: the execution, and its trace, is known only
    once it is claimed)."""
    if _tracer is None:
        return
    done = _tracer.start_span(
        name, context=_context_of(traceparent), attributes=attributes, start_time=start_ns
    )
    done.end(end_time=end_ns)


def client_span(method: str, host: str, port: int | None) -> AbstractContextManager[Span | None]:
    """An outbound HTTP call's span. Only the method and server are recorded: URLs of
    chat webhooks carry their secret in the path."""
    if _tracer is None:
        return _NOOP
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {"http.request.method": method, "server.address": host}
    if port is not None:
        attributes["server.port"] = port
    return _tracer.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes)


def current_traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` (to store, or to send on)."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _inject(carrier)
    return carrier.get("traceparent")


def inject(headers: Any) -> None:
    """Add ``traceparent`` for the current span to outgoing ``headers``."""
    if _tracer is not None:
        _inject(headers)


def _inject(carrier: Any) -> None:
    _propagator().inject(carrier)


@functools.cache
def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def _context_of(traceparent: str | None) -> Any:
    if traceparent is None:
        from opentelemetry.context import Context

        return Context()  # a new trace, not a child of whatever is current
    return _propagator().extract({"traceparent": traceparent})


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the current span, for log lines."""
    if _tracer is None:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
