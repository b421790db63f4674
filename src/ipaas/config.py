"""Settings: the only place that reads the environment."""

from __future__ import annotations

import base64
import binascii
import secrets
from enum import StrEnum
from functools import cached_property
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ipaas.kit.egress import parse_allow
from ipaas.kit.numbers import MAX_INT32, MAX_RATE_PER_S, MAX_TOKEN_TTL_S, MIN_RATE_PER_S
from ipaas.kit.secrets import without_password


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Signup(StrEnum):
    """Who may create a tenant with ``POST /api/auth/signup`` (and the console's page)."""

    #: Anyone who reaches the server (a hosted, many-customer server; the default).
    open = "open"
    #: Only while the server has no tenant: its operator's own, then closed.
    first = "first"
    #: Nobody: users join a tenant by invitation; operators add tenants with
    #: ``ipaas tenant create``.
    closed = "closed"


class LogFormat(StrEnum):
    json = "json"
    console = "console"


LogLevel = Literal["debug", "info", "warning", "error", "critical"]


DEV_KEY_FILE = ".ipaas-secret-key"


#: The longest a duration setting may be. Long enough for any use; short enough that every
#: date, timer and server it reaches can hold it. Found by hand: with
#: ``IPAAS_EXECUTION_TIMEOUT_S=inf`` (which reads as "never") the server served and every
#: claim failed with a traceback; with ``IPAAS_HEADER_READ_TIMEOUT_S=1e300`` it died at its
#: start.
MAX_SETTING_S = 365 * 86_400
#: The HTTP server's read timeouts, in its own milliseconds: an hour is already no guard.
MAX_READ_TIMEOUT_S = 3_600
#: A century: beyond it, a retention cut-off is before any execution there could be.
MAX_RETENTION_DAYS = 36_500


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IPAAS_", extra="ignore")

    env: Environment = Environment.development
    database_url: str = "sqlite+aiosqlite:///./ipaas.db"
    #: PostgreSQL connections per process: kept open, and opened beyond them at peaks.
    db_pool_size: int = Field(default=20, ge=1)
    db_pool_overflow: int = Field(default=0, ge=0)
    redis_url: str | None = None
    host: str = "127.0.0.1"
    #: 0: a port the system picks. Above 65535 was a traceback at the start of serve.
    port: int = Field(default=8080, ge=0, le=65535)
    #: Fernet key (urlsafe base64, 32 bytes). Unset in development: one is generated into
    #: ``data_dir`` on first run. Unset in production: refused at start-up.
    secret_key: SecretStr | None = None
    data_dir: Path = Path(".")
    workers: int = Field(default=10, ge=1, le=1000)
    queue_buffer: int = Field(default=100, ge=1)
    queue_max_depth: int | None = Field(default=None, ge=1)
    #: Per-tenant intake guard rails; ``ipaas tenant limits`` overrides them per tenant.
    #: Sustained webhooks per second per tenant (unset: no rate limit).
    tenant_rate_limit: float | None = Field(default=None, ge=MIN_RATE_PER_S, le=MAX_RATE_PER_S)
    #: Webhooks a tenant may send at once (unset: one second's worth of the rate).
    tenant_rate_burst: int | None = Field(default=None, ge=1, le=MAX_INT32)
    #: Sustained requests per second per tenant to the API with a bearer token (every
    #: ``/api/*`` route but the public ones: sign-up, log-in, webhooks), so one tenant's
    #: script cannot take the process from the others (unset: no limit). The console's
    #: pages are not counted.
    tenant_api_rate_limit: float | None = Field(default=None, ge=MIN_RATE_PER_S, le=MAX_RATE_PER_S)
    #: API requests a tenant may make at once (unset: one second's worth of the rate).
    tenant_api_rate_burst: int | None = Field(default=None, ge=1, le=MAX_INT32)
    #: Queued executions per tenant at most (unset: no per-tenant limit).
    tenant_max_queued: int | None = Field(default=None, ge=1, le=MAX_INT32)
    #: Executions of one tenant running at once, across all worker processes (the claim
    #: enforces it). Unset: 80% of ``workers`` (at least 1), so one tenant's flood leaves a
    #: fifth of an embedded server's slots to the others; scaled out, set it to about 80% of
    #: all processes' slots. 0: no cap (round-robin claiming only).
    tenant_max_concurrency: int | None = Field(default=None, ge=0, le=MAX_INT32)
    #: How long the intake trusts a counted queue depth before counting again (0: count
    #: on every webhook). Its own accepts are added at once; other processes' accepts and
    #: the workers' claims are seen at the next count.
    queue_depth_cache_s: float = Field(default=1.0, ge=0, le=MAX_SETTING_S)
    #: A repeated Idempotency-Key / webhook-id / body-path key within this time answers
    #: 200 with the first execution; after it, the key starts a new execution.
    idempotency_window_s: float = Field(default=86_400.0, gt=0, le=MAX_SETTING_S)
    execution_timeout_s: float = Field(default=300.0, gt=0, le=MAX_SETTING_S)
    step_timeout_s: float = Field(default=30.0, gt=0, le=MAX_SETTING_S)
    #: Time budget of rendering one step's templates; over it fails the step.
    template_timeout_s: float = Field(default=1.0, gt=0, le=MAX_SETTING_S)
    #: Share of a process's time one tenant's template renders may take on average (they
    #: run on the event loop); over it, that tenant's steps wait for their share to refill.
    template_tenant_share: float = Field(default=0.1, gt=0, le=1)
    #: Lease of a running execution; a worker heartbeats at a third of it.
    lease_s: float = Field(default=30.0, gt=0, le=MAX_SETTING_S)
    #: How often the reaper looks for expired leases and timed-out executions.
    reaper_interval_s: float = Field(default=5.0, gt=0, le=MAX_SETTING_S)
    #: PostgreSQL: how often workers and the scheduler look at the execution table's dead
    #: row versions, and VACUUM it once ``queue_vacuum_min_dead`` have piled up (0: never;
    #: autovacuum alone). Elsewhere nothing to do.
    queue_vacuum_interval_s: float = Field(default=2.0, ge=0, le=MAX_SETTING_S)
    queue_vacuum_min_dead: int = Field(default=5_000, ge=1)
    #: How often an idle worker polls the store for queued executions the queue did not carry.
    poll_interval_s: float = Field(default=1.0, gt=0, le=MAX_SETTING_S)
    shutdown_grace_s: float = Field(default=30.0, ge=0, le=MAX_SETTING_S)
    #: The longest a remote's ``Retry-After`` may make a step wait before its next attempt.
    retry_after_max_s: float = Field(default=300.0, ge=0, le=MAX_SETTING_S)
    #: Consecutive failures (connection errors, timeouts, 408, 429, 5xx) of one tenant's
    #: calls to one host that open its circuit.
    circuit_failure_threshold: int = Field(default=5, ge=1)
    #: How long an open circuit turns calls away before one probe may go through.
    circuit_cooldown_s: float = Field(default=30.0, gt=0, le=MAX_SETTING_S)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    #: Webhook answers that wait for their execution's result (a trigger's
    #: ``response.wait_s``) at once in one API process; beyond, a webhook gets its 202 at
    #: once (its execution runs all the same). 0: none waits.
    webhook_max_waiting: int = Field(default=200, ge=0, le=100_000)
    #: Slow-client guard: the whole request head must arrive within this time; also the
    #: keep-alive idle limit.
    header_read_timeout_s: float = Field(default=10.0, gt=0, le=MAX_READ_TIMEOUT_S)
    #: Slow-client guard: a request's body must all arrive within this time of its first
    #: read (408 ``body_timeout``, the connection closed; ``api/body_deadline.py``).
    body_read_timeout_s: float = Field(default=10.0, gt=0, le=MAX_READ_TIMEOUT_S)
    max_header_bytes: int = Field(default=65_536, ge=8192, le=1_048_576)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Where users and webhook senders reach this server when that is not where it listens
    #: (behind a reverse proxy): an origin such as ``https://hooks.example.com``. The URLs
    #: the product hands out (webhook URLs, invite links, failure alerts' links) start with
    #: it. Unset: the scheme and ``Host`` each request arrived with (alerts: no links).
    public_url: str | None = None
    #: ``ipaas serve`` speaks HTTPS itself (no proxy in front): the PEM files of the
    #: certificate chain and of its private key, both or neither; TLS 1.2 and 1.3. Only the
    #: API process reads them (``serve`` checks them before it starts).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Reverse proxies whose ``X-Forwarded-Proto`` and ``X-Forwarded-For`` are believed:
    #: addresses or CIDRs (``*``: any peer). Empty: the headers are ignored, whoever sends
    #: them. Believed, a request the proxy took over HTTPS is ``https`` here too (Secure
    #: console cookies, ``https`` URLs where ``public_url`` is unset), and the access
    #: lines' ``client`` is the address the proxy forwarded.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Exceptions to the SSRF guard (kit/egress.py): CIDRs, addresses or host names that
    #: outbound steps may reach although they are not public. Empty: public addresses only.
    egress_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Finished executions older than this are deleted (unset: none is deleted for age).
    retention_days: float | None = Field(default=30.0, gt=0, le=MAX_RETENTION_DAYS)
    #: Finished executions kept per tenant, newest first (unset: no count limit).
    retention_max_executions: int | None = Field(default=100_000, ge=1)
    #: How often workers and the scheduler prune (and, on SQLite, compact the file).
    retention_interval_s: float = Field(default=300.0, gt=0, le=MAX_SETTING_S)
    #: Failure alerts (engine/alerts.py): the least time between two alerts of one
    #: workflow's failures. The first failure after a quiet spell alerts at once; the ones
    #: after it within this time are held and sent as one alert (a digest, with their
    #: count) when it is up. 0: every failure alerts on its own.
    alert_interval_s: float = Field(default=60.0, ge=0, le=MAX_SETTING_S)
    #: ``GET /metrics`` on this port (on IPAAS_HOST): ``ipaas worker`` / ``ipaas scheduler``
    #: serve it only there (unset: not at all); ``ipaas serve`` there instead of on the
    #: API's port, which is public (unset: on the API's port).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: OpenTelemetry's own variables, unprefixed (its SDK reads the rest itself:
    #: OTEL_EXPORTER_OTLP_*, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES). Tracing is on
    #: only when OTEL_TRACES_EXPORTER is ``otlp`` or ``console``.
    otel_traces_exporter: str | None = Field(default=None, validation_alias="OTEL_TRACES_EXPORTER")
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    otel_service_name: str = Field(default="ipaas", validation_alias="OTEL_SERVICE_NAME")
    log_format: LogFormat = LogFormat.json
    log_level: LogLevel = "info"
    #: Lines below ``warning`` are written in batches at most this often (seconds), so a
    #: busy server makes one write per batch instead of one per line; a warning or error is
    #: written at once, with every line before it. 0: every line at once. A SIGKILL loses
    #: at most this much of info lines.
    log_flush_s: float = Field(default=0.1, ge=0, le=10)
    token_ttl_s: int = Field(default=7 * 24 * 3600, gt=0, le=MAX_TOKEN_TTL_S)
    #: ``open``, ``first`` or ``closed`` (``Signup``). A private server's webhook URLs are
    #: public, so its sign-up page is too: ``first`` or ``closed`` keeps strangers from
    #: making tenants of their own on it.
    signup: Signup = Signup.open
    #: Overrides of connector base URLs (tests point them at local stand-ins).
    slack_api_url: str = "https://slack.com/api"
    openweather_url: str = "https://api.openweathermap.org"

    @field_validator("database_url")
    @classmethod
    def _supported_database_url(cls, value: str) -> str:
        return database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _supported_redis_url(cls, value: str | None) -> str | None:
        if not value or value == "memory://":
            return value
        scheme, sep, _ = value.strip().partition("://")
        if not sep or scheme.lower() not in ("redis", "rediss"):
            shown = f"scheme {scheme!r}" if sep else "value (not a URL)"
            msg = (  # never the URL: it may hold a password
                f"IPAAS_REDIS_URL: unsupported {shown}: use redis://host:6379/0 or rediss:// "
                "(TLS), or leave it unset for the embedded queue"
            )
            raise ValueError(msg)
        return value.strip()

    @field_validator("secret_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_fernet_keys(value.get_secret_value())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        # Any case, as the logging module reads it. Found by hand: an unknown level
        # (``verbose``, ``warnign``) served at ``info`` and said nothing.
        return value.lower() if isinstance(value, str) else value

    @field_validator("cors_origins", "egress_allow", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _valid_cors_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for item in value:
            origin = item if item == "*" else browser_origin(item)
            if origin is None:
                # A browser's Origin is compared as it sends it: found by hand, one given as
                # https://App.example.com/ matched no browser's (the preflight was a 400),
                # and CORS stayed closed without a word.
                msg = (
                    f"IPAAS_CORS_ORIGINS: {item!r} is not an origin such as "
                    "https://app.example.com (or *)"
                )
                raise ValueError(msg)
            origins.append(origin)
        return origins

    @field_validator("egress_allow")
    @classmethod
    def _valid_egress_allow(cls, value: list[str]) -> list[str]:
        parse_allow(value)  # a typo must stop the start, not silently allow nothing
        return value

    @field_validator("public_url")
    @classmethod
    def _valid_public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        origin = _origin(value.strip())
        if origin is None:
            # The server answers at the root: a path here would name pages it does not serve.
            msg = (
                "IPAAS_PUBLIC_URL must be an origin such as https://hooks.example.com, "
                f"not {without_password(value)!r}"
            )
            raise ValueError(msg)
        return origin

    @field_validator("slack_api_url", "openweather_url")
    @classmethod
    def _valid_base_url(cls, value: str, info: ValidationInfo) -> str:
        # Found by hand: IPAAS_OPENWEATHER_URL=api.openweathermap.org (no scheme) served, and
        # every OpenWeather step failed at its call ("unsupported protocol").
        base = _base_url(value.strip())
        if base is None:
            name = f"IPAAS_{(info.field_name or '').upper()}"
            example = cls.model_fields[info.field_name or ""].default
            msg = (
                f"{name} must be an http(s) URL such as {example}, not {without_password(value)!r}"
            )
            raise ValueError(msg)
        return base

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _valid_forwarded_allow_ips(cls, value: list[str]) -> list[str]:
        for item in value:
            if item == "*":
                continue
            try:
                ip_network(item, strict=False)
            except ValueError:
                # A typo must stop the start, not silently trust nobody (or the wrong peer).
                msg = f"IPAAS_FORWARDED_ALLOW_IPS: {item!r} is not an address, a CIDR or *"
                raise ValueError(msg) from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            msg = "IPAAS_TLS_CERT_FILE and IPAAS_TLS_KEY_FILE go together: set both or neither"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.env is Environment.production and self.secret_key is None:
            msg = "IPAAS_SECRET_KEY must be set when IPAAS_ENV=production"
            raise ValueError(msg)
        return self

    @cached_property
    def fernet_key(self) -> bytes:
        """The credential encryption key; a development key is created on first use."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / DEV_KEY_FILE
        if not path.exists():
            from cryptography.fernet import Fernet

            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Fernet.generate_key())
            path.chmod(0o600)
        return path.read_bytes().strip()

    @property
    def default_tenant_concurrency(self) -> int | None:
        """The cap of a tenant without a ``max_concurrency`` override (``None``: no cap)."""
        if self.tenant_max_concurrency is None:
            return max(1, self.workers * 4 // 5)
        return self.tenant_max_concurrency or None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


#: The schemes users are handed (``postgres://`` by Heroku, Render, Railway, Fly...;
#: ``postgresql://`` and ``sqlite:///`` by SQLAlchemy's and PostgreSQL's docs), as the drivers
#: this product runs on.
_DATABASE_SCHEMES = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}
_SUPPORTED_SCHEMES = ("memory", "sqlite+aiosqlite", "postgresql+asyncpg")


def database_url(url: str) -> str:
    """``url`` on the driver this product uses for its database (``postgres://`` ->
    ``postgresql+asyncpg://``); ``ValueError`` naming only the scheme (the URL may hold a
    password) for a database it does not run on."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = _DATABASE_SCHEMES.get(scheme.lower(), scheme.lower())
    if not sep or scheme not in _SUPPORTED_SCHEMES:
        shown = f"scheme {scheme!r}" if sep else "value (not a URL)"
        msg = (
            f"IPAAS_DATABASE_URL: unsupported {shown}: use sqlite:///path/to.db, "
            "postgresql://user:password@host:5432/db or memory://"
        )
        raise ValueError(msg)
    return f"{scheme}://{rest}"


def check_fernet_keys(keys: str) -> None:
    """``ValueError`` unless ``keys`` is one or more comma-separated Fernet keys (32 bytes in
    URL-safe base64, ``Fernet.generate_key()``; empty items are skipped, as the cipher skips
    them). Says which key, never what it is."""
    parts = [key for key in keys.split(",") if key.strip()] or [""]
    for number, key in enumerate(parts, start=1):
        try:
            size = len(base64.urlsafe_b64decode(key.strip().encode()))
        except (ValueError, binascii.Error):
            size = -1
        if size != 32:
            which = f"key {number} of {len(parts)}" if len(parts) > 1 else "the key"
            msg = (
                f"IPAAS_SECRET_KEY: {which} is not a Fernet key (32 bytes in URL-safe base64); "
                'make one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"'
            )
            raise ValueError(msg)


def _base_url(url: str) -> str | None:
    """An http(s) URL with a host and nothing after its path (no query, fragment or user),
    without a trailing ``/``; else ``None``."""
    try:
        parts = urlsplit(url)  # raises on a stray bracket ("http://[::1")
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in url)
    ):
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL that is nothing more (a trailing ``/`` at
    most), else ``None``."""
    base = _base_url(url)
    if base is None or urlsplit(base).path:
        return None
    return base


def browser_origin(url: str) -> str | None:
    """``url`` as a browser sends it in ``Origin`` (lowercase host, no default port, no
    trailing ``/``), or ``None`` when it is not an origin."""
    if _origin(url) is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


def random_secret() -> str:
    return secrets.token_urlsafe(32)
