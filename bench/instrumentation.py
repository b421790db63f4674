"""Per-webhook cost of the intake's instrumentation, in microseconds.

``python -m bench.instrumentation``: what ``receive_webhook`` adds to one accepted webhook,
measured in isolation: two ``perf_counter`` calls, a counter increment, a histogram
observation and the tracing hooks, first with tracing off, then on (the intake's two spans
and the stored ``traceparent``, exported to a discarding exporter: the SDK's own cost,
without the OTLP encoding that a batch exporter does later on its thread).
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ipaas.config import Settings
from ipaas.observability import metrics, tracing


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _accepted() -> None:
    started = time.perf_counter()
    with tracing.server_span("POST /api/webhooks/{workflow_id}", {}) as span:
        with tracing.span("enqueue"):
            tracing.current_traceparent()
        if span is not None:
            span.set_attribute("http.response.status_code", 202)
    metrics.webhook_answered(started)


def _bare() -> None:
    started = time.perf_counter()
    del started


def main(number: int = 200_000) -> dict[str, float]:
    assert not tracing.enabled()
    bare = min(timeit.repeat(_bare, number=number, repeat=5)) / number
    off = min(timeit.repeat(_accepted, number=number, repeat=5)) / number
    tracing.configure_tracing(Settings(), exporter=_Discard())
    on = min(timeit.repeat(_accepted, number=number // 10, repeat=5)) / (number // 10)
    tracing.shutdown_tracing()
    result = {
        "tracing_off_us_per_webhook": round((off - bare) * 1e6, 2),
        "tracing_on_us_per_webhook": round((on - bare) * 1e6, 2),
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
