"""Item 11: SIGKILL the server while accepted executions are queued or running, start it
again on the same database: every one succeeds and the Slack stand-in holds every message.
Duplicates are counted and reported; only a step in flight at the kill may repeat."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.process.conftest import (
    TERMINAL,
    Api,
    ServerProcess,
    Standin,
    fire_concurrently,
    wait_for,
)

pytestmark = pytest.mark.process

ACCEPTED = 500
WORKERS = 10
#: Slow enough that most executions are still queued or running when the kill comes.
DELIVERY_DELAY_S = 0.05
#: Deliveries seen before the kill: the crash lands mid-run, not before it started.
KILL_AFTER = 60
#: The kill comes while a delivery that arrived at most this long ago is held by the
#: stand-in, so its execution is certainly still running: its finish waits for the answer,
#: ``DELIVERY_DELAY_S`` after arrival. (Killing on the message count alone landed once, in
#: CI, between a batch's finishes and the next claims, with nothing running.)
KILL_WITHIN_S = DELIVERY_DELAY_S / 2


def _mid_delivery(stats: dict[str, Any]) -> bool:
    youngest = stats["in_flight_youngest_s"]
    return (
        stats["slack_messages"] >= KILL_AFTER and youngest is not None and youngest < KILL_WITHIN_S
    )


def test_sigkill_mid_run_loses_nothing(
    make_server: Callable[..., ServerProcess],
    api_for: Callable[[ServerProcess], Api],
    standin: Standin,
) -> None:
    server = make_server(
        IPAAS_WORKERS=str(WORKERS), IPAAS_LEASE_S="2", IPAAS_REAPER_INTERVAL_S="0.5"
    ).start()
    api = api_for(server)
    workflow_id = api.slack_workflow(standin.slack_hook(), "durable {{ trigger.body.n }}")
    standin.add_fault("/services/", delay_s=DELIVERY_DELAY_S, count=None)

    results = fire_concurrently(server, workflow_id, [{"n": n} for n in range(ACCEPTED)])
    statuses = Counter(r.status for r in results)
    assert statuses == {202: ACCEPTED}, statuses
    execution_ids = {str(r.json()["execution_id"]) for r in results}  # type: ignore[index]

    wait_for(
        lambda: _mid_delivery(standin.stats()),
        timeout_s=30,
        what=f"{KILL_AFTER} deliveries before the kill, and one just begun",
        interval_s=0.005,
    )
    server.kill()

    at_kill = Counter(server.statuses().values())
    print(f"durability: at SIGKILL {dict(at_kill)}")
    assert sum(at_kill.values()) == ACCEPTED
    unfinished = at_kill["queued"] + at_kill["running"]
    assert unfinished > 0, at_kill
    assert at_kill["running"] > 0, at_kill

    server.start()
    executions = wait_for(
        lambda: api.executions(workflow_id=workflow_id),
        until=lambda items: len(items) == ACCEPTED and all(e["status"] in TERMINAL for e in items),
        timeout_s=60,
        what="every execution terminal after restart",
        interval_s=0.25,
    )
    assert {e["id"] for e in executions} == execution_ids
    final = Counter(e["status"] for e in executions)
    assert final == {"succeeded": ACCEPTED}, final

    stats = standin.stats()
    texts = Counter(r["body"]["text"] for r in standin.requests(kind="slack_webhook"))
    assert set(texts) == {f"durable {n}" for n in range(ACCEPTED)}
    duplicates = stats["slack_messages"] - stats["slack_distinct_texts"]
    print(f"durability: duplicates={duplicates} {stats['slack_duplicates']}")
    assert duplicates == sum(texts.values()) - len(texts)
    # Only a step whose own call was in flight at the kill can repeat: one per worker slot.
    assert duplicates <= WORKERS
    server.assert_no_errors()


LOOPS = 50
ITEMS = 20


def test_sigkill_mid_loop_resumes_at_the_first_item_not_done(
    make_server: Callable[..., ServerProcess],
    api_for: Callable[[ServerProcess], Api],
    standin: Standin,
) -> None:
    """The same crash with ``for_each`` steps (20 messages per webhook): after the restart
    each loop resumes at its first item not done, so every message arrives and only an item
    whose call was in flight at the kill can repeat, as for a plain step."""
    server = make_server(
        IPAAS_WORKERS=str(WORKERS), IPAAS_LEASE_S="2", IPAAS_REAPER_INTERVAL_S="0.5"
    ).start()
    api = api_for(server)
    credential = api.credential("slack", {"webhook_url": standin.slack_hook()})
    workflow_id = api.workflow(
        [
            {
                "id": "each",
                "type": "slack_message",
                "credential_id": credential,
                "for_each": "{{ trigger.body.items }}",
                "config": {"text": "loop {{ trigger.body.n }} item {{ item }}"},
            }
        ]
    )
    standin.add_fault("/services/", delay_s=DELIVERY_DELAY_S / 5, count=None)
    bodies = [{"n": n, "items": list(range(ITEMS))} for n in range(LOOPS)]
    results = fire_concurrently(server, workflow_id, bodies)
    assert Counter(r.status for r in results) == {202: LOOPS}

    wait_for(
        lambda: standin.stats()["slack_messages"] >= LOOPS * ITEMS // 3,
        timeout_s=30,
        what="a third of the messages before the kill",
        interval_s=0.005,
    )
    server.kill()
    at_kill = Counter(server.statuses().values())
    print(f"durability, loops: at SIGKILL {dict(at_kill)}")
    assert at_kill["queued"] + at_kill["running"] > 0, at_kill

    server.start()
    executions = wait_for(
        lambda: api.executions(workflow_id=workflow_id),
        until=lambda items: len(items) == LOOPS and all(e["status"] in TERMINAL for e in items),
        timeout_s=60,
        what="every loop terminal after restart",
        interval_s=0.25,
    )
    assert Counter(e["status"] for e in executions) == {"succeeded": LOOPS}
    texts = Counter(r["body"]["text"] for r in standin.requests(kind="slack_webhook"))
    assert set(texts) == {f"loop {n} item {i}" for n in range(LOOPS) for i in range(ITEMS)}
    duplicates = sum(texts.values()) - len(texts)
    print(f"durability, loops: duplicates={duplicates}")
    assert duplicates <= WORKERS
    server.assert_no_errors()


WAITS = 20
WAIT_S = 3.0


def test_sigkill_during_a_delay_neither_repeats_nor_shortens_it(
    make_server: Callable[..., ServerProcess],
    api_for: Callable[[ServerProcess], Api],
    standin: Standin,
) -> None:
    """Every execution waits in a delay step when the server is killed: after the restart
    each goes on once its wait is over, not before, and the message is sent once."""
    server = make_server(IPAAS_LEASE_S="2", IPAAS_REAPER_INTERVAL_S="0.5").start()
    api = api_for(server)
    credential = api.credential("slack", {"webhook_url": standin.slack_hook()})
    workflow_id = api.workflow(
        [
            {"id": "wait", "type": "delay", "config": {"seconds": WAIT_S}},
            {
                "id": "post",
                "type": "slack_message",
                "credential_id": credential,
                "config": {"text": "after the wait {{ trigger.body.n }}"},
            },
        ]
    )
    results = fire_concurrently(server, workflow_id, [{"n": n} for n in range(WAITS)])
    assert Counter(r.status for r in results) == {202: WAITS}
    wait_for(
        lambda: api.executions(workflow_id=workflow_id),
        until=lambda items: all(e["status"] == "queued" and e["next_attempt_at"] for e in items),
        timeout_s=WAIT_S,
        what="every execution waiting in its delay",
        interval_s=0.05,
    )
    server.kill()
    assert standin.stats()["slack_messages"] == 0

    server.start()
    executions = wait_for(
        lambda: api.executions(workflow_id=workflow_id),
        until=lambda items: all(e["status"] in TERMINAL for e in items),
        timeout_s=WAIT_S + 30,
        what="every execution terminal after restart",
        interval_s=0.25,
    )
    assert Counter(e["status"] for e in executions) == {"succeeded": WAITS}
    for item in executions:
        detail = api.execution(item["id"])
        wait, post = detail["steps"]
        assert (wait["step_id"], post["step_id"]) == ("wait", "post")
        until = datetime.fromisoformat(wait["output"]["until"])
        assert datetime.fromisoformat(post["started_at"]) >= until
    texts = Counter(r["body"]["text"] for r in standin.requests(kind="slack_webhook"))
    assert texts == Counter({f"after the wait {n}": 1 for n in range(WAITS)})
    server.assert_no_errors()
