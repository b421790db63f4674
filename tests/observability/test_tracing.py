from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ipaas.config import Settings
from ipaas.engine.worker import Worker
from ipaas.observability import tracing
from ipaas.observability.logging import add_trace_ids
from tests.engine.test_worker import Api, api, worker

__all__ = ["api", "worker"]  # the shared fixtures, re-used here

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    """Tracing on, exported to memory; requested before the app so its logs get trace ids."""
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(settings, exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [found] = [s for s in spans if s.name == name]
    return found


def _parent_of(span: ReadableSpan) -> str | None:
    return _hex(span.parent.span_id, 16) if span.parent is not None else None


def _id(span: ReadableSpan) -> str:
    assert span.context is not None
    return _hex(span.context.span_id, 16)


async def test_one_trace_from_webhook_to_outbound_call(
    spans: InMemorySpanExporter, api: Api, worker: Worker
) -> None:
    cred = await api.slack()
    wf = await api.workflow(
        [{"id": "notify", "type": "slack_message", "credential_id": cred, "config": {"text": "x"}}]
    )
    r = await api.client.post(
        f"/api/webhooks/{wf}",
        json={"n": 1},
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    assert r.status_code == 202
    # The worker runs outside the request: only the stored trace context links them.
    await worker.run_until_empty()
    finished = list(spans.get_finished_spans())
    server = _one(finished, "POST /api/webhooks/{workflow_id}")
    enqueue = _one(finished, "enqueue")
    claim = _one(finished, "claim")
    execution = _one(finished, "execution")
    step = _one(finished, "step")
    call = _one(finished, "POST")
    assert server.kind is SpanKind.SERVER
    assert call.kind is SpanKind.CLIENT
    assert _parent_of(server) == CALLER_SPAN
    assert _parent_of(enqueue) == _id(server)
    assert _parent_of(claim) == _id(enqueue)
    assert _parent_of(execution) == _id(enqueue)
    assert _parent_of(step) == _id(execution)
    assert _parent_of(call) == _id(step)
    for s in (server, enqueue, claim, execution, step, call):
        assert s.context is not None
        assert _hex(s.context.trace_id, 32) == CALLER_TRACE
    assert execution.attributes is not None
    assert execution.attributes["ipaas.status"] == "succeeded"
    assert call.attributes is not None
    assert call.attributes["http.response.status_code"] == 200
    # No URL (a Slack webhook's path is its secret) in any span.
    assert not any("services" in str(v) for s in finished for v in (s.attributes or {}).values())
    # Of this trace: the stand-in is the session's, and a delivery of an earlier test's
    # worker may land after its reset (seen once, under load).
    sent = [q for q in await api.received() if q["path"].startswith("/services/")]
    ours = [q for q in sent if CALLER_TRACE in str(q["headers"])]
    [received] = ours
    headers = {k.lower(): v for k, v in received["headers"].items()}
    assert headers["traceparent"] == f"00-{CALLER_TRACE}-{_id(call)}-01"


async def test_a_webhook_without_traceparent_starts_a_trace(
    spans: InMemorySpanExporter, api: Api, worker: Worker
) -> None:
    wf = await api.workflow(
        [{"id": "s", "type": "http_request", "config": {"url": f"{api.standin_url}/echo"}}]
    )
    await api.fire(wf, {})
    await worker.run_until_empty()
    finished = list(spans.get_finished_spans())
    assert _one(finished, "POST /api/webhooks/{workflow_id}").parent is None
    assert len({s.context.trace_id for s in finished if s.context is not None}) == 1


def test_log_lines_carry_trace_ids(spans: InMemorySpanExporter) -> None:
    with tracing.span("work") as span:
        assert span is not None
        event: dict[str, Any] = add_trace_ids(None, "info", {"event": "x"})
    context = span.get_span_context()
    assert event["trace_id"] == _hex(context.trace_id, 32)
    assert event["span_id"] == _hex(context.span_id, 16)
    assert add_trace_ids(None, "info", {"event": "outside"}) == {"event": "outside"}


def test_off_by_default_without_importing_the_sdk(tmp_path: Any) -> None:
    code = (
        "import sys\n"
        "from ipaas.api.app import create_app\n"
        "from ipaas.config import Settings\n"
        "from ipaas.observability import tracing\n"
        f"create_app(Settings(database_url='memory://', data_dir={str(tmp_path)!r}))\n"
        "assert not tracing.enabled()\n"
        "assert tracing.current_traceparent() is None\n"
        # redis-py imports opentelemetry.sdk's metrics on its own; the trace SDK and the
        # exporters are ours, and must stay out when tracing is off.
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace',\n"
        "          'opentelemetry.exporter'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_exporter_is_chosen_by_the_standard_variable(tmp_path: Any) -> None:
    code = (
        "from ipaas.config import Settings\n"
        "from ipaas.observability import tracing\n"
        "tracing.configure_tracing(Settings())\n"
        "assert tracing.enabled()\n"
        "with tracing.span('x'):\n"
        "    assert tracing.current_traceparent().startswith('00-')\n"
        "tracing.shutdown_tracing()\n"
    )
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "IPAAS_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, timeout=60, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "x"' in done.stdout
