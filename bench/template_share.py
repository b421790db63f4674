"""One tenant's slow templates against another tenant's deliveries (IPAAS_TEMPLATE_TENANT_SHARE).

``python -m bench.template_share [--share 0.1 --share 1]`` starts ``ipaas serve`` (embedded,
SQLite) and the stand-ins once per share. Tenant A fires ``--heavy`` webhooks, 10 a second,
at a workflow whose template loops for ~0.1 s (a render holds the event loop); meanwhile
tenant B fires ``--probes`` Slack webhooks, 20 a second. Printed per share: B's
webhook-to-delivery latency (p50, p75, p90, p99, mean; the body carries its send time) and
how much of the run A's renders held the loop. ``--share 1`` is the limit off: a tenant may
take the whole loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from tests.standins.server import StandinProcess, free_port

from bench.__main__ import _ipaas_command, _process, _wait_http

#: ~990,000 empty loop iterations: ~0.1 s a render here, under the 1,000,000 iteration cap.
HEAVY = (
    "{% for a in range(990) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"
    "n={{ trigger.body.n }}"
)


def _render_s() -> float:
    from ipaas.engine.templating import render

    started = time.perf_counter()
    render(HEAVY, {"trigger": {"body": {"n": 1}}})
    return time.perf_counter() - started


def _tenant(api: httpx.Client, email: str) -> dict[str, str]:
    body = {"email": email, "password": "bench password", "tenant_name": email}
    response = api.post("/api/auth/signup", json=body)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _workflow(api: httpx.Client, headers: dict[str, str], step: dict[str, object]) -> str:
    body = {"name": "w", "trigger": {"type": "webhook"}, "steps": [step]}
    response = api.post("/api/workflows", headers=headers, json=body)
    response.raise_for_status()
    return str(response.json()["id"])


def run(share: str, heavy: int, probes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, StandinProcess() as standin:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")} | {
            "IPAAS_DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'ipaas.db'}",
            "IPAAS_DATA_DIR": tmp,
            "IPAAS_SECRET_KEY": Fernet.generate_key().decode(),
            "IPAAS_EGRESS_ALLOW": "127.0.0.1/32",
            "IPAAS_TEMPLATE_TENANT_SHARE": share,
        }
        command = [_ipaas_command(), "serve", "--port", str(port)]
        with (
            _process(command, env=env, log=Path(tmp) / "server.log") as server,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as api,
        ):
            _wait_http(f"http://127.0.0.1:{port}/readyz", server, "ipaas serve")
            a = _tenant(api, "a@example.com")
            echo = {"method": "POST", "url": f"{standin.url}/echo", "body": HEAVY}
            heavy_wf = _workflow(api, a, {"id": "c", "type": "http_request", "config": echo})
            b = _tenant(api, "b@example.com")
            secret = {"webhook_url": f"{standin.url}/services/T000/B000/PROBE"}
            cred = api.post(
                "/api/credentials", headers=b, json={"name": "s", "type": "slack", "secret": secret}
            )
            cred.raise_for_status()
            text = "b {{ trigger.body.n }} {{ trigger.body.t }}"
            slack = {"id": "n", "type": "slack_message", "credential_id": cred.json()["id"]}
            probe_wf = _workflow(api, b, slack | {"config": {"text": text}})

            def fire_heavy() -> None:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                    for n in range(heavy):
                        c.post(f"/api/webhooks/{heavy_wf}", json={"n": n}).raise_for_status()
                        time.sleep(0.1)

            thread = threading.Thread(target=fire_heavy)
            thread.start()
            time.sleep(0.5)
            started = time.time()
            for n in range(probes):
                body = {"n": n, "t": time.time()}
                api.post(f"/api/webhooks/{probe_wf}", json=body).raise_for_status()
                time.sleep(0.05)
            deadline = time.time() + 120
            params = {"kind": "slack_webhook"}
            requests = f"{standin.url}/_standin/requests"
            while len(got := httpx.get(requests, params=params).json()) < probes:
                if time.time() > deadline:
                    break
                time.sleep(0.2)
            elapsed = time.time() - started + 0.5
            rendered = len(httpx.get(requests, params={"kind": "echo"}).json())
            thread.join()
    ms: list[float] = sorted(
        (r["received_at"] - float(r["body"]["text"].split()[2])) * 1000 for r in got
    )

    def q(p: float) -> float:
        return ms[min(len(ms) - 1, int(len(ms) * p))]

    held = rendered * _render_s()
    print(
        f"share {share:>4}: B {len(ms)}/{probes} delivered, p50 {q(0.5):.0f} ms p75 "
        f"{q(0.75):.0f} p90 {q(0.9):.0f} p99 {q(0.99):.0f} mean {statistics.mean(ms):.0f} ms | "
        f"A {rendered}/{heavy} delivered, renders ~{held:.1f} s of {elapsed:.1f} s "
        f"({held / elapsed:.0%} of the loop)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.template_share", description=__doc__)
    parser.add_argument("--share", action="append", help="IPAAS_TEMPLATE_TENANT_SHARE; repeatable")
    parser.add_argument("--heavy", type=int, default=150, help="tenant A's webhooks")
    parser.add_argument("--probes", type=int, default=300, help="tenant B's webhooks")
    args = parser.parse_args(argv)
    print(f"one render of A's template: {_render_s() * 1000:.0f} ms", flush=True)
    for share in args.share or ["1", "0.1"]:
        run(share, args.heavy, args.probes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
