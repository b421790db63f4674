from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from limits.aio.storage import MemoryStorage

from ipaas.cli import cannot_start, check_port, check_tls, main
from ipaas.config import Settings, Signup
from ipaas.errors import Unauthorized
from ipaas.kit.clock import utcnow
from ipaas.stores import create_store
from ipaas.stores.sql.migrations import alembic_config
from ipaas.stores.sql.tables import SCHEMA_REVISION
from ipaas.tenants import service as tenant_service
from ipaas.tenants.models import TenantLimits
from ipaas.tenants.throttle import LoginThrottle
from tests.conftest import TEST_KEY
from tests.contracts.conftest import POSTGRES_URL
from tests.kit.certs import self_signed


def test_migrate_then_token_create_prints_a_working_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("IPAAS_DATABASE_URL", url)
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    assert main(["migrate"]) == 0
    settings = Settings()

    async def sign_up() -> None:
        store = create_store(settings)
        await store.startup()
        try:
            await tenant_service.signup(
                store,
                email="ops@example.com",
                password="long enough pw",
                tenant_name="Ops",
                token_ttl_s=60,
                policy=Signup.open,
            )
        finally:
            await store.shutdown()

    asyncio.run(sign_up())
    capsys.readouterr()
    assert main(["token", "create", "--email", "OPS@example.com", "--name", "deploy"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("ipaas_")

    async def check() -> str:
        store = create_store(settings)
        await store.startup()
        try:
            return (await tenant_service.authenticate(store, token)).tenant_id
        finally:
            await store.shutdown()

    assert asyncio.run(check()).startswith("tn_")
    assert main(["token", "create", "--email", "nobody@example.com"]) == 1
    # A name the API would refuse is refused here too, before anything is made.
    for name, why in (("  ", "must hold something besides white space"), ("", "at least 1")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["token", "create", "--email", "ops@example.com", "--name", name])
        assert exited.value.code == 2
        assert why in capsys.readouterr().err

    tenant_id = asyncio.run(check())

    async def names() -> list[str]:
        store = create_store(settings)
        await store.startup()
        try:
            return [t.name for t in await store.list_tokens(tenant_id, now=utcnow())]
        finally:
            await store.shutdown()

    assert sorted(asyncio.run(names())) == ["deploy", "signup"]


def _migrated_tenant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite database for the CLI (``IPAAS_*`` set) with one tenant; its id."""
    monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    assert main(["migrate"]) == 0

    async def sign_up() -> str:
        store = create_store(Settings())
        await store.startup()
        try:
            tenant, _ = await tenant_service.signup(
                store,
                email="a@example.com",
                password="long enough pw",
                tenant_name="A",
                token_ttl_s=60,
                policy=Signup.open,
            )
        finally:
            await store.shutdown()
        return tenant.id

    return asyncio.run(sign_up())


def test_tenant_limits_are_set_shown_and_cleared_by_the_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPAAS_TENANT_MAX_QUEUED", "1000")
    tenant_id = _migrated_tenant(tmp_path, monkeypatch)
    capsys.readouterr()
    argv = [
        "tenant",
        "limits",
        tenant_id,
        "--rate",
        "2.5",
        "--burst",
        "20",
        "--max-concurrency",
        "4",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overrides"] == {
        "rate_limit": 2.5,
        "rate_burst": 20,
        "max_queued": None,
        "max_concurrency": 4,
    }
    assert report["effective"]["max_queued"] == 1000
    # Only the options given change; "default" clears one.
    assert main(["tenant", "limits", tenant_id, "--burst", "default", "--max-queued", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overrides"] == {
        "rate_limit": 2.5,
        "rate_burst": None,
        "max_queued": 5,
        "max_concurrency": 4,
    }
    assert report["effective"]["rate_burst"] == 3  # one second's worth of 2.5/s
    assert main(["tenant", "limits", tenant_id]) == 0
    assert json.loads(capsys.readouterr().out)["overrides"]["max_queued"] == 5
    assert main(["tenant", "limits", "tn_missing", "--rate", "1"]) == 1
    with pytest.raises(SystemExit):
        main(["tenant", "limits", tenant_id, "--rate", "-1"])
    with pytest.raises(SystemExit):
        main(["tenant", "limits", tenant_id, "--burst", "lots"])


def test_tenant_limits_out_of_bounds_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by hand on PostgreSQL: ``--burst 99999999999`` was a traceback (its INTEGER is
    32 bits), and ``--rate 1e-300`` made a rate-limit window of 10**300 seconds."""
    tenant_id = _migrated_tenant(tmp_path, monkeypatch)

    async def set_old_limits() -> None:
        store = create_store(Settings())
        await store.startup()
        try:
            # As an older version allowed: beyond today's bounds, still within SQLite's.
            old = TenantLimits.model_construct(
                rate_limit=None, rate_burst=2**40, max_queued=None, max_concurrency=None
            )
            assert await store.set_tenant_limits(tenant_id, old)
        finally:
            await store.shutdown()

    asyncio.run(set_old_limits())
    capsys.readouterr()
    for option, value, says in (
        ("--burst", "99999999999", "less than or equal to 2147483647"),
        ("--max-queued", "2147483648", "less than or equal to 2147483647"),
        ("--max-concurrency", "1e12", "less than or equal to 2147483647"),
        ("--rate", "1e-300", "greater than or equal to"),
        ("--rate", "2e6", "less than or equal to"),
        # Was pydantic's dump of several lines with a link: a whole number is asked for.
        ("--burst", "0.5", "got a number with a fractional part"),
        ("--max-queued", "2.7", "got a number with a fractional part"),
    ):
        assert main(["tenant", "limits", tenant_id, option, value]) == 2, (option, value)
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"ipaas tenant limits: {option} {float(value)!r}: "), line
        assert line.endswith("; nothing changed"), line
        assert says in line, line
    # The old value reads as stored and does not stop another change, or its own.
    assert main(["tenant", "limits", tenant_id, "--max-concurrency", "2147483647"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overrides"]["rate_burst"] == 2**40
    assert report["overrides"]["max_concurrency"] == 2147483647
    assert main(["tenant", "limits", tenant_id, "--burst", "default", "--rate", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overrides"] == {
        "rate_limit": 0.5,
        "rate_burst": None,
        "max_queued": None,
        "max_concurrency": 2147483647,
    }
    monkeypatch.setenv("IPAAS_TENANT_RATE_BURST", "2147483648")
    with pytest.raises(SystemExit) as refused:
        main(["tenant", "limits", tenant_id])
    assert "IPAAS_TENANT_RATE_BURST: Input should be less than or equal to 2147483647" in str(
        refused.value
    )


def _python(script: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter (nothing imported yet, as in ``ipaas serve``) with
    the store at ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")}
    env |= {
        "IPAAS_DATABASE_URL": url,
        "IPAAS_SECRET_KEY": TEST_KEY,
        "IPAAS_DATA_DIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def _migrate_in_a_child(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``_start_migration`` and its wait, then the Alembic modules the process holds
    afterwards."""
    script = (
        "import sys\n"
        "from ipaas.cli import _start_migration\n"
        "from ipaas.config import Settings\n"
        "_start_migration(Settings())()\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'alembic'))\n"
    )
    return _python(script, url, tmp_path)


def test_serve_migrates_in_a_child_and_never_imports_alembic_itself(tmp_path: Path) -> None:
    result = _migrate_in_a_child(f"sqlite+aiosqlite:///{tmp_path}/a.db", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    with contextlib.closing(sqlite3.connect(tmp_path / "a.db")) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
        assert db.execute("SELECT count(*) FROM execution").fetchone() == (0,)


def test_a_failed_migration_stops_serve_with_the_cause(tmp_path: Path) -> None:
    missing = tmp_path / "no such dir" / "a.db"
    result = _migrate_in_a_child(f"sqlite+aiosqlite:///{missing}", tmp_path)
    assert result.returncode == 1
    assert "unable to open database file" in result.stderr  # the child's traceback
    assert "the schema migration failed (exit status 1); nothing was served" in result.stderr
    assert result.stdout == ""


def _serve_until_it_exits(
    data_dir: Path, db: Path, port: int, **env: str
) -> subprocess.CompletedProcess[str]:
    """``ipaas serve`` on ``db``, for a start that must fail: what it printed, and its code."""
    return subprocess.run(
        [sys.executable, "-m", "ipaas.cli", "serve", "--port", str(port)],
        env={
            **os.environ,
            "IPAAS_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "IPAAS_SECRET_KEY": TEST_KEY,
            "IPAAS_DATA_DIR": str(data_dir),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_stops_on_a_failed_migration_without_listening(tmp_path: Path) -> None:
    """``ipaas serve`` builds its app while the child migrates: a failed migration still
    stops it before it listens, with the cause."""
    missing = tmp_path / "no such dir" / "a.db"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _serve_until_it_exits(tmp_path, missing, port)
    assert result.returncode == 1
    assert "unable to open database file" in result.stderr
    assert "the schema migration failed (exit status 1); nothing was served" in result.stderr
    assert "worker_started" not in result.stdout + result.stderr  # the lifespan never ran
    assert "Traceback" not in result.stderr  # the cause is one line (TestUnreachableDatabase)


class TestUnreachableDatabase:
    """``ipaas migrate`` (and the migration ``serve`` starts) on a database it cannot open:
    one line saying which and why, the password masked. Before, a traceback of 60-140
    lines."""

    def _migrate(self, monkeypatch: pytest.MonkeyPatch, url: str) -> str:
        monkeypatch.setenv("IPAAS_DATABASE_URL", url)
        with pytest.raises(SystemExit) as exited:
            main(["migrate"])
        return str(exited.value.code)

    def test_postgresql_that_does_not_answer(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # nothing listens there once it is closed
        message = self._migrate(
            monkeypatch, f"postgresql+asyncpg://ipaas:hunter2@127.0.0.1:{port}/ipaas"
        )
        assert message.startswith(
            f"ipaas: cannot open the database postgresql+asyncpg://ipaas:***@127.0.0.1:{port}"
            "/ipaas: "
        )
        assert "Connect call failed" in message
        assert "hunter2" not in message

    def test_sqlite_in_a_directory_that_does_not_exist(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        missing = tmp_path / "no such dir"
        message = self._migrate(monkeypatch, f"sqlite+aiosqlite:///{missing}/a.db")
        assert message == (
            f"ipaas: cannot open the database sqlite+aiosqlite:///{missing}/a.db: unable to "
            f"open database file (the directory {missing} does not exist)"
        )


class TestStartWithoutMigrating:
    """The processes that do not migrate (``worker``, ``scheduler``, ``serve --no-migrate``
    and the operator commands) on a database they cannot use: a worker on a database that
    was never created ended in a traceback; on an unmigrated one it logged a traceback a
    second for each failed claim; ``serve --no-migrate`` said only "ASGI lifespan
    startup". A process that waits for the migration is in tests/test_runtime.py."""

    def _run(self, tmp_path: Path, url: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ipaas.cli", *argv],
            env={
                **os.environ,
                "IPAAS_DATABASE_URL": url,
                "IPAAS_SECRET_KEY": TEST_KEY,
                "IPAAS_DATA_DIR": str(tmp_path),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )

    @pytest.mark.parametrize(
        "argv", [("worker",), ("scheduler",), ("serve", "--no-migrate", "--port", "0")]
    )
    def test_a_database_it_cannot_open_is_one_line(
        self, tmp_path: Path, argv: tuple[str, ...]
    ) -> None:
        missing = tmp_path / "no such dir"
        result = self._run(tmp_path, f"sqlite+aiosqlite:///{missing}/a.db", *argv)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"ipaas: cannot open the database sqlite+aiosqlite:///{missing}/a.db: unable to "
            f"open database file (the directory {missing} does not exist)"
        )

    @pytest.mark.postgres
    @pytest.mark.skipif(not POSTGRES_URL, reason="IPAAS_TEST_POSTGRES_URL is not set")
    def test_a_postgresql_database_that_does_not_exist_is_one_line(self, tmp_path: Path) -> None:
        assert POSTGRES_URL is not None
        url = sa.make_url(POSTGRES_URL).set(database="ipaas_no_such_db")
        rendered = url.render_as_string(hide_password=False)
        result = self._run(tmp_path, rendered, "worker")
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"ipaas: cannot open the database {url.render_as_string(hide_password=True)}: "
            'database "ipaas_no_such_db" does not exist'
        )

    def test_an_operator_command_on_an_unmigrated_database_says_to_migrate(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
        with pytest.raises(SystemExit) as exited:
            main(["token", "create", "--email", "ops@example.com"])
        assert exited.value.code == (
            f"ipaas: the database has no schema; this version of ipaas needs {SCHEMA_REVISION}: "
            "run `ipaas migrate` (`ipaas serve` without --no-migrate runs it too)"
        )

    def test_any_other_failed_start_of_serve_is_logged_with_its_cause(
        self, logs: list[MutableMapping[str, Any]]
    ) -> None:
        failure = RuntimeError("the broker said no")
        assert cannot_start(Settings(), failure) == (
            "ipaas serve: cannot start: RuntimeError: the broker said no"
        )
        assert [(line["event"], line["exc_info"]) for line in logs] == [("startup_failed", failure)]


class TestPortTaken:
    """``ipaas serve`` on a port another server holds. granian listens with ``SO_REUSEPORT``,
    so a second ``ipaas serve`` was let in beside the first and took part of its
    connections, answering them from its own database; on a port held without it, the
    start ended in a Rust backtrace after the migration."""

    @pytest.mark.parametrize("reuse_port", [True, False], ids=["granian-like", "plain"])
    def test_serve_exits_before_it_migrates(self, tmp_path: Path, reuse_port: bool) -> None:
        with socket.socket() as taken:
            if reuse_port:
                taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = _serve_until_it_exits(tmp_path, tmp_path / "ipaas.db", port)
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "ipaas.db").exists()  # nothing migrated

    def test_a_taken_metrics_port_stops_serve_before_it_migrates(self, tmp_path: Path) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            metrics_port = taken.getsockname()[1]
            with socket.socket() as free:
                free.bind(("127.0.0.1", 0))
                port = free.getsockname()[1]
            result = _serve_until_it_exits(
                tmp_path, tmp_path / "ipaas.db", port, IPAAS_METRICS_PORT=str(metrics_port)
            )
        assert result.returncode == 1
        assert (
            f"cannot listen on 127.0.0.1:{metrics_port}: Address already in use. Is another "
            "server running there? Stop it, or set IPAAS_METRICS_PORT to a free port."
        ) in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "ipaas.db").exists()  # nothing migrated

    def test_a_port_a_server_just_left_is_free(self) -> None:
        # The closed connections of a server that just stopped (TIME_WAIT on its port) do
        # not keep its restart out. Its listener had SO_REUSEADDR, as granian's has.
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port)) as client:
                accepted, _ = listener.accept()
                accepted.close()  # the server's side closes first: TIME_WAIT on its port
                client.recv(1)
        check_port(Settings(host="127.0.0.1", port=port))  # nothing raised


class TestSettings:
    """Wrong settings stop every command with a line each. Before, pydantic's traceback,
    which showed each value as given: IPAAS_DATABASE_URL's password, IPAAS_SECRET_KEY."""

    @pytest.mark.parametrize(
        ("given", "used"),
        [
            ("postgres://u:p@db:5432/ipaas", "postgresql+asyncpg://u:p@db:5432/ipaas"),
            ("postgresql://u@db/ipaas", "postgresql+asyncpg://u@db/ipaas"),
            ("postgresql+asyncpg://u@db/ipaas", "postgresql+asyncpg://u@db/ipaas"),
            ("sqlite:///./ipaas.db", "sqlite+aiosqlite:///./ipaas.db"),
            ("sqlite+aiosqlite:////var/lib/ipaas.db", "sqlite+aiosqlite:////var/lib/ipaas.db"),
            ("memory://", "memory://"),
        ],
    )
    def test_the_database_urls_hosts_hand_out_are_taken(self, given: str, used: str) -> None:
        assert Settings(database_url=given).database_url == used

    def test_wrong_settings_are_one_line_each_without_their_values(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("IPAAS_DATABASE_URL", "mysql://ipaas:hunter2@db/ipaas")
        monkeypatch.setenv("IPAAS_SECRET_KEY", f"{TEST_KEY},hunter3")
        monkeypatch.setenv("IPAAS_WORKERS", "lots")
        with pytest.raises(SystemExit) as exited:
            main(["migrate"])
        assert str(exited.value.code).splitlines() == [
            "ipaas: invalid settings:",
            "  IPAAS_DATABASE_URL: unsupported scheme 'mysql': use sqlite:///path/to.db, "
            "postgresql://user:password@host:5432/db or memory://",
            "  IPAAS_SECRET_KEY: key 2 of 2 is not a Fernet key (32 bytes in URL-safe base64); "
            'make one with: python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"',
            "  IPAAS_WORKERS: Input should be a valid integer, unable to parse string as an "
            "integer",
        ]

    @pytest.mark.parametrize(
        ("name", "value", "line"),
        [
            # Served at info, silently.
            (
                "IPAAS_LOG_LEVEL",
                "verbose",
                "IPAAS_LOG_LEVEL: Input should be 'debug', 'info', 'warning', 'error' or "
                "'critical'",
            ),
            # A traceback (OverflowError) at the start of serve.
            ("IPAAS_PORT", "70000", "IPAAS_PORT: Input should be less than or equal to 65535"),
            # Durations no clock can hold. Served; every claim then failed with a traceback
            # (a deadline past any date).
            *[
                (name, value, f"{name}: Input should be less than or equal to {bound}")
                for name, value, bound in (
                    ("IPAAS_EXECUTION_TIMEOUT_S", "inf", "31536000"),
                    ("IPAAS_EXECUTION_TIMEOUT_S", "1e12", "31536000"),
                    ("IPAAS_LEASE_S", "inf", "31536000"),
                    ("IPAAS_IDEMPOTENCY_WINDOW_S", "1e300", "31536000"),
                    # The server died at its start (OverflowError in granian).
                    ("IPAAS_HEADER_READ_TIMEOUT_S", "1e300", "3600"),
                    ("IPAAS_BODY_READ_TIMEOUT_S", "inf", "3600"),
                    ("IPAAS_MAX_HEADER_BYTES", "99999999999999999999", "1048576"),
                    # A log-in's token ended past any date: a 500 at each log-in.
                    ("IPAAS_TOKEN_TTL_S", "99999999999999", "315360000"),
                    ("IPAAS_RETENTION_DAYS", "inf", "36500"),
                )
            ],
        ],
    )
    def test_a_setting_that_cannot_be_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, line: str
    ) -> None:
        monkeypatch.setenv("IPAAS_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("IPAAS_DATABASE_URL", "memory://")
        monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as exited:
            main(["migrate"])  # any command; not serve, which would serve if let through
        assert str(exited.value.code).splitlines() == ["ipaas: invalid settings:", f"  {line}"]

    def test_every_duration_setting_is_bounded(self) -> None:
        """A guard for settings added later: each ``*_s`` or ``*_days`` number has a
        maximum, so ``inf`` is refused where it is read, not where it is used."""
        unbounded = [
            name
            for name, field in Settings.model_fields.items()
            if name.endswith(("_s", "_days"))
            and not any(getattr(m, "le", None) is not None for m in field.metadata)
        ]
        assert unbounded == []

    def test_a_log_level_is_read_in_any_case(self) -> None:
        assert Settings(log_level="WARNING").log_level == "warning"

    def test_a_misspelled_setting_stops_the_command_naming_the_setting(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """pydantic ignores a variable it does not know: ``IPAAS_TENANT_RATE_LIMT=5`` served
        with no rate limit and said nothing. Its value is not shown (it may be a secret)."""
        monkeypatch.setenv("IPAAS_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("IPAAS_DATABASE_URL", "memory://")
        monkeypatch.setenv("IPAAS_TENANT_RATE_LIMT", "5")
        monkeypatch.setenv("IPAAS_SECRET_KYE", "hunter2")
        monkeypatch.setenv("ipaas_worker", "3")
        monkeypatch.setenv("IPAAS_TEST_REDIS_URL", "redis://x")  # not close to a setting
        with pytest.raises(SystemExit) as exited:
            main(["migrate"])
        assert str(exited.value.code).splitlines() == [
            "ipaas: invalid settings:",
            "  IPAAS_SECRET_KYE is not a setting; did you mean IPAAS_SECRET_KEY?",
            "  IPAAS_TENANT_RATE_LIMT is not a setting; did you mean IPAAS_TENANT_RATE_LIMIT?",
            "  ipaas_worker is not a setting; did you mean IPAAS_WORKERS?",
        ]
        for name in ("IPAAS_TENANT_RATE_LIMT", "IPAAS_SECRET_KYE", "ipaas_worker"):
            monkeypatch.delenv(name)
        assert main(["migrate"]) == 0  # the other IPAAS_ name is left alone

    @pytest.mark.parametrize(
        "url", ["redis//:hunter2@127.0.0.1:6379", "http://:hunter2@127.0.0.1:6379", "unix:///r"]
    )
    def test_a_redis_url_of_another_scheme_is_refused_without_its_password(
        self, monkeypatch: pytest.MonkeyPatch, url: str
    ) -> None:
        # Before, a traceback from redis-py's URL parser (or ours, which showed the URL).
        monkeypatch.setenv("IPAAS_REDIS_URL", url)
        with pytest.raises(SystemExit) as exited:
            main(["worker"])
        message = str(exited.value.code)
        assert message.startswith("ipaas: invalid settings:\n  IPAAS_REDIS_URL: unsupported ")
        assert "hunter2" not in message
        for taken in ("redis://:pw@host:6379/0", "rediss://host", "memory://", ""):
            assert Settings(redis_url=taken).redis_url == taken

    @pytest.mark.parametrize("key", ["", " , ", "hunter2", "c2hvcnQ=", f"{TEST_KEY},,hunter2"])
    def test_a_secret_key_that_cannot_encrypt_is_refused(self, key: str) -> None:
        # Before, accepted, and the first credential (or the start of serve) failed.
        with pytest.raises(ValueError, match="is not a Fernet key"):
            Settings(secret_key=key)

    def test_a_rotation_pair_of_keys_is_taken(self) -> None:
        pair = f"{Fernet.generate_key().decode()}, {TEST_KEY}"
        assert Settings(secret_key=pair).fernet_key == pair.encode()
        # The old key removed after `ipaas secrets rotate`, its comma left behind.
        assert Settings(secret_key=f"{TEST_KEY},").fernet_key == f"{TEST_KEY},".encode()

    def test_a_value_that_is_not_a_url_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unsupported value \\(not a URL\\)"):
            Settings(database_url="./ipaas.db")

    @pytest.mark.parametrize(
        "url",
        [
            "api.openweathermap.org",  # no scheme: every step failed at its call
            "ftp://api.example.com",
            "https://",
            "https://api.example.com:99999",
            "https://api.example.com/?appid=x",
            "https://api.example.com/#top",
            "https://user:hunter2@api.example.com",
            "https://api example.com",
        ],
    )
    def test_a_connector_base_url_that_is_not_an_http_url_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch, url: str
    ) -> None:
        monkeypatch.setenv("IPAAS_DATABASE_URL", "memory://")
        for name in ("IPAAS_SLACK_API_URL", "IPAAS_OPENWEATHER_URL"):
            with monkeypatch.context() as env:
                env.setenv(name, url)
                with pytest.raises(SystemExit) as exited:
                    main(["migrate"])
            lines = str(exited.value.code).splitlines()
            assert lines[0] == "ipaas: invalid settings:"
            assert lines[1].startswith(f"  {name} must be an http(s) URL such as https://")
            assert len(lines) == 2
            assert "hunter2" not in lines[1]

    @pytest.mark.parametrize(
        ("name", "url", "shown"),
        [
            # Found in review: the password was replaced wherever its text appeared, so a
            # password "a" showed 'https://u:***@***pi.ex***mple.com/v1'.
            (
                "IPAAS_OPENWEATHER_URL",
                "https://u:a@api.example.com/v1?x=1",
                "https://u:***@api.example.com/v1?x=1",
            ),
            (
                "IPAAS_PUBLIC_URL",
                "https://u:a@api.example.com/v1",
                "https://u:***@api.example.com/v1",
            ),
            # A stray bracket was urllib's "Invalid IPv6 URL", not the setting's own line.
            ("IPAAS_SLACK_API_URL", "http://[::1", "http://[::1"),
            ("IPAAS_PUBLIC_URL", "http://[::1/x", "http://[::1/x"),
        ],
    )
    def test_a_url_setting_is_shown_as_given_but_its_password(
        self, monkeypatch: pytest.MonkeyPatch, name: str, url: str, shown: str
    ) -> None:
        monkeypatch.setenv("IPAAS_DATABASE_URL", "memory://")
        monkeypatch.setenv(name, url)
        with pytest.raises(SystemExit) as exited:
            main(["migrate"])
        line = str(exited.value.code).splitlines()[1]
        assert line.startswith(f"  {name} must be "), line
        assert line.endswith(f", not {shown!r}"), line

    def test_a_connector_base_url_is_taken_without_its_trailing_slash(self) -> None:
        settings = Settings(
            slack_api_url=" http://127.0.0.1:9100/slack/api/ ",
            openweather_url="https://api.openweathermap.org/",
        )
        assert settings.slack_api_url == "http://127.0.0.1:9100/slack/api"
        assert settings.openweather_url == "https://api.openweathermap.org"


class TestTls:
    """``IPAAS_TLS_CERT_FILE`` / ``IPAAS_TLS_KEY_FILE`` (HTTPS served: tests/process)."""

    def test_the_two_go_together(self, tmp_path: Path) -> None:
        cert, key = self_signed(tmp_path)
        for one in ({"tls_cert_file": cert}, {"tls_key_file": key}):
            with pytest.raises(ValueError, match="set both or neither"):
                Settings(**one)
        assert Settings(tls_cert_file=cert, tls_key_file=key).tls_key_file == key

    def test_a_pair_that_does_not_load_stops_serve_first(self, tmp_path: Path) -> None:
        cert, key = self_signed(tmp_path)
        (tmp_path / "other").mkdir()
        _, other_key = self_signed(tmp_path / "other")
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("not a certificate")
        for cert_file, key_file in (
            (tmp_path / "missing.pem", key),
            (garbage, key),
            (cert, other_key),  # a key, but not this certificate's
        ):
            settings = Settings(tls_cert_file=cert_file, tls_key_file=key_file)
            with pytest.raises(SystemExit, match="cannot load IPAAS_TLS_CERT_FILE"):
                check_tls(settings)
        check_tls(Settings(tls_cert_file=cert, tls_key_file=key))  # loads: nothing raised

    def test_serve_exits_before_it_migrates(self, tmp_path: Path) -> None:
        db = tmp_path / "ipaas.db"
        result = _serve_until_it_exits(
            tmp_path,
            db,
            port=1,
            IPAAS_TLS_CERT_FILE=str(tmp_path / "missing.pem"),
            IPAAS_TLS_KEY_FILE=str(tmp_path / "missing.key"),
        )
        assert result.returncode == 1
        assert "cannot load IPAAS_TLS_CERT_FILE and IPAAS_TLS_KEY_FILE" in result.stderr
        assert "Traceback" not in result.stderr
        assert not db.exists()  # nothing migrated, nothing served


def test_what_serves_and_works_imports_no_alembic() -> None:
    """The API app, the worker and the SQL store load without Alembic (``ipaas worker`` and
    ``ipaas serve --no-migrate`` never import it); ``run_migrations`` still loads on use."""
    script = (
        "import sys\n"
        "import ipaas.api.app, ipaas.cli, ipaas.engine.worker, ipaas.runtime, ipaas.stores.sql\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'alembic'))\n"
        "from ipaas.stores.sql import run_migrations\n"
        "print(run_migrations.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.splitlines() == ["[]", "ipaas.stores.sql.migrations"]


def test_the_sqlite_store_never_loads_sqlalchemys_orm(tmp_path: Path) -> None:
    """The embedded server's store runs and the app starts without ``sqlalchemy.ext.asyncio``
    (which loads the ORM for its sessions); the PostgreSQL store imports it when built."""
    script = (
        "import asyncio, sys\n"
        "from ipaas.api.app import create_app\n"
        "from ipaas.config import Settings\n"
        "app = create_app(Settings())\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        await app.state.runtime.store.list_workflows('tn_none')\n"
        "asyncio.run(main())\n"
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith(('sqlalchemy.orm', "
        "'sqlalchemy.ext'))}))\n"
        "from ipaas.stores.sql.engine import PostgresDatabase, PoolSize\n"
        "import sqlalchemy as sa\n"
        "PostgresDatabase(sa.make_url('postgresql+asyncpg://u@127.0.0.1:1/db'), PoolSize(1))\n"
        "print('sqlalchemy.ext.asyncio' in sys.modules)\n"
    )
    url = f"sqlite+aiosqlite:///{tmp_path}/orm.db"
    migrate = "from ipaas.cli import main\nmain(['migrate'])\n"
    assert _python(migrate, url, tmp_path).returncode == 0
    result = _python(script, url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["[]", "True"]


def test_secrets_rotate_re_encrypts_every_tenants_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.fernet import Fernet

    from ipaas.credentials import service as credential_service
    from ipaas.credentials.crypto import CredentialCipher
    from ipaas.credentials.models import CredentialType
    from ipaas.credentials.schemas import CredentialCreate

    old, new, lost = (Fernet.generate_key().decode() for _ in range(3))
    monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("IPAAS_SECRET_KEY", old)
    assert main(["migrate"]) == 0
    settings = Settings()

    async def store_credentials(key: str, emails: list[str]) -> list[str]:
        store = create_store(settings)
        await store.startup()
        ids = []
        try:
            for email in emails:
                tenant, _ = await tenant_service.signup(
                    store,
                    email=email,
                    password="long enough pw",
                    tenant_name="T",
                    token_ttl_s=60,
                    policy=Signup.open,
                )
                secret = {"webhook_url": "https://hooks.slack.com/services/T/B/X"}
                data = CredentialCreate(name="slack", type=CredentialType.slack, secret=secret)
                made = await credential_service.create(
                    store, CredentialCipher(key.encode()), tenant_id=tenant.id, data=data
                )
                ids.append(made.id)
        finally:
            await store.shutdown()
        return ids

    async def decrypt_all(key: str) -> list[dict[str, object]]:
        store = create_store(settings)
        await store.startup()
        cipher = CredentialCipher(key.encode())
        try:
            return [
                cipher.decrypt(credential.secret_ciphertext)
                for tenant_id in await store.list_tenant_ids()
                for credential in await store.list_credentials(tenant_id)
            ]
        finally:
            await store.shutdown()

    asyncio.run(store_credentials(old, ["a@example.com", "b@example.com"]))
    monkeypatch.setenv("IPAAS_SECRET_KEY", f"{new},{old}")
    capsys.readouterr()
    assert main(["secrets", "rotate"]) == 0
    assert "re-encrypted 2 credential(s)" in capsys.readouterr().out
    secrets = asyncio.run(decrypt_all(new))  # the new key alone reads them all
    assert secrets == [{"webhook_url": "https://hooks.slack.com/services/T/B/X"}] * 2
    assert main(["secrets", "rotate"]) == 0
    assert (
        "re-encrypted 0 credential(s) under the first key of IPAAS_SECRET_KEY; 2 already were"
        in (capsys.readouterr().out)
    )

    (unreadable,) = asyncio.run(store_credentials(lost, ["c@example.com"]))
    assert main(["secrets", "rotate"]) == 1
    captured = capsys.readouterr()
    assert "2 already were" in captured.out
    assert f"1 credential(s) no configured key decrypts, left as they are: {unreadable}" in (
        captured.err
    )


def test_backup_copies_a_database_that_is_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    db = tmp_path / "live.db"
    monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    assert main(["migrate"]) == 0
    writer = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    # Each transaction writes two rows that must be seen together or not at all.
    writer.execute("CREATE TABLE pair (n INTEGER, side TEXT)")
    stop = threading.Event()
    committed = 0

    def write() -> None:
        nonlocal committed
        while not stop.is_set():
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO pair VALUES (?, 'a')", (committed,))
            writer.execute("INSERT INTO pair VALUES (?, 'b')", (committed,))
            writer.execute("COMMIT")
            committed += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while committed < 200:
            threading.Event().wait(0.01)
        copy = tmp_path / "copy.db"
        assert main(["backup", str(copy)]) == 0
        in_flight_after = committed
    finally:
        stop.set()
        thread.join()
        writer.close()
    out = capsys.readouterr().out
    assert f"copied the database to {copy}" in out
    assert "IPAAS_SECRET_KEY" not in out  # a key is configured: nothing to remind
    check = sqlite3.connect(copy)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        sides = dict(check.execute("SELECT side, count(*) FROM pair GROUP BY side").fetchall())
        assert sides["a"] == sides["b"] >= 200  # whole transactions only
        # ``committed`` is counted after each COMMIT: the writer may have committed one
        # more transaction than it had counted when the backup returned (seen once: 219
        # pairs beside a count of 218), never two.
        assert sides["a"] <= in_flight_after + 1
        assert check.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    finally:
        check.close()
    assert not (tmp_path / "copy.db.partial").exists()

    assert main(["backup", str(copy)]) == 1  # never over an existing file
    assert "exists; name a new file" in capsys.readouterr().err


def test_backup_refuses_postgresql_and_a_missing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("IPAAS_DATABASE_URL", "postgresql+asyncpg://u@127.0.0.1:1/db")
    assert main(["backup", str(tmp_path / "x.db")]) == 1
    assert "pg_dump" in capsys.readouterr().err
    monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/none.db")
    assert main(["backup", str(tmp_path / "x.db")]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    assert not (tmp_path / "x.db").exists()


@pytest.fixture
def migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migrated SQLite database in ``tmp_path`` for the CLI's commands."""
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/a.db")
    assert main(["migrate"]) == 0


@pytest.mark.usefixtures("migrated")
def test_backup_to_a_missing_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before, a traceback ending in "sqlite3.OperationalError: unable to open database file".
    missing = tmp_path / "no such dir"
    assert main(["backup", str(missing / "b.db")]) == 1
    assert capsys.readouterr().err == f"ipaas backup: the directory {missing} does not exist\n"


@pytest.mark.usefixtures("migrated")
def test_backup_to_a_directory_it_cannot_write_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    if os.access(read_only, os.W_OK):
        pytest.skip("this user writes anywhere (root): no read-only directory to try")
    assert main(["backup", str(read_only / "b.db")]) == 1
    assert capsys.readouterr().err.startswith(f"ipaas backup: cannot write {read_only}/b.db: ")
    assert list(read_only.iterdir()) == []


def test_backup_names_the_development_key_to_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IPAAS_SECRET_KEY", raising=False)
    monkeypatch.setenv("IPAAS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/dev.db")
    assert main(["migrate"]) == 0
    assert main(["backup", str(tmp_path / "dev-copy.db")]) == 0
    assert f"keep {tmp_path}/.ipaas-secret-key with it" in capsys.readouterr().out


def test_tenant_create_adds_a_tenant_whatever_signup_says(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """How an operator adds tenants once IPAAS_SIGNUP is ``first`` or ``closed``."""
    monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("IPAAS_SIGNUP", "closed")
    assert main(["migrate"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("owner password\n"))
    assert (
        main(["tenant", "create", "Acme Inc", "--email", "OPS@acme.com", "--password-stdin"]) == 0
    )
    out = capsys.readouterr().out.strip()
    assert out.endswith("created; ops@acme.com is its owner and logs in with that password")
    tenant_id = out.split()[1]
    monkeypatch.setattr("sys.stdin", io.StringIO("owner password\n"))
    assert main(["tenant", "create", "Other", "--email", "ops@acme.com", "--password-stdin"]) == 1
    assert "already exists; nothing created" in capsys.readouterr().err
    assert main(["tenant", "create", "", "--email", "not an email"]) == 1
    assert capsys.readouterr().err.strip() == "not a valid email or name; nothing created"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["tenant", "create", "Third", "--email", "c@acme.com", "--password-stdin"]) == 1
    assert "8 to 256 characters; nothing created" in capsys.readouterr().err

    async def log_in() -> tuple[str, list[str]]:
        store = create_store(Settings())
        await store.startup()
        try:
            token = await tenant_service.login(
                store,
                email="ops@acme.com",
                password="owner password",
                token_ttl_s=60,
                throttle=LoginThrottle(MemoryStorage()),
            )
            principal = await tenant_service.authenticate(store, token)
            return principal.tenant_id, await store.list_tenant_ids()
        finally:
            await store.shutdown()

    logged_in_to, tenants = asyncio.run(log_in())
    assert logged_in_to == tenant_id
    assert tenants == [tenant_id]


def test_user_password_resets_a_lost_password_and_ends_sessions(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("IPAAS_DATABASE_URL", url)
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    assert main(["migrate"]) == 0
    settings = Settings()

    async def with_store(fn: Any) -> Any:
        store = create_store(settings)
        await store.startup()
        try:
            return await fn(store)
        finally:
            await store.shutdown()

    async def sign_up(store: Any) -> str:
        _, token = await tenant_service.signup(
            store,
            email="ops@example.com",
            password="the lost one",
            tenant_name="Ops",
            token_ttl_s=60,
            policy=Signup.open,
        )
        return token

    session = asyncio.run(with_store(sign_up))
    capsys.readouterr()

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "password", "ops@example.com", "--password-stdin"]) == 1
    assert "8 to 256 characters" in capsys.readouterr().err
    prompts = iter(["a new password", "a typo password"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt: next(prompts))
    assert main(["user", "password", "ops@example.com"]) == 1
    assert "differ" in capsys.readouterr().err

    def end_of_input(_prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", end_of_input)  # Ctrl-D; or no terminal, no stdin
    assert main(["user", "password", "ops@example.com"]) == 1
    assert capsys.readouterr().err == (
        "no password given (--password-stdin reads stdin); nothing changed\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("a new password\n"))
    assert main(["user", "password", "nobody@example.com", "--password-stdin"]) == 1
    assert "no user" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin", io.StringIO("a new password\n"))
    assert main(["user", "password", "OPS@example.com", "--password-stdin"]) == 0
    assert (
        capsys.readouterr().out.strip() == "password of ops@example.com changed; 1 session(s) ended"
    )

    async def check(store: Any) -> None:
        with pytest.raises(Unauthorized):
            await tenant_service.authenticate(store, session)
        throttle = LoginThrottle(MemoryStorage())
        with pytest.raises(Unauthorized):
            await tenant_service.login(
                store,
                email="ops@example.com",
                password="the lost one",
                token_ttl_s=60,
                throttle=throttle,
            )
        assert await tenant_service.login(
            store,
            email="ops@example.com",
            password="a new password",
            token_ttl_s=60,
            throttle=throttle,
        )

    asyncio.run(with_store(check))
