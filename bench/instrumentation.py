"""Per-webhook cost of the intake's instrumentation (metrics always; tracing when off).

``python -m bench.instrumentation``: what ``receive_webhook`` adds to one accepted webhook,
measured in isolation (two ``perf_counter`` calls, a counter increment, a histogram
observation, and the tracing-off checks), in microseconds.
"""

from __future__ import annotations

import time
import timeit

from ipaas.observability import metrics, tracing


def _accepted() -> None:
    started = time.perf_counter()
    with tracing.server_span("POST /api/webhooks/{workflow_id}", {}) as span:
        tracing.current_traceparent()
        if span is not None:
            span.set_attribute("x", 1)
    metrics.webhook_answered(started)


def _bare() -> None:
    started = time.perf_counter()
    del started


def main(number: int = 200_000) -> dict[str, float]:
    assert not tracing.enabled()
    bare = min(timeit.repeat(_bare, number=number, repeat=5)) / number
    full = min(timeit.repeat(_accepted, number=number, repeat=5)) / number
    result = {"instrumentation_us_per_webhook": round((full - bare) * 1e6, 3)}
    print(result)
    return result


if __name__ == "__main__":
    main()
