"""``python -m bench`` (``make bench``): throughput and latency of the embedded server.

Starts, each in a process of its own: ``ipaas serve`` (SQLite in a temporary directory,
default settings), the Slack stand-in (``python -m tests.standins``) and the bare-intake
baseline (``python -m bench.bare_app``). The load generator (``bench.loadgen``, raw asyncio
HTTP/1.1 keep-alive) runs in this process. After a warm-up, each of ``--runs`` rounds measures:

(a) webhook intake: ``--requests`` POSTs to ``/api/webhooks/{id}`` over ``--connections``
    connections: requests/s and latency p50/p99;
(b) end to end, from the same webhooks: deliveries/s at the stand-in
    (N / (last delivery - first send)) and webhook-to-delivery latency p50/p99 (each body
    carries its send time, rendered into the Slack text; the stand-in records when the
    message arrived); every execution must be recorded ``succeeded``;
(c) the bare ASGI endpoint's intake, same load, and the ratio (a)/(c).

Then it prints the medians, the server's RSS at the end (``VmRSS`` from ``/proc``) and the
targets; then (a') the same rounds of intake against ``ipaas serve --no-workers`` (a new
SQLite file, nothing else running in the process, as in the bare app), each beside a bare
round, and (a')/(c): the intake path's own cost, told apart from sharing the process with the
deliveries. The target is judged on (a).

Tracing (``--tracing``): after the embedded rounds, the same rounds (a) and (b) against a
second ``ipaas serve`` with OpenTelemetry on (``OTEL_TRACES_EXPORTER=otlp``, batched export to
``bench.otlp_sink``, every trace sampled), printed beside the figures with tracing off.

Scale-out (issue 3): the same rounds (a) and (b) against ``ipaas serve --no-workers`` plus 1, 2
and 4 ``ipaas worker`` processes on PostgreSQL + Redis (``--postgres-url``, ``--redis-url``;
defaults: the local services, as in CI), each size on a new database, printed beside the
embedded figures of the same run: the embedded rounds' median, and one more embedded round
measured right before each size (this machine's speed drifts over a run, so a size is also
compared with the embedded figure measured next to it). Skipped, with the reason, when the
services are not reachable.

It measures and prints; it asserts nothing. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.fernet import Fernet
from tests.standins.server import StandinProcess, free_port

from bench import loadgen
from ipaas.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
R = TypeVar("R")
START_TIMEOUT_S = 30.0
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")

SCALE_OUT_WORKERS = (1, 2, 4)
#: The scale-out rounds' Redis database index (flushed before each size).
BENCH_REDIS_DB = 13

TARGET_RATIO = 0.5
TARGET_DELIVERIES_PER_S = 1_200
TARGET_RSS_MIB = 150


# -- processes ---------------------------------------------------------------------------------
def _wait_http(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            msg = f"{what} exited with {process.returncode} while starting"
            raise RuntimeError(msg)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            msg = f"{what} not ready within {START_TIMEOUT_S}s"
            raise TimeoutError(msg)
        time.sleep(0.05)


@contextlib.contextmanager
def _process(
    command: list[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _settings(args: argparse.Namespace) -> dict[str, str]:
    """``--set NAME=VALUE`` as ``IPAAS_NAME`` variables."""
    settings = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            msg = f"--set takes NAME=VALUE, not {item!r}"
            raise SystemExit(msg)
        settings[f"IPAAS_{name.upper()}"] = value
    return settings


def _ipaas_command() -> str:
    beside = Path(sys.executable).with_name("ipaas")
    return str(beside) if beside.exists() else "ipaas"


def rss_mib(pid: int) -> tuple[float, float]:
    """Resident set size now and at its peak (``VmRSS``, ``VmHWM``), in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- measurements ------------------------------------------------------------------------------
@dataclass
class Intake:
    requests: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds


@dataclass
class EndToEnd:
    deliveries: int
    per_s: float
    p50_ms: float
    p99_ms: float
    not_succeeded: int
    #: Server CPU time over the round (intake and delivery) / its wall time: 1.0 = one core.
    server_cpu: float = 0.0


def _intake(
    port: int, make_request: Callable[[int], bytes], total: int, connections: int, status: int
) -> tuple[Intake, list[loadgen.Result]]:
    started = time.perf_counter()
    results = asyncio.run(loadgen.run("127.0.0.1", port, make_request, total, connections))
    seconds = time.perf_counter() - started
    latencies = [r.latency_s * 1000 for r in results]
    errors: dict[str, int] = {}
    for r in results:
        if r.status != status:
            key = str(r.status) if r.status else (r.error or "no response")
            errors[key] = errors.get(key, 0) + 1
    intake = Intake(
        requests=total,
        ok=total - sum(errors.values()),
        seconds=seconds,
        p50_ms=loadgen.percentile(latencies, 0.50),
        p99_ms=loadgen.percentile(latencies, 0.99),
        errors=errors,
    )
    return intake, results


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.port = free_port()
        self.bare_port = free_port()
        self.db_path = workdir / "ipaas.db"
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.standin_http: httpx.Client | None = None
        #: The processes whose CPU time a round reports (the server; API + workers).
        self.server_pids: list[int] = []

    # -- set-up ------------------------------------------------------------------------------
    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")}
        env.update(
            IPAAS_DATABASE_URL=f"sqlite+aiosqlite:///{self.db_path}",
            IPAAS_DATA_DIR=str(self.workdir),
            IPAAS_SECRET_KEY=Fernet.generate_key().decode(),
            IPAAS_EGRESS_ALLOW="127.0.0.1/32",
        )
        env.update(_settings(self.args))
        return env

    def setup_workflow(self, standin_url: str, headers: dict[str, str]) -> str:
        credential = self.api.post(
            "/api/credentials",
            headers=headers,
            json={
                "name": "bench-slack",
                "type": "slack",
                "secret": {"webhook_url": f"{standin_url}/services/T000/B000/BENCH"},
            },
        )
        credential.raise_for_status()
        workflow = self.api.post(
            "/api/workflows",
            headers=headers,
            json={
                "name": "bench",
                "trigger": {"type": "webhook"},
                "steps": [
                    {
                        "id": "notify",
                        "type": "slack_message",
                        "credential_id": credential.json()["id"],
                        "config": {"text": "bench {{ trigger.body.n }} {{ trigger.body.t }}"},
                    }
                ],
            },
        )
        workflow.raise_for_status()
        return str(workflow.json()["id"])

    def signup(self) -> dict[str, str]:
        response = self.api.post(
            "/api/auth/signup",
            json={"email": "bench@example.com", "password": "bench password", "tenant_name": "B"},
        )
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    # -- phases ------------------------------------------------------------------------------
    def webhook_request(self, workflow_id: str, run: int) -> Callable[[int], bytes]:
        host = f"127.0.0.1:{self.port}"
        path = f"/api/webhooks/{workflow_id}"

        def make(i: int) -> bytes:
            # Built at send time: the body carries when it was sent.
            return loadgen.json_post(path, {"run": run, "n": i, "t": time.time()}, host=host)

        return make

    def bare_request(self) -> Callable[[int], bytes]:
        host = f"127.0.0.1:{self.bare_port}"

        def make(i: int) -> bytes:
            return loadgen.json_post("/intake", {"n": i, "t": time.time()}, host=host)

        return make

    def standin(self) -> httpx.Client:
        assert self.standin_http is not None
        return self.standin_http

    def wait_delivered(self, count: int) -> None:
        deadline = time.monotonic() + self.args.timeout
        while self.standin().get("/_standin/stats").json()["slack_messages"] < count:
            if time.monotonic() > deadline:
                msg = f"fewer than {count} Slack messages after {self.args.timeout}s"
                raise TimeoutError(msg)
            time.sleep(0.1)

    def server_cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.server_pids)

    def statuses(self, workflow_id: str) -> dict[str, int]:
        """Execution statuses of one workflow, read from the SQLite file (read-only)."""
        with contextlib.closing(
            sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        ) as db:
            rows = db.execute(
                "SELECT status, count(*) FROM execution WHERE workflow_id = ? GROUP BY status",
                (workflow_id,),
            ).fetchall()
        return dict(rows)

    def wait_terminal(self, workflow_id: str, expected: int) -> dict[str, int]:
        deadline = time.monotonic() + self.args.timeout
        while True:
            counts = self.statuses(workflow_id)
            done = sum(n for status, n in counts.items() if status in TERMINAL)
            if done >= expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.1)

    def end_to_end(self, workflow_id: str, results: list[loadgen.Result]) -> EndToEnd:
        total = len(results)
        self.wait_delivered(total)
        counts = self.wait_terminal(workflow_id, total)
        delivered = self.standin().get("/_standin/requests", params={"kind": "slack_webhook"})
        latencies, arrivals = [], []
        for request in delivered.json():
            text = request["body"]["text"]
            _, _n, sent = text.split(" ")
            latencies.append((request["received_at"] - float(sent)) * 1000)
            arrivals.append(request["received_at"])
        first_sent = min(r.sent_at for r in results)
        return EndToEnd(
            deliveries=len(arrivals),
            per_s=total / (max(arrivals) - first_sent),
            p50_ms=loadgen.percentile(latencies, 0.50),
            p99_ms=loadgen.percentile(latencies, 0.99),
            not_succeeded=total - counts.get("succeeded", 0),
        )

    def round(self, workflow_id: str, run: int, total: int) -> tuple[Intake, EndToEnd, Intake]:
        connections = self.args.connections
        self.standin().post("/_standin/reset").raise_for_status()
        bare, _ = _intake(self.bare_port, self.bare_request(), total, connections, 202)
        webhook, e2e = self.webhooks_round(workflow_id, run, total)
        return webhook, e2e, bare

    def webhooks_round(self, workflow_id: str, run: int, total: int) -> tuple[Intake, EndToEnd]:
        """(a) and (b): ``total`` webhooks, then wait for every delivery."""
        self.standin().post("/_standin/reset").raise_for_status()
        cpu_before, wall_before = self.server_cpu_seconds(), time.perf_counter()
        webhook, results = _intake(
            self.port, self.webhook_request(workflow_id, run), total, self.args.connections, 202
        )
        accepted = [r for r in results if r.status == 202]
        e2e = self.end_to_end(workflow_id, accepted)
        e2e.not_succeeded += total - len(accepted)
        e2e.server_cpu = (self.server_cpu_seconds() - cpu_before) / (
            time.perf_counter() - wall_before
        )
        return webhook, e2e

    def rounds(
        self,
        standin_url: str,
        headers: dict[str, str],
        runs: int,
        one: Callable[[str, int, int], R],
    ) -> list[R]:
        """A warm-up round (``--warmup`` webhooks, discarded) and ``runs`` measured rounds
        (``--requests`` each), each on a new workflow: ``one(workflow_id, run, total)``."""
        measured = []
        for run in range(runs + 1):
            workflow_id = self.setup_workflow(standin_url, headers)
            total = self.args.warmup if run == 0 else self.args.requests
            result = one(workflow_id, run, total)
            if run > 0:
                measured.append(result)
        return measured

    def printed_round(self, workflow_id: str, run: int, total: int) -> tuple[Intake, EndToEnd]:
        webhook, e2e = self.webhooks_round(workflow_id, run, total)
        self.print_round(self.label(run), webhook, e2e)
        return webhook, e2e

    @staticmethod
    def label(run: int) -> str:
        return "warm-up" if run == 0 else f"run {run}"

    def print_round(self, label: str, webhook: Intake, e2e: EndToEnd, extra: str = "") -> None:
        print(
            f"  {label:8} intake {webhook.per_s:7.0f}/s p50 {webhook.p50_ms:6.1f} ms "
            f"p99 {webhook.p99_ms:6.1f} ms | deliveries {e2e.per_s:6.0f}/s "
            f"p50 {e2e.p50_ms:7.1f} ms p99 {e2e.p99_ms:7.1f} ms "
            f"not succeeded {e2e.not_succeeded} | server CPU {e2e.server_cpu:4.0%}"
            + extra
            + (f" | errors {webhook.errors}" if webhook.errors else ""),
            flush=True,
        )

    # -- the whole run -----------------------------------------------------------------------
    def main(self) -> int:
        args = self.args
        env = self.server_env()
        with (
            StandinProcess() as standin,
            _process(
                [_ipaas_command(), "serve", "--port", str(self.port)],
                env=env,
                log=self.workdir / "server.log",
            ) as server,
            _process(
                [
                    sys.executable,
                    "-m",
                    "bench.bare_app",
                    "--port",
                    str(self.bare_port),
                    "--db",
                    str(self.workdir / "bare.db"),
                ],
                env=env,
                log=self.workdir / "bare.log",
            ) as bare,
        ):
            self.server_pids = [server.pid]
            self.standin_http = httpx.Client(base_url=standin.url, timeout=60)
            _wait_http(f"http://127.0.0.1:{self.port}/readyz", server, "ipaas serve")
            _wait_http(f"http://127.0.0.1:{self.bare_port}/", bare, "bench.bare_app")
            headers = self.signup()
            print(
                f"bench: {args.runs} runs x {args.requests} webhooks over {args.connections} "
                f"connections (warm-up {args.warmup}); python {platform.python_version()}, "
                f"{os.cpu_count()} CPUs; server pid {server.pid}; work dir {self.workdir}"
                + "".join(f"; {k}={v}" for k, v in _settings(args).items()),
                flush=True,
            )

            def one(workflow_id: str, run: int, total: int) -> tuple[Intake, EndToEnd, Intake]:
                webhook, e2e, bare_intake = self.round(workflow_id, run, total)
                bare_errors = f" | bare errors {bare_intake.errors}" if bare_intake.errors else ""
                extra = f" | bare {bare_intake.per_s:6.0f}/s{bare_errors}"
                self.print_round(self.label(run), webhook, e2e, extra)
                return webhook, e2e, bare_intake

            rounds = self.rounds(standin.url, headers, args.runs, one)
            rss, peak = rss_mib(server.pid)
            _report(rounds, rss, peak)
            alone = IntakeAloneBench(args, self.workdir).run(standin, self.bare_port)
            _report_intake_alone(alone)
            if args.tracing:
                traced = TracedBench(args, self.workdir).run(standin)
                _report_tracing(rounds, traced)
            if not args.no_scale_out:

                def embedded_round() -> float:
                    """One more embedded round (b), right before a scale-out size: this
                    machine's speed drifts over a run, so each size is also compared with
                    the embedded figure measured next to it."""
                    workflow_id = self.setup_workflow(standin.url, headers)
                    _, e2e = self.webhooks_round(workflow_id, args.runs + 1, args.requests)
                    print(f"  embedded round beside it: deliveries {e2e.per_s:6.0f}/s", flush=True)
                    return e2e.per_s

                scaled = scale_out(args, self.workdir, standin, embedded_round)
                _report_scale_out(_median([r[1].per_s for r in rounds]), scaled)
        return 0


# -- intake alone --------------------------------------------------------------------------------
class IntakeAloneBench(Bench):
    """(a'): ``ipaas serve --no-workers`` on a new SQLite database, so the intake path is
    measured on its own, as the bare app (c) is: nothing else runs in the process."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir / "intake-alone")
        self.workdir.mkdir()

    def run(self, standin: StandinProcess, bare_port: int) -> list[tuple[Intake, Intake]]:
        env = self.server_env()
        command = [_ipaas_command(), "serve", "--port", str(self.port), "--no-workers"]
        self.bare_port = bare_port
        print("\n(a') intake alone: ipaas serve --no-workers, SQLite; the bare app (c) beside it")
        with _process(command, env=env, log=self.workdir / "server.log") as server:
            _wait_http(f"http://127.0.0.1:{self.port}/readyz", server, "ipaas serve --no-workers")
            connections = self.args.connections

            def one(workflow_id: str, run: int, total: int) -> tuple[Intake, Intake]:
                bare, _ = _intake(bare_port, self.bare_request(), total, connections, 202)
                webhook, _ = _intake(
                    self.port, self.webhook_request(workflow_id, run), total, connections, 202
                )
                print(
                    f"  {self.label(run):8} intake {webhook.per_s:7.0f}/s "
                    f"p50 {webhook.p50_ms:6.1f} ms p99 {webhook.p99_ms:6.1f} ms | "
                    f"bare {bare.per_s:6.0f}/s | ratio {webhook.per_s / bare.per_s:.2f}"
                    + (f" | errors {webhook.errors}" if webhook.errors else ""),
                    flush=True,
                )
                return webhook, bare

            return self.rounds(standin.url, self.signup(), self.args.runs, one)


def _report_intake_alone(rounds: list[tuple[Intake, Intake]]) -> None:
    alone = _median([w.per_s for w, _ in rounds])
    bare = _median([b.per_s for _, b in rounds])
    ratios = sorted(w.per_s / b.per_s for w, b in rounds)
    print(
        f"  (a') intake alone {alone:,.0f} req/s, (c) beside it {bare:,.0f} req/s: "
        f"(a')/(c) {alone / bare:.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)}); "
        "for reading (a): the target is judged on (a), with the workers running"
    )


# -- tracing on ---------------------------------------------------------------------------------
class TracedBench(Bench):
    """The embedded server again, on a new database, with every trace exported over OTLP."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir / "traced")
        self.workdir.mkdir()
        self.sink_port = free_port()

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in super().server_env().items() if not k.startswith("OTEL_")}
        env.update(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{self.sink_port}",
            OTEL_SERVICE_NAME="ipaas-bench",
        )
        return env

    def run(self, standin: StandinProcess) -> list[tuple[Intake, EndToEnd]]:
        env = self.server_env()
        command = [_ipaas_command(), "serve", "--port", str(self.port)]
        sink_command = [sys.executable, "-m", "bench.otlp_sink", "--port", str(self.sink_port)]
        print("\ntracing on: OTEL_TRACES_EXPORTER=otlp to a local sink, all traces sampled")
        with (
            _process(sink_command, env=env, log=self.workdir / "sink.log"),
            _process(command, env=env, log=self.workdir / "server.log") as server,
        ):
            self.server_pids = [server.pid]
            self.standin_http = httpx.Client(base_url=standin.url, timeout=60)
            _wait_http(f"http://127.0.0.1:{self.port}/readyz", server, "ipaas serve (tracing)")
            return self.rounds(standin.url, self.signup(), self.args.runs, self.printed_round)


def _report_tracing(
    off: list[tuple[Intake, EndToEnd, Intake]], on: list[tuple[Intake, EndToEnd]]
) -> None:
    rows = [
        ("(a) webhook intake, req/s", [r[0].per_s for r in off], [r[0].per_s for r in on]),
        ("    intake p99, ms", [r[0].p99_ms for r in off], [r[0].p99_ms for r in on]),
        ("(b) end to end, deliveries/s", [r[1].per_s for r in off], [r[1].per_s for r in on]),
        ("    webhook-to-delivery p99, ms", [r[1].p99_ms for r in off], [r[1].p99_ms for r in on]),
    ]
    print("\ntracing off vs on (medians)")
    for name, a, b in rows:
        before, after = _median(a), _median(b)
        print(f"  {name:32} off {before:9,.1f}  on {after:9,.1f}  ({after / before - 1:+.0%})")


# -- scale-out ---------------------------------------------------------------------------------
class ScaleOutBench(Bench):
    """``ipaas serve --no-workers`` + ``workers`` x ``ipaas worker`` on a new PostgreSQL
    database and the bench's Redis database."""

    def __init__(self, args: argparse.Namespace, workdir: Path, database_url: str) -> None:
        super().__init__(args, workdir)
        self.database_url = database_url

    def server_env(self) -> dict[str, str]:
        env = super().server_env()
        env.update(IPAAS_DATABASE_URL=self.database_url, IPAAS_REDIS_URL=_redis_url(self.args))
        return env

    def statuses(self, workflow_id: str) -> dict[str, int]:
        query = "SELECT status, count(*) FROM execution WHERE workflow_id = $1 GROUP BY status"
        rows = asyncio.run(_pg_fetch(self.database_url, query, workflow_id))
        return {str(status): int(n) for status, n in rows}

    @contextlib.contextmanager
    def serving(self, workers: int) -> Iterator[list[tuple[str, subprocess.Popen[bytes], Path]]]:
        """The API process and ``workers`` worker processes, ready; (name, process, log)."""
        env = self.server_env()
        # The measured processes' IPAAS_WORKERS: the default, or what --set gave them.
        per_process = int(env.get("IPAAS_WORKERS", Settings.model_fields["workers"].default))
        # The per-tenant cap is global across processes; its default (80% of one process's
        # IPAAS_WORKERS) suits one process. As docs/operations.md says for scale-out, set it
        # to 80% of all worker slots: otherwise this one-tenant bench runs 8 at a time.
        # A cap given with --set stays.
        slots = workers * per_process
        env.setdefault("IPAAS_TENANT_MAX_CONCURRENCY", str(max(1, slots * 8 // 10)))
        subprocess.run([_ipaas_command(), "migrate"], env=env, check=True, cwd=self.workdir)
        # docs/operations.md (Sizing): the pools of every process must stay below PostgreSQL's
        # max_connections (100 here); a worker's store calls are bounded by IPAAS_WORKERS,
        # so its pool is that plus room for claims, heartbeats and the reaper: 1 API (20) +
        # 4 workers (15 each) = 80.
        worker_env = {"IPAAS_DB_POOL_SIZE": str(per_process + 5)} | env
        logs = self.workdir / f"scale-out-{workers}"
        logs.mkdir()
        api_command = [_ipaas_command(), "serve", "--port", str(self.port), "--no-workers"]
        with contextlib.ExitStack() as stack:
            api_log = logs / "api.log"
            api = stack.enter_context(
                _process([*api_command, "--no-migrate"], env=env, log=api_log)
            )
            processes = [("api", api, api_log)]
            for n in range(workers):
                log = logs / f"worker-{n}.log"
                worker = _process([_ipaas_command(), "worker"], env=worker_env, log=log)
                processes.append((f"worker-{n}", stack.enter_context(worker), log))
            _wait_http(f"http://127.0.0.1:{self.port}/readyz", api, "ipaas serve --no-workers")
            yield processes

    def run(self, standin: StandinProcess, workers: int) -> list[tuple[Intake, EndToEnd]]:
        with self.serving(workers) as processes:
            self.server_pids = [process.pid for _, process, _ in processes]
            self.standin_http = httpx.Client(base_url=standin.url, timeout=60)
            return self.rounds(
                standin.url, self.signup(), self.args.scale_out_runs, self.printed_round
            )


@contextlib.contextmanager
def scratch_database(args: argparse.Namespace, name: str) -> Iterator[str]:
    """A new PostgreSQL database (its URL), dropped afterwards, and the bench's Redis
    database emptied."""
    from redis import Redis

    asyncio.run(_pg_admin(args.postgres_url, f'CREATE DATABASE "{name}"'))
    with Redis.from_url(_redis_url(args)) as redis:
        redis.flushdb()
    try:
        yield str(httpx.URL(args.postgres_url).copy_with(path=f"/{name}"))
    finally:
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        asyncio.run(_pg_admin(args.postgres_url, drop))


def _redis_url(args: argparse.Namespace) -> str:
    return str(httpx.URL(args.redis_url).copy_with(path=f"/{BENCH_REDIS_DB}"))


async def _pg_fetch(url: str, query: str, *params: Any) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return list(await connection.fetch(query, *params))
    finally:
        await connection.close()


async def _pg_admin(url: str, statement: str) -> None:
    await _pg_fetch(url, statement)


def services_down(args: argparse.Namespace) -> str | None:
    from redis import Redis

    try:
        asyncio.run(_pg_fetch(args.postgres_url, "SELECT 1"))
    except Exception as exc:
        return f"PostgreSQL at {args.postgres_url}: {exc!r}"
    try:
        with Redis.from_url(_redis_url(args), socket_connect_timeout=2) as redis:
            redis.ping()
    except Exception as exc:
        return f"Redis at {args.redis_url}: {exc!r}"
    return None


def scale_out(
    args: argparse.Namespace,
    workdir: Path,
    standin: StandinProcess,
    embedded_round: Callable[[], float],
) -> dict[int, tuple[list[tuple[Intake, EndToEnd]], float]] | str:
    """Every size's rounds with the embedded deliveries/s measured just before them, or why
    the scale-out runs were skipped."""
    down = services_down(args)
    if down is not None:
        return down
    results = {}
    for workers in SCALE_OUT_WORKERS:
        print(f"\nscale-out: 1 API + {workers} worker process(es) on PostgreSQL + Redis")
        beside = embedded_round()
        with scratch_database(args, f"ipaas_bench_{os.getpid()}_{workers}") as database_url:
            rounds = ScaleOutBench(args, workdir, database_url).run(standin, workers)
            results[workers] = (rounds, beside)
    return results


def _report_scale_out(
    embedded_per_s: float, scaled: dict[int, tuple[list[tuple[Intake, EndToEnd]], float]] | str
) -> None:
    if isinstance(scaled, str):
        print(f"\nscale-out runs skipped: {scaled}")
        return
    print(
        f"\nscale-out medians beside the embedded end to end: the run's median "
        f"({embedded_per_s:,.0f}/s) and the one embedded round measured just before each size"
    )
    header = (
        "processes",
        "intake",
        "deliveries",
        "latency p50 / p99",
        "vs embedded median",
        "vs embedded beside",
        "lost",
    )
    rows = [header]
    for workers, (rounds, beside_per_s) in scaled.items():
        intake = _median([w.per_s for w, _ in rounds])
        per_s = _median([e.per_s for _, e in rounds])
        lost = sum(e.not_succeeded for _, e in rounds)
        ratio = per_s / embedded_per_s
        beside = per_s / beside_per_s
        rows.append(
            (
                f"1 API + {workers} worker{'s' if workers > 1 else ''}",
                f"{intake:,.0f} req/s",
                f"{per_s:,.0f}/s",
                _lat([e for _, e in rounds]),
                f"{ratio:.2f}x  {_mark(ratio >= 1.0)}",
                f"{beside:.2f}x ({beside_per_s:,.0f}/s)  {_mark(beside >= 1.0)}",
                f"{lost}  {_mark(lost == 0)}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in (rows[0], tuple("-" * w for w in widths), *rows[1:]):
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _report(rounds: list[tuple[Intake, EndToEnd, Intake]], rss: float, peak: float) -> None:
    webhook = [r[0] for r in rounds]
    e2e = [r[1] for r in rounds]
    bare = [r[2] for r in rounds]
    a = _median([w.per_s for w in webhook])
    c = _median([b.per_s for b in bare])
    b = _median([e.per_s for e in e2e])
    not_succeeded = sum(e.not_succeeded for e in e2e)
    errors = sum(w.requests - w.ok for w in webhook)
    rows = [
        ("(a) webhook intake", f"{a:,.0f} req/s", _lat(webhook), ""),
        (
            "(b) end to end",
            f"{b:,.0f} deliveries/s",
            _lat(e2e),
            f">= {TARGET_DELIVERIES_PER_S:,}/s  {_mark(b >= TARGET_DELIVERIES_PER_S)}",
        ),
        ("(c) bare ASGI + SQLite", f"{c:,.0f} req/s", _lat(bare), ""),
        ("(a)/(c)", f"{a / c:.2f}", "", f">= {TARGET_RATIO}  {_mark(a / c >= TARGET_RATIO)}"),
        (
            "(d) server RSS at end",
            f"{rss:.0f} MiB",
            f"peak {peak:.0f} MiB",
            f"<= {TARGET_RSS_MIB} MiB  {_mark(rss <= TARGET_RSS_MIB)}",
        ),
    ]
    print(f"\nmedians of {len(rounds)} runs")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measure", "value", "latency p50 / p99", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(
        f"\nexecutions not recorded succeeded: {not_succeeded}; webhooks not answered 202: {errors}"
    )


def _lat(items: list[Any]) -> str:
    p50 = _median([i.p50_ms for i in items])
    p99 = _median([i.p99_ms for i in items])
    return f"{p50:.1f} / {p99:.1f} ms"


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="measured rounds (median)")
    parser.add_argument("--requests", type=int, default=5_000, help="webhooks per round")
    parser.add_argument("--warmup", type=int, default=500, help="webhooks in the warm-up round")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for a round's deliveries"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, dbs)")
    parser.add_argument("--no-scale-out", action="store_true", help="embedded rounds only")
    parser.add_argument(
        "--tracing", action="store_true", help="also run the embedded rounds with tracing on"
    )
    parser.add_argument("--scale-out-runs", type=int, default=2, help="rounds per size")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the measured server (IPAAS_NAME), e.g. --set WORKERS=40; repeatable",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "IPAAS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
        help="an admin URL: each size gets a new database beside it",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("IPAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args(argv)
    if args.keep:
        workdir = Path(tempfile.mkdtemp(prefix="ipaas-bench-"))
        return Bench(args, workdir).main()
    with tempfile.TemporaryDirectory(prefix="ipaas-bench-") as tmp:
        return Bench(args, Path(tmp)).main()


if __name__ == "__main__":
    sys.exit(main())
