"""The fairness scenario (issue 4, item 3), shared by ``make bench`` and ``tests/process``.

Against a running server and the stand-in: tenant B sends ``probes`` webhooks, paced, alone
(the baseline); then tenant A floods ``flood`` webhooks at a slow endpoint (every delivery
held ``slow_s`` at the stand-in) and B sends its ``probes`` again, starting with the flood.
B's webhook-to-delivery latency (the body carries its send time, rendered into the Slack
text; the stand-in records the arrival) is compared with and without the flood. A's
backlog is not waited for: it takes ``flood * slow_s / cap`` seconds by design.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import httpx

from bench import loadgen

TARGET_RATIO = 3.0
SLOW_PATH = "/services/T000/B000/FLOOD"
FAST_PATH = "/services/T000/B000/PROBE"


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    delivered: int
    succeeded: int
    #: Each probe's latency in ms, in the order they were sent.
    samples: list[float]

    def __str__(self) -> str:
        return (
            f"p50 {self.p50_ms:6.1f} ms p99 {self.p99_ms:6.1f} ms "
            f"({self.succeeded}/{self.delivered} succeeded)"
        )


@dataclass
class FairnessResult:
    baseline: Latency
    flooded: Latency
    flood_accepted: int
    flood_delivered: int

    @property
    def ratio(self) -> float:
        return self.flooded.p99_ms / max(self.baseline.p99_ms, 1e-9)

    def report(self) -> str:
        ok = "ok" if self.ratio <= TARGET_RATIO else "MISSED"
        return (
            f"B without flood: {self.baseline}\n"
            f"B with flood:    {self.flooded}\n"
            f"A's flood: {self.flood_accepted} accepted, {self.flood_delivered} delivered so far\n"
            f"p99 ratio {self.ratio:.2f}x (target <= {TARGET_RATIO:.0f}x) {ok}"
        )


class Tenant:
    def __init__(self, api: httpx.Client, email: str, hook_url: str) -> None:
        signup = api.post(
            "/api/auth/signup",
            json={"email": email, "password": "fairness password", "tenant_name": email},
        )
        signup.raise_for_status()
        self.api = api
        self.headers = {"Authorization": f"Bearer {signup.json()['access_token']}"}
        credential = api.post(
            "/api/credentials",
            headers=self.headers,
            json={"name": "slack", "type": "slack", "secret": {"webhook_url": hook_url}},
        )
        credential.raise_for_status()
        workflow = api.post(
            "/api/workflows",
            headers=self.headers,
            json={
                "name": "fairness",
                "trigger": {"type": "webhook"},
                "steps": [
                    {
                        "id": "notify",
                        "type": "slack_message",
                        "credential_id": credential.json()["id"],
                        "config": {"text": "{{ trigger.body.run }} {{ trigger.body.t }}"},
                    }
                ],
            },
        )
        workflow.raise_for_status()
        self.workflow_id = str(workflow.json()["id"])

    def statuses(self, ids: list[str]) -> list[str]:
        return [
            self.api.get(f"/api/executions/{i}", headers=self.headers).json()["status"] for i in ids
        ]


def _probe(
    api: httpx.Client, standin: httpx.Client, b: Tenant, run: str, count: int, gap_s: float,
    timeout_s: float,
) -> Latency:  # fmt: skip
    """``count`` webhooks of B, one every ``gap_s``; waits for every delivery."""
    ids = []
    for _ in range(count):
        response = api.post(f"/api/webhooks/{b.workflow_id}", json={"run": run, "t": time.time()})
        response.raise_for_status()
        ids.append(str(response.json()["execution_id"]))
        time.sleep(gap_s)
    deadline = time.monotonic() + timeout_s
    latencies: list[float] = []
    while True:
        delivered = standin.get("/_standin/requests", params={"path_prefix": FAST_PATH}).json()
        latencies = [
            (r["received_at"] - float(r["body"]["text"].split(" ")[1])) * 1000
            for r in delivered
            if r["body"]["text"].split(" ")[0] == run
        ]
        if len(latencies) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    terminal = {"succeeded", "failed", "cancelled", "timed_out"}
    while True:
        statuses = b.statuses(ids)
        if all(s in terminal for s in statuses) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return Latency(
        p50_ms=loadgen.percentile(latencies, 0.50) if latencies else float("inf"),
        p99_ms=loadgen.percentile(latencies, 0.99) if latencies else float("inf"),
        delivered=len(latencies),
        succeeded=statuses.count("succeeded"),
        samples=latencies,
    )


def run(
    server_url: str,
    standin_url: str,
    *,
    flood: int = 5_000,
    probes: int = 50,
    slow_s: float = 0.5,
    gap_s: float = 0.05,
    connections: int = 4,
    timeout_s: float = 60.0,
) -> FairnessResult:
    """The scenario against a fresh server (it signs up two tenants)."""
    port = int(server_url.rsplit(":", 1)[1])
    with (
        httpx.Client(base_url=server_url, timeout=30) as api,
        httpx.Client(base_url=standin_url, timeout=30) as standin,
    ):
        a = Tenant(api, "flood@example.com", f"{standin_url}{SLOW_PATH}")
        b = Tenant(api, "probe@example.com", f"{standin_url}{FAST_PATH}")
        standin.post(
            "/_standin/faults", json={"path_prefix": SLOW_PATH, "delay_s": slow_s, "count": None}
        ).raise_for_status()
        _probe(api, standin, b, "warmup", 10, gap_s, timeout_s)
        baseline = _probe(api, standin, b, "alone", probes, gap_s, timeout_s)

        path = f"/api/webhooks/{a.workflow_id}"
        host = f"127.0.0.1:{port}"
        results: list[loadgen.Result] = []

        def make(i: int) -> bytes:
            return loadgen.json_post(path, {"run": "flood", "t": time.time()}, host=host)

        def fire() -> None:
            results.extend(asyncio.run(loadgen.run("127.0.0.1", port, make, flood, connections)))

        flooder = threading.Thread(target=fire, name="flood")
        flooder.start()
        flooded = _probe(api, standin, b, "flooded", probes, gap_s, timeout_s)
        flooder.join()
        accepted = sum(1 for r in results if r.status == 202)
        stats = standin.get("/_standin/requests", params={"path_prefix": SLOW_PATH}).json()
    return FairnessResult(baseline, flooded, accepted, len(stats))


def main() -> int:
    """``make bench-fairness``: the scenario against ``ipaas serve`` (SQLite, 10 workers)."""
    import tempfile
    from pathlib import Path

    from tests.process.conftest import ServerProcess
    from tests.standins.server import StandinProcess

    with tempfile.TemporaryDirectory() as workdir, StandinProcess() as standin:
        server = ServerProcess(
            Path(workdir), env={"IPAAS_WORKERS": "10", "IPAAS_LOG_LEVEL": "warning"}
        ).start()
        try:
            result = run(server.url, standin.url)
        finally:
            server.stop()
    print(result.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
