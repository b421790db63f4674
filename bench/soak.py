"""``python -m bench.soak`` (``make soak``): the product under a steady load, for long.

Starts ``ipaas serve`` (default settings, SQLite in a temporary directory), or with
``--scale-out N`` (``make soak-scale-out``) ``ipaas serve --no-workers`` and N ``ipaas
worker`` processes on a new PostgreSQL database and Redis, and the Slack stand-in, then
sends ``--rate`` webhooks a second (a workflow with one ``slack_message`` step) over
``--connections`` connections for ``--minutes``. Every ``--every`` seconds it prints each
process's RSS, the size of the SQLite WAL file (or of the PostgreSQL database), intake's
rate and latency over the interval (p99, max) and how many webhooks were delivered. At the
end it waits for the last deliveries and prints:

- each process's RSS at the start of the load, at the end, and its slope over the second
  half (MiB per minute): a leak grows without end, caches fill and stop;
- the largest WAL seen: a WAL that is never started over grows with every write (the
  database's size on PostgreSQL, printed only: it depends on retention and vacuum);
- webhooks not answered 202, deliveries missing, error lines in the processes' logs.

It exits 1 when one of these is off: a webhook not 202, a delivery missing, an error line,
a WAL over ``WAL_LIMIT_MIB``, or a process's RSS growing faster than ``RSS_SLOPE_LIMIT``
MiB a minute over the second half, its largest single step left out. ``make bench``
measures speed; this measures what only time shows. See docs/benchmarks.md ("Soak").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.standins.server import StandinProcess

from bench import loadgen
from bench.__main__ import (
    Bench,
    ScaleOutBench,
    _ipaas_command,
    _pg_fetch,
    _process,
    _wait_http,
    rss_mib,
    scratch_database,
    services_down,
)

#: The WAL is emptied past 64 MiB (``SQLITE_WAL_RESTART_FRAMES``); twice that is a WAL that
#: is not.
WAL_LIMIT_MIB = 128.0
#: RSS growth over the second half (its largest step left out), in MiB a minute, past which
#: the run counts as leaking. A coarse guard: the WAL that never started over grew RSS in
#: steps of ~4 MiB, 0.24 MiB a minute by this measure over its first 7.5 minutes; the run
#: after the fix, 0.04. The WAL's own size is the sharper check.
RSS_SLOPE_LIMIT = 0.2


@dataclass
class Samples:
    #: (seconds since the load began, RSS MiB of each process by name, storage MiB)
    points: list[tuple[float, dict[str, float], float]] = field(default_factory=list)

    def growth_second_half(self, name: str) -> float:
        """A process's RSS growth over the second half in MiB per minute, leaving out its
        largest single step between two samples: a leak grows at every sample, while a
        cache that fills once or retention's pass (deletes, then a compaction) is one step.
        The first soak with the WAL fix had RSS flat for 10 minutes but for one step of
        4.2 MiB during retention's pass, which a least-squares slope counted as 0.27
        MiB/min."""
        if not self.points:
            return 0.0
        end = self.points[-1][0]
        half = [(t, rss[name]) for t, rss, _ in self.points if t >= end / 2]
        if len(half) < 3:
            return 0.0
        steps = [b - a for (_, a), (_, b) in itertools.pairwise(half)]
        grown = half[-1][1] - half[0][1] - max(0.0, *steps)
        return grown / (half[-1][0] - half[0][0]) * 60


@dataclass
class Served:
    """What the load goes to and what the samples watch."""

    bench: Bench
    #: (name, pid, log) of every process serving.
    processes: list[tuple[str, int, Path]]
    #: Embedded: the SQLite WAL, whose size is sampled and checked.
    wal: Path | None = None
    #: Scale-out: the PostgreSQL database, whose size is sampled and printed.
    database_url: str | None = None

    async def storage_mib(self) -> float:
        if self.wal is not None:
            return self.wal.stat().st_size / 2**20 if self.wal.exists() else 0.0
        assert self.database_url is not None
        rows = await _pg_fetch(self.database_url, "SELECT pg_database_size(current_database())")
        return int(rows[0][0]) / 2**20


@contextlib.contextmanager
def _embedded(args: argparse.Namespace, workdir: Path) -> Iterator[Served]:
    bench = Bench(args, workdir)
    command = [_ipaas_command(), "serve", "--port", str(bench.port)]
    log = workdir / "server.log"
    with _process(command, env=bench.server_env(), log=log) as server:
        _wait_http(f"http://127.0.0.1:{bench.port}/readyz", server, "ipaas serve")
        wal = bench.db_path.with_name(bench.db_path.name + "-wal")
        yield Served(bench, [("server", server.pid, log)], wal=wal)


@contextlib.contextmanager
def _scale_out(args: argparse.Namespace, workdir: Path) -> Iterator[Served]:
    down = services_down(args)
    if down is not None:
        raise SystemExit(f"soak: --scale-out needs PostgreSQL and Redis: {down}")
    with scratch_database(args, f"ipaas_soak_{os.getpid()}") as database_url:
        bench = ScaleOutBench(args, workdir, database_url)
        with bench.serving(args.scale_out) as processes:
            served = [(name, process.pid, log) for name, process, log in processes]
            yield Served(bench, served, database_url=database_url)


async def _load(
    port: int,
    workflow_id: str,
    seconds: float,
    rate: float,
    connections: int,
    latencies: list[float],
) -> tuple[int, int]:
    """Webhooks at ``rate`` a second for ``seconds``; (sent, not answered 202). Each
    answer's latency (ms) goes to ``latencies``, which the sampler empties."""
    host = f"127.0.0.1:{port}"
    path = f"/api/webhooks/{workflow_id}"
    sent = refused = 0

    async def connection(k: int) -> None:
        nonlocal sent, refused
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.perf_counter()
        n = 0
        try:
            while time.perf_counter() - start < seconds:
                due = start + n * connections / rate
                if (pause := due - time.perf_counter()) > 0:
                    await asyncio.sleep(pause)
                began = time.perf_counter()
                writer.write(loadgen.json_post(path, {"n": n, "k": k, "t": time.time()}, host=host))
                await writer.drain()
                status, _, _ = await loadgen.read_response(reader)
                latencies.append((time.perf_counter() - began) * 1000)
                sent += 1
                refused += status != 202
                n += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(k) for k in range(connections)))
    return sent, refused


async def _sample(
    served: Served,
    standin: httpx.AsyncClient,
    seconds: float,
    every: float,
    latencies: list[float],
) -> Samples:
    samples = Samples()
    start = time.perf_counter()
    storage = "WAL" if served.wal is not None else "database"
    while (elapsed := time.perf_counter() - start) < seconds:
        rss = {name: rss_mib(pid)[0] for name, pid, _ in served.processes}
        storage_mib = await served.storage_mib()
        delivered = (await standin.get("/_standin/stats")).json()["slack_messages"]
        samples.points.append((elapsed, rss, storage_mib))
        window, latencies[:] = sorted(latencies), []
        intake = (
            f"intake {len(window) / every if elapsed else 0:5.0f}/s "
            f"p99 {loadgen.percentile(window, 0.99):6.1f} max {window[-1]:6.1f} ms  "
            if window
            else ""
        )
        print(
            f"  {elapsed:6.0f} s  RSS {' '.join(f'{v:6.1f}' for v in rss.values())} MiB  "
            f"{storage} {storage_mib:6.1f} MiB  {intake}delivered {delivered}",
            flush=True,
        )
        await asyncio.sleep(every)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0, help="webhooks a second")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting, as IPAAS_NAME (e.g. --set retention_interval_s=60)",
    )
    parser.add_argument(
        "--scale-out",
        type=int,
        default=0,
        metavar="WORKERS",
        help="1 API + WORKERS worker processes on PostgreSQL + Redis instead of the embedded "
        "server (a new database beside --postgres-url's, dropped after)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "IPAAS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("IPAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args(argv)
    args.warmup = args.requests = 0  # what Bench reads and the soak does not use
    seconds = args.minutes * 60
    serve = _scale_out if args.scale_out else _embedded
    with (
        tempfile.TemporaryDirectory(prefix="ipaas-soak-") as tmp,
        StandinProcess() as standin,
    ):
        with serve(args, Path(tmp)) as served:
            bench = served.bench
            bench.standin_http = httpx.Client(base_url=standin.url, timeout=60)
            workflow_id = bench.setup_workflow(standin.url, bench.signup())
            names = ", ".join(f"{name} {pid}" for name, pid, _ in served.processes)
            print(
                f"soak: {args.rate:.0f} webhooks/s over {args.connections} connections for "
                f"{args.minutes:g} min; RSS of {names}",
                flush=True,
            )

            async def run() -> tuple[tuple[int, int], Samples]:
                latencies: list[float] = []
                async with httpx.AsyncClient(base_url=standin.url, timeout=60) as client:
                    load = _load(
                        bench.port, workflow_id, seconds, args.rate, args.connections, latencies
                    )
                    sampled = _sample(served, client, seconds, args.every, latencies)
                    return await asyncio.gather(load, sampled)

            (sent, refused), samples = asyncio.run(run())
            accepted = sent - refused
            deadline = time.monotonic() + 120
            delivered = 0
            while time.monotonic() < deadline:
                delivered = bench.standin().get("/_standin/stats").json()["slack_messages"]
                if delivered >= accepted:
                    break
                time.sleep(0.5)
            rss_end = {name: rss_mib(pid) for name, pid, _ in served.processes}
            storage_end = asyncio.run(served.storage_mib())
        # After the processes exited: their logs are complete.
        errors = sum(
            '"level":"error"' in line
            for _, _, log in served.processes
            for line in log.read_text().splitlines()
        )
    report = Report(sent, refused, accepted - delivered, errors, rss_end, storage_end)
    return report.print(samples, wal=served.wal is not None)


@dataclass
class Report:
    sent: int
    refused: int
    missing: int
    errors: int
    #: (RSS, peak RSS) of each process at the end, MiB.
    rss_end: dict[str, tuple[float, float]]
    storage_end: float

    def print(self, samples: Samples, *, wal: bool) -> int:
        storage_most = max((mib for _, _, mib in samples.points), default=0.0)
        checks: list[tuple[str, object, bool]] = [
            (f"webhooks sent {self.sent:,}, not answered 202", self.refused, self.refused == 0),
            ("deliveries missing at the end", self.missing, self.missing <= 0),
            ("error lines in the logs", self.errors, self.errors == 0),
        ]
        if wal:
            checks.append(
                (
                    f"largest WAL, MiB (limit {WAL_LIMIT_MIB:.0f})",
                    f"{storage_most:.1f}",
                    storage_most <= WAL_LIMIT_MIB,
                )
            )
        else:  # printed, not checked: it depends on retention and on PostgreSQL's vacuum
            start = samples.points[0][2] if samples.points else 0.0
            print(f"\ndatabase {start:.1f} MiB at the start, {self.storage_end:.1f} at the end")
        print()
        for name, (rss, peak) in self.rss_end.items():
            start = samples.points[0][1][name] if samples.points else 0.0
            print(
                f"{name}: RSS {start:.1f} MiB at the start, {rss:.1f} at the end (peak {peak:.1f})"
            )
            slope = samples.growth_second_half(name)
            checks.append(
                (
                    f"{name}: RSS growth over the second half but its largest step, MiB/min "
                    f"(limit {RSS_SLOPE_LIMIT})",
                    f"{slope:+.2f}",
                    slope <= RSS_SLOPE_LIMIT,
                )
            )
        for what, value, ok in checks:
            print(f"  {what}: {value}  {'ok' if ok else 'NOT OK'}")
        return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
