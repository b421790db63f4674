"""Issue 4, item 3: tenant A floods a slow endpoint while tenant B sends 50 webhooks; all of
B's finish and B's webhook-to-delivery p99 stays within 3x its p99 without the flood.

The same scenario as ``make bench`` (``bench/fairness.py``) with a smaller flood: 1,500 of
A's webhooks at a 0.5 s endpoint keep the default cap (8 of 10 slots) busy for over a minute,
far longer than B's probes take, so the flood is as deep as it ever gets for B."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from bench import fairness

from tests.process.conftest import ServerProcess, Standin

pytestmark = pytest.mark.process

FLOOD = 1_500
#: Each of A's deliveries is held this long at the stand-in.
SLOW_S = 0.5


def test_flooding_tenant_does_not_starve_another(
    make_server: Callable[..., ServerProcess], standin: Standin
) -> None:
    server = make_server(IPAAS_WORKERS="10", IPAAS_LOG_LEVEL="warning").start()
    result = fairness.run(server.url, standin.url, flood=FLOOD, probes=50, slow_s=SLOW_S)
    print(f"\n{result.report()}")
    assert result.flood_accepted == FLOOD
    assert (result.baseline.succeeded, result.flooded.succeeded) == (50, 50)
    assert result.flooded.delivered == 50
    # Without fairness B's executions would wait behind A's backlog: FLOOD slow calls over
    # 10 slots, minutes. B never waits for even one of A's slow calls to end (with caps off,
    # IPAAS_TENANT_MAX_CONCURRENCY=0, this fails: p99 ~540 ms, 24x).
    assert result.flooded.p99_ms < SLOW_S * 1000, result.report()
    # The 3x ratio is measured by ``make bench-fairness`` (docs/benchmarks.md): p99s of 50
    # samples on a shared 2-core machine are too noisy for a test to assert it.
    print(f"B p99 ratio {result.ratio:.2f}x (target {fairness.TARGET_RATIO}x)")
    server.assert_no_errors()
