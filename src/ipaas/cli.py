"""The ``ipaas`` command: serve, worker, scheduler, migrate, token create, user password,
tenant limits, backup, secrets rotate, stats."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import math
import os
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipaas.config import Settings

if TYPE_CHECKING:
    from ipaas.stores.base import Store


def _install_signals(stop: asyncio.Event) -> None:
    """SIGTERM, SIGINT and SIGHUP stop the process gracefully (intake first, then the
    running executions drain). SIGHUP's default was an abrupt exit: a closed terminal, or a
    log rotation that signals what it rotated, cut webhooks mid-request and left running
    executions to be run again after their lease."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)


#: The listening socket's queue of connections not yet accepted (``serve_app``).
LISTEN_BACKLOG = 1024
#: Requests ``ipaas serve`` works on at once (granian's backpressure).
MAX_REQUESTS_AT_ONCE = 128


async def serve_app(app: Any, settings: Settings) -> None:
    """Serve an ASGI app on embedded granian until SIGTERM/SIGINT, then stop intake and let
    the app's lifespan shut down (which drains the workers)."""
    from granian.constants import Interfaces, SSLProtocols
    from granian.errors import FatalError
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    tls: dict[str, Any] = {}
    if settings.tls_cert_file is not None:
        # TLS 1.2 too (granian's default is 1.3 only): webhook senders on older stacks
        # still connect with 1.2, which Mozilla's "intermediate" profile keeps.
        tls = {
            "ssl_cert": settings.tls_cert_file,
            "ssl_key": settings.tls_key_file,
            "ssl_protocol_min": SSLProtocols.tls12,
        }
    server = Server(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        **tls,
        http1_settings=HTTP1Settings(
            # The whole request head must arrive within this time (slow-loris guard); the
            # same limit ends idle keep-alive connections.
            header_read_timeout=int(settings.header_read_timeout_s * 1000),
            # Bounds the request head only (bodies stream past it): larger heads get 431.
            max_buffer_size=settings.max_header_bytes,
        ),
        log_enabled=False,
        # Connections not yet accepted wait in the kernel's queue: granian's 128 made a
        # burst of a few hundred new connections wait a second each for a SYN resent
        # (docs/security.md, "Body, header and connection limits"). The kernel caps it at
        # net.core.somaxconn.
        backlog=LISTEN_BACKLOG,
        # Requests in progress at once; the rest wait. granian's default follows the backlog
        # (backlog // workers): kept at what it was, which bounds the bodies held in memory
        # at once to 128 x IPAAS_MAX_BODY_BYTES.
        backpressure=MAX_REQUESTS_AT_ONCE,
    )
    stop = asyncio.Event()
    _install_signals(stop)
    serving = asyncio.create_task(server.serve())
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if stopped in done:
        server.stop()  # type: ignore[no-untyped-call]
    try:
        await serving
    except FatalError:  # the app's start failed: granian's message does not say why
        failed = getattr(app.state, "startup_error", None)
        if failed is None:
            raise
        raise SystemExit(cannot_start(settings, failed)) from None
    except RuntimeError as exc:  # granian's bind (taken since ``check_port``): a Rust error
        if "in use" not in str(exc):
            raise
        why = str(exc)
        raise SystemExit(
            _cannot_listen(settings.host, settings.port, "IPAAS_PORT (--port)", why)
        ) from None


def cannot_start(settings: Settings, exc: BaseException) -> str:
    """One line for a serving process whose start failed: the database's as for the other
    commands; anything else with its traceback logged (``startup_failed``)."""
    import structlog

    if isinstance(exc, _open_errors()):
        return _unreachable(settings.database_url, exc)
    structlog.get_logger(__name__).error("startup_failed", exc_info=exc)
    return f"ipaas serve: cannot start: {type(exc).__name__}: {exc}"


def check_tls(settings: Settings) -> None:
    """Stop ``serve`` before anything starts when its certificate and key cannot be loaded
    (a missing file, not PEM, a key that is not the certificate's), with what is wrong."""
    if settings.tls_cert_file is None:
        return
    import ssl

    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except OSError as exc:  # ssl.SSLError is one
        msg = (
            "ipaas serve: cannot load IPAAS_TLS_CERT_FILE and IPAAS_TLS_KEY_FILE "
            f"({settings.tls_cert_file}, {settings.tls_key_file}): {exc}"
        )
        raise SystemExit(msg) from None


def check_port(settings: Settings) -> None:
    """Stop ``serve`` before anything starts when its address is taken, by any process.

    granian binds one listener per worker with ``SO_REUSEPORT``, so a second ``ipaas serve``
    on a port the first holds was let in beside it: the kernel then handed each server part
    of the connections, each answering from its own database. A probe without
    ``SO_REUSEPORT`` is refused while anything listens there (``SO_REUSEADDR`` lets it past
    the closed connections of a server that just stopped). Two servers started at the same
    instant can still both pass; the check is for the usual mistake, one started while the
    other runs. The metrics' own port (``IPAAS_METRICS_PORT``) is probed too."""
    import socket

    ports = [(settings.port, "IPAAS_PORT (--port)")]
    if settings.metrics_port is not None:
        ports.append((settings.metrics_port, "IPAAS_METRICS_PORT"))
    for port, setting in ports:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                settings.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise SystemExit(_cannot_listen(settings.host, port, setting, why)) from None


def _cannot_listen(host: str, port: int, setting: str, why: str) -> str:
    return (
        f"ipaas serve: cannot listen on {host}:{port}: {why}. Is another server running "
        f"there? Stop it, or set {setting} to a free port."
    )


async def _serve(settings: Settings, *, workers: bool, migrated: Callable[[], None]) -> None:
    """Build the app while the migration runs (``migrated`` waits for it), then serve."""
    from ipaas.api.app import create_app
    from ipaas.kit.heap import settle_after_startup

    app = create_app(settings, workers=workers, on_started=settle_after_startup)
    migrated()
    await serve_app(app, settings)


def _metrics_server(
    settings: Settings, store: Any, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """``GET /metrics`` on IPAAS_METRICS_PORT for a process without the API."""
    from ipaas.observability.exporter import serve_metrics

    if settings.metrics_port is None:
        return None
    return asyncio.create_task(serve_metrics(store, settings.host, settings.metrics_port, stop))


async def _worker(settings: Settings) -> None:
    from ipaas.engine.worker import Worker
    from ipaas.kit.heap import settle_after_startup
    from ipaas.observability import tracing
    from ipaas.observability.logging import configure_logging
    from ipaas.runtime import Runtime

    tracing.configure_tracing(settings)
    configure_logging(settings)
    runtime = Runtime.build(settings)
    with _opening(settings.database_url):
        await runtime.startup()
    worker = Worker(runtime)
    stop = asyncio.Event()
    _install_signals(stop)
    await worker.start()
    exporter = _metrics_server(settings, runtime.store, stop)
    settle_after_startup()
    try:
        await stop.wait()
    finally:
        await worker.stop()
        stop.set()
        if exporter is not None:
            await exporter
        await runtime.shutdown()
        tracing.shutdown_tracing()


async def _scheduler(settings: Settings) -> None:
    """The reaper and the scheduler alone, with no executions run here: ticks and crash
    recovery go on however many workers run (workers run both loops too; that is safe)."""
    import structlog

    from ipaas.engine.clock_check import run_clock_check
    from ipaas.engine.queue_vacuum import run_queue_vacuum
    from ipaas.engine.reaper import run_reaper
    from ipaas.engine.retention import run_retention
    from ipaas.engine.scheduler import run_scheduler
    from ipaas.kit.heap import settle_after_startup
    from ipaas.observability import tracing
    from ipaas.observability.logging import configure_logging
    from ipaas.runtime import Runtime

    tracing.configure_tracing(settings)
    configure_logging(settings)
    runtime = Runtime.build(settings)
    with _opening(settings.database_url):
        await runtime.startup()
    stop = asyncio.Event()
    _install_signals(stop)
    structlog.get_logger(__name__).info("scheduler_started")
    exporter = _metrics_server(settings, runtime.store, stop)
    settle_after_startup()
    try:
        await asyncio.gather(
            run_reaper(runtime, stop),
            run_scheduler(runtime, stop),
            run_retention(runtime, stop),
            run_queue_vacuum(runtime, stop),
            run_clock_check(runtime, stop),  # it judges every worker's leases
        )
    finally:
        stop.set()
        if exporter is not None:
            await exporter
        await runtime.shutdown()
        tracing.shutdown_tracing()


@contextlib.asynccontextmanager
async def _open_store(settings: Settings) -> AsyncIterator[Store]:
    """The store alone, started and shut down: what the operator commands need (not the
    whole ``Runtime``, whose HTTP client, queue and key file they never use)."""
    from ipaas.errors import StoreUnavailable
    from ipaas.stores import create_store
    from ipaas.stores.base import SchemaBehind

    store = create_store(settings)
    with _opening(settings.database_url):
        try:
            await store.startup()
        except SchemaBehind as exc:  # an operator command does not wait for a migration
            raise SystemExit(f"ipaas: {exc}") from None
        except StoreUnavailable as exc:  # nor for the database to come back
            raise SystemExit(_unreachable(settings.database_url, exc)) from None
    try:
        yield store
    finally:
        await store.shutdown()


async def _token_create(settings: Settings, *, email: str, name: str) -> int:
    from ipaas.tenants import service as tenant_service

    async with _open_store(settings) as store:
        user = await tenant_service.user_by_email(store, email)
        if user is None:
            print(f"no user with email {email}", file=sys.stderr)
            return 1
        _, plaintext = await tenant_service.create_token(
            store, tenant_id=user.tenant_id, user_id=user.id, name=name
        )
    print(plaintext)
    return 0


def _read_new_password(from_stdin: bool, *, unchanged: str = "nothing changed") -> str | None:
    """The new password: the first line of stdin, or typed twice at a prompt (not echoed).
    ``None`` (with the reason on stderr) when it is refused."""
    from pydantic import TypeAdapter, ValidationError

    from ipaas.tenants.schemas import NewPassword

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("New password: ")
            again = getpass.getpass("Again: ")
        except EOFError:  # Ctrl-D, or no terminal and stdin at its end: was a traceback
            print(f"no password given (--password-stdin reads stdin); {unchanged}", file=sys.stderr)
            return None
        if again != password:
            print(f"the two passwords differ; {unchanged}", file=sys.stderr)
            return None
    try:
        TypeAdapter(NewPassword).validate_python(password)
    except ValidationError:
        print(f"a password has 8 to 256 characters; {unchanged}", file=sys.stderr)
        return None
    return password


async def _user_password(settings: Settings, *, email: str, from_stdin: bool) -> int:
    from ipaas.observability.logging import configure_logging
    from ipaas.tenants import service as tenant_service

    password = _read_new_password(from_stdin)
    if password is None:
        return 1
    configure_logging(settings)  # the change is logged (stderr), as the server logs it
    async with _open_store(settings) as store:
        try:
            user, ended = await tenant_service.reset_password(
                store, email=email, new_password=password
            )
        except tenant_service.UserNotFound:
            print(f"no user with email {email}", file=sys.stderr)
            return 1
    print(f"password of {user.email} changed; {ended} session(s) ended")
    return 0


async def _tenant_create(settings: Settings, *, name: str, email: str, from_stdin: bool) -> int:
    """A tenant and its owner, whatever IPAAS_SIGNUP says: how an operator adds tenants to
    a server whose sign-up is ``first`` or ``closed``."""
    from pydantic import ValidationError

    from ipaas.config import Signup
    from ipaas.errors import Conflict
    from ipaas.tenants import service as tenant_service
    from ipaas.tenants.models import canonical_email
    from ipaas.tenants.schemas import SignupCreate

    try:  # the name and email as the sign-up page checks them, before a password is asked
        SignupCreate(email=email, password="x" * 8, tenant_name=name)
    except ValidationError as exc:
        named = {"tenant_name": "name"}
        fields = [str(error["loc"][0]) for error in exc.errors()]
        print(
            f"not a valid {' or '.join(named.get(f, f) for f in fields)}; nothing created",
            file=sys.stderr,
        )
        return 1
    password = _read_new_password(from_stdin, unchanged="nothing created")
    if password is None:
        return 1
    async with _open_store(settings) as store:
        try:
            tenant, _ = await tenant_service.signup(
                store,
                email=email,
                password=password,
                tenant_name=name,
                token_ttl_s=settings.token_ttl_s,
                policy=Signup.open,
            )
        except Conflict as exc:
            print(f"{exc.message}; nothing created", file=sys.stderr)
            return 1
    print(
        f"tenant {tenant.id} created; {canonical_email(email)} is its owner and logs in with that "
        "password"
    )
    return 0


#: ``ipaas tenant limits`` options -> ``TenantLimits`` fields.
_LIMIT_OPTIONS = {
    "rate": "rate_limit",
    "burst": "rate_burst",
    "max_queued": "max_queued",
    "max_concurrency": "max_concurrency",
}


def _name(text: str) -> str:
    """A name as the API takes one (``kit.text.Name``): ``--name "  "`` made a token listed
    with no name, and ``--name ""`` one the API could not have made."""
    from ipaas.kit.text import name_error

    wrong = name_error(text)
    if wrong is not None:
        msg = f"{wrong[1]}: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return text


def _window(text: str) -> int:
    """Seconds back from now, as ``GET /api/stats?window_s=`` takes them: found by hand,
    ``--window 5`` showed the last minute and ``--window 999999`` the last day, without a
    word (the API answers 422 to both)."""
    from ipaas.executions.schemas import MAX_WINDOW_S, MIN_WINDOW_S

    try:
        value = int(text)
    except ValueError:
        msg = f"not a whole number of seconds: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not MIN_WINDOW_S <= value <= MAX_WINDOW_S:
        msg = f"must be {MIN_WINDOW_S} to {MAX_WINDOW_S:,} seconds: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _limit_value(text: str) -> float | None:
    """A positive number, or ``default`` (back to the setting's default)."""
    if text == "default":
        return None
    try:
        value = float(text)
    except ValueError:
        msg = f"not a number or 'default': {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value <= 0 or not math.isfinite(value):
        msg = f"must be positive: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


async def _tenant_limits(settings: Settings, *, tenant_id: str, changes: dict[str, Any]) -> int:
    from pydantic import ValidationError

    from ipaas.errors import NotFound
    from ipaas.tenants import service as tenant_service
    from ipaas.tenants.models import TenantLimits

    async with _open_store(settings) as store:
        try:
            if changes:
                tenant = await tenant_service.set_limits(
                    store, tenant_id=tenant_id, changes=changes
                )
            else:
                tenant = await tenant_service.get(store, tenant_id=tenant_id)
        except NotFound:
            print(f"no tenant {tenant_id}", file=sys.stderr)
            return 1
        except ValidationError as exc:
            # One line per value, named as it was given: pydantic's own text was a dump of
            # several lines with a link (``--burst 0.5``, ``--rate 1e9``).
            options = {field: option for option, field in _LIMIT_OPTIONS.items()}
            for error in exc.errors(include_url=False):
                field = str(error["loc"][0]) if error["loc"] else ""
                option = "--" + options.get(field, field).replace("_", "-")
                given = error.get("input")
                print(
                    f"ipaas tenant limits: {option} {given!r}: {error['msg']}; nothing changed",
                    file=sys.stderr,
                )
            return 2
    defaults = TenantLimits.model_construct(
        rate_limit=settings.tenant_rate_limit,
        rate_burst=settings.tenant_rate_burst,
        max_queued=settings.tenant_max_queued,
        max_concurrency=settings.default_tenant_concurrency,
    )
    effective = tenant_service.effective_limits(tenant.limits, defaults)
    report = {
        "tenant_id": tenant.id,
        "overrides": tenant.limits.model_dump(),
        "effective": effective.model_dump(),
    }
    print(json.dumps(report, indent=2))
    return 0


async def _stats(settings: Settings, *, tenant_id: str, window_s: int) -> int:
    from ipaas.executions import stats as execution_stats
    from ipaas.kit.clock import utcnow

    async with _open_store(settings) as store:
        if await store.get_tenant(tenant_id) is None:
            print(f"no tenant {tenant_id}", file=sys.stderr)
            return 1
        report = await execution_stats.for_tenant(
            store, tenant_id=tenant_id, window_s=window_s, now=utcnow()
        )
    print(report.model_dump_json(indent=2))
    return 0


async def _secrets_rotate(settings: Settings) -> int:
    from ipaas.credentials import service as credential_service
    from ipaas.credentials.crypto import CredentialCipher

    cipher = CredentialCipher(settings.fernet_key)
    async with _open_store(settings) as store:
        report = await credential_service.rotate_secrets(store, cipher)
    print(
        f"re-encrypted {report.rotated} credential(s) under the first key of IPAAS_SECRET_KEY; "
        f"{report.current} already were"
    )
    if report.undecryptable:
        ids = ", ".join(report.undecryptable)
        print(
            f"{len(report.undecryptable)} credential(s) no configured key decrypts, left as "
            f"they are: {ids}",
            file=sys.stderr,
        )
        return 1
    return 0


def _backup(settings: Settings, target: Path) -> int:
    from ipaas.config import DEV_KEY_FILE
    from ipaas.stores.sql.backup import BackupError, backup_sqlite

    try:
        size = backup_sqlite(settings.database_url, target)
    except BackupError as exc:
        print(f"ipaas backup: {exc}", file=sys.stderr)
        return 1
    print(f"copied the database to {target} ({size:,} bytes)")
    if settings.secret_key is None:
        key = settings.data_dir / DEV_KEY_FILE
        print(f"keep {key} with it: its credentials are encrypted with that key")
    return 0


def _migrate(settings: Settings) -> None:
    """Migrate the store; ``SystemExit`` with one line when the database cannot be opened or
    reached (a directory that does not exist, PostgreSQL down, a wrong password) or another
    session held a table through every attempt, where a traceback said nothing more. Any
    other failure (a migration's own) raises as it is."""
    if settings.database_url.startswith("memory"):
        return
    from ipaas.stores.sql import run_migrations
    from ipaas.stores.sql.migrations import MigrationLockBusy

    asyncio.run(_reach(settings.database_url))
    try:
        run_migrations(settings.database_url)
    except MigrationLockBusy as exc:  # said in one line: a traceback says nothing more
        raise SystemExit(f"ipaas migrate: {exc}") from None


async def _reach(database_url: str) -> None:
    """Open one connection to the database, or ``SystemExit`` saying why it cannot be.
    SQLite is opened with pysqlite itself: aiosqlite's thread, when its connect failed,
    outlived the event loop and raised there ("Event loop is closed")."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        import sqlite3

        try:
            sqlite3.connect(url.database or ":memory:").close()
        except sqlite3.Error as exc:
            raise SystemExit(_unreachable(database_url, exc)) from None
        return
    engine = create_async_engine(database_url, poolclass=sa.NullPool)
    try:
        async with engine.connect():
            pass
    except Exception as exc:  # refused, unknown host, role or database, a bad password...
        raise SystemExit(_unreachable(database_url, exc)) from None
    finally:
        await engine.dispose()


@contextlib.contextmanager
def _opening(database_url: str) -> Iterator[None]:
    """``SystemExit`` with one line when the database cannot be opened as configured (a
    directory that does not exist, an unknown database or role, a wrong password), where a
    traceback said nothing more. An outage is not one: ``Runtime`` waits it out."""
    try:
        yield
    except _open_errors() as exc:
        raise SystemExit(_unreachable(database_url, exc)) from None


def _open_errors() -> tuple[type[Exception], ...]:
    """What opening a database as configured raises when it cannot be (the drivers', through
    SQLAlchemy or SQLite's own): ``_opening`` and ``cannot_start`` say it in one line."""
    import sqlite3

    import sqlalchemy as sa

    return (sa.exc.DBAPIError, sqlite3.Error)


def _unreachable(database_url: str, exc: BaseException) -> str:
    import sqlalchemy as sa

    from ipaas.errors import StoreUnavailable

    url = sa.make_url(database_url)
    if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__  # what made it unavailable
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    message = f"ipaas: cannot open the database {url.render_as_string(hide_password=True)}: "
    message += str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        folder = Path(url.database).expanduser().resolve().parent
        if not folder.is_dir():
            message += f" (the directory {folder} does not exist)"
    return message


def _start_migration(settings: Settings) -> Callable[[], None]:
    """Start ``_migrate`` for a process that goes on to serve, and return what waits for it
    (``SystemExit`` if it failed). Where the platform forks safely (Linux) it runs in a
    forked child, so Alembic is never imported here and the server keeps ~7 MiB less for as
    long as it runs (docs/architecture.md); the server imports and builds its app meanwhile,
    on the other core, which took ~0.8 s off each start. Elsewhere, in-process, at once."""
    if sys.platform != "linux" or settings.database_url.startswith("memory"):
        _migrate(settings)  # (nothing to migrate for the memory store)
        return lambda: None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: migrate and leave without running the parent's exit handlers
        code = 1
        try:
            _migrate(settings)
            code = 0
        except SystemExit as exc:  # the database cannot be reached: said in one line
            print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def wait() -> None:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            msg = f"ipaas: the schema migration failed (exit status {code}); nothing was served"
            raise SystemExit(msg)

    return wait


def load_settings(**overrides: Any) -> Settings:
    """The settings, or ``SystemExit`` naming each wrong one and why, where pydantic's
    message also showed each value as given: a password in IPAAS_DATABASE_URL, the key in
    IPAAS_SECRET_KEY."""
    from pydantic import ValidationError

    lines = [f"  {message}" for message in misspelled_settings(os.environ)]
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_context=False, include_input=False):
            message = error["msg"].removeprefix("Value error, ")
            field = str(error["loc"][0]) if error["loc"] else ""
            name = _setting_name(field)
            if name and not message.startswith(name):
                message = f"{name}: {message}"
            lines.append(f"  {message}")
        raise SystemExit("\n".join(["ipaas: invalid settings:", *lines])) from None
    if lines:
        raise SystemExit("\n".join(["ipaas: invalid settings:", *lines]))
    return settings


def misspelled_settings(environ: Mapping[str, str]) -> list[str]:
    """A line for each ``IPAAS_`` variable that is no setting but close to one. pydantic
    ignores a variable it does not know: found by hand, ``IPAAS_TENANT_RATE_LIMT=5`` served
    with no rate limit at all, and said nothing. Other ``IPAAS_`` names (the test suite's
    ``IPAAS_TEST_POSTGRES_URL``, an operator's own) are left alone."""
    import difflib

    known = {_setting_name(field) for field in Settings.model_fields}
    plain = {name.removeprefix(_PREFIX): name for name in known}
    found = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith(_PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name.removeprefix(_PREFIX), plain, n=1, cutoff=0.8)
        if close:
            found.append(f"{variable} is not a setting; did you mean {plain[close[0]]}?")
    return found


_PREFIX = "IPAAS_"


def _setting_name(field: str) -> str:
    """The environment variable of a ``Settings`` field (``workers`` -> ``IPAAS_WORKERS``)."""
    if field not in Settings.model_fields:
        return field
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"IPAAS_{field.upper()}"


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipaas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, then serve the API (with embedded workers)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-workers", action="store_true", help="API only (scale-out mode)")
    serve.add_argument("--no-migrate", action="store_true")
    sub.add_parser("worker", help="run executions from the queue (scale-out mode)")
    scheduler_help = "run schedules and crash recovery only (scale-out mode)"
    sub.add_parser("scheduler", help=scheduler_help, description=scheduler_help)
    sub.add_parser("migrate", help="upgrade the database schema to the latest version")
    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="print a new API token for a user's tenant")
    create.add_argument("--email", required=True)
    create.add_argument("--name", type=_name, default="cli")
    user = sub.add_parser("user", help="users (operator)").add_subparsers(
        dest="action", required=True
    )
    password = user.add_parser(
        "password",
        help="set a user's password (a lost one) and end the user's sessions",
    )
    password.add_argument("email")
    password.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the new password from stdin's first line instead of a prompt",
    )
    tenant = sub.add_parser("tenant", help="tenants (operator)").add_subparsers(
        dest="action", required=True
    )
    new_tenant = tenant.add_parser(
        "create", help="add a tenant and its owner (whatever IPAAS_SIGNUP says)"
    )
    new_tenant.add_argument("name", help="the organisation's name")
    new_tenant.add_argument("--email", required=True, help="its owner's email, to log in with")
    new_tenant.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the owner's password from stdin's first line instead of a prompt",
    )
    limits = tenant.add_parser(
        "limits",
        help="show or set a tenant's intake limits (a number, or 'default' to clear)",
    )
    limits.add_argument("tenant_id")
    limits.add_argument(
        "--rate", type=_limit_value, default=argparse.SUPPRESS, help="sustained webhooks per second"
    )
    limits.add_argument(
        "--burst", type=_limit_value, default=argparse.SUPPRESS, help="webhooks at once"
    )
    limits.add_argument(
        "--max-queued", type=_limit_value, default=argparse.SUPPRESS, help="queued executions"
    )
    limits.add_argument(
        "--max-concurrency", type=_limit_value, default=argparse.SUPPRESS, help="running executions"
    )
    backup = sub.add_parser(
        "backup", help="copy the embedded SQLite database to a new file while it serves"
    )
    backup.add_argument("target", type=Path, help="the copy's path (must not exist)")
    secrets_ = sub.add_parser("secrets", help="credential encryption (operator)")
    secrets_.add_subparsers(dest="action", required=True).add_parser(
        "rotate",
        help="encrypt every credential again under the first key of IPAAS_SECRET_KEY=new,old",
    )
    stats = sub.add_parser(
        "stats", help="a tenant's executions per minute by status and duration percentiles"
    )
    stats.add_argument("tenant_id")
    stats.add_argument(
        "--window", type=_window, default=3600, help="seconds back from now (60 to 86400)"
    )
    args = parser.parse_args(argv)

    overrides = {}
    if args.command == "serve":
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    settings = load_settings(**overrides)
    match args.command:
        case "serve":
            check_tls(settings)
            check_port(settings)
            migrated = (lambda: None) if args.no_migrate else _start_migration(settings)
            _run(_serve(settings, workers=not args.no_workers, migrated=migrated))
        case "worker":
            _run(_worker(settings))
        case "scheduler":
            _run(_scheduler(settings))
        case "migrate":
            _migrate(settings)
        case "token":
            return asyncio.run(_token_create(settings, email=args.email, name=args.name))
        case "user":
            return asyncio.run(
                _user_password(settings, email=args.email, from_stdin=args.password_stdin)
            )
        case "tenant" if args.action == "create":
            return asyncio.run(
                _tenant_create(
                    settings, name=args.name, email=args.email, from_stdin=args.password_stdin
                )
            )
        case "tenant":
            # Options default to SUPPRESS: only the typed ones are attributes.
            given = {
                field: getattr(args, option)
                for option, field in _LIMIT_OPTIONS.items()
                if hasattr(args, option)
            }
            return asyncio.run(_tenant_limits(settings, tenant_id=args.tenant_id, changes=given))
        case "backup":
            return _backup(settings, args.target)
        case "secrets":
            return asyncio.run(_secrets_rotate(settings))
        case "stats":
            return asyncio.run(_stats(settings, tenant_id=args.tenant_id, window_s=args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
