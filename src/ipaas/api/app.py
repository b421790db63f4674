"""The ASGI application: routes, errors, middleware, and the embedded worker in its lifespan."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ipaas import __version__
from ipaas.api import errors
from ipaas.api.body_deadline import BodyDeadline
from ipaas.api.deps import RuntimeDep
from ipaas.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from ipaas.api.routing import api_router
from ipaas.circuits.endpoints import router as circuits_router
from ipaas.config import Settings
from ipaas.credentials.endpoints import callback_router as oauth2_callback_router
from ipaas.credentials.endpoints import router as credentials_router
from ipaas.engine.worker import Worker
from ipaas.executions.endpoints import router as executions_router
from ipaas.executions.endpoints import stats_router
from ipaas.observability import metrics, tracing
from ipaas.observability.exporter import start_metrics
from ipaas.observability.logging import configure_logging
from ipaas.runtime import Runtime
from ipaas.tenants.endpoints import router as tenants_router
from ipaas.tenants.member_endpoints import router as members_router
from ipaas.web import add_console_routes, error_page, is_console_path
from ipaas.web import install as install_console
from ipaas.webhooks import endpoints as webhook_endpoints
from ipaas.workflows.endpoints import router as workflows_router

health = api_router(tags=["health"])


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks = {}
    for name, ping in (("store", runtime.store.ping), ("queue", runtime.queue.ping)):
        try:
            checks[name] = "ok" if await ping() else "down"
        except Exception:  # readiness reports, it never raises
            checks[name] = "down"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@health.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, runtime: RuntimeDep) -> Response:
    """This process's Prometheus metrics (workers and schedulers serve their own). Not here
    with ``IPAAS_METRICS_PORT``: it moves them off the API's port, which is public."""
    if runtime.settings.metrics_port is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND)
    body = await metrics.render(runtime.store, request.app.state.metrics_gauges)
    return Response(body, media_type=metrics.CONTENT_TYPE)


class IpaasApp(FastAPI):
    """FastAPI, with the webhook intake answered before its middleware stack."""

    intake: webhook_endpoints.IntakeFastPath | None = None
    #: What a request goes through first: ``_dispatch``, or the proxy-header rewrite
    #: around it (``trust_proxies``).
    _entry: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._entry is not None:
            await self._entry(scope, receive, send)
        else:
            await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.intake is not None:
            workflow_id = self.intake.workflow_id(scope)
            if workflow_id is not None:
                await self.intake(scope, receive, send, workflow_id)
                return
        await super().__call__(scope, receive, send)

    def trust_proxies(self, trusted: list[str]) -> None:
        """Believe ``X-Forwarded-Proto`` and ``X-Forwarded-For`` from the peers ``trusted``
        names (addresses, CIDRs, ``*``), for every request, the intake's too: the scope's
        scheme and client become what the proxy saw. granian's own rewrite (the server's,
        as uvicorn's ``ProxyHeadersMiddleware``): it takes the scheme only along with a
        client address, which every common proxy sends together."""
        from granian.utils.proxies import wrap_asgi_with_proxy_headers

        self._entry = wrap_asgi_with_proxy_headers(self._dispatch, trusted_hosts=trusted)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    workers: bool = True,
    on_started: Callable[[], None] | None = None,
) -> IpaasApp:
    """Build the app. With ``workers`` the lifespan also runs the embedded worker + reaper;
    ``on_started`` is called once everything has started (``ipaas serve``: GC settings)."""
    settings = settings or (runtime.settings if runtime else Settings())
    tracing.configure_tracing(settings)
    configure_logging(settings)
    runtime = runtime or Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        exporter = None
        try:
            await runtime.startup()
            if settings.metrics_port is not None:
                exporter = await start_metrics(runtime.store, settings.host, settings.metrics_port)
            worker = Worker(runtime) if workers else None
            app.state.worker = worker
            if worker is not None:
                await worker.start()
        except Exception as exc:
            # granian (its log off) says only "ASGI lifespan startup": ``ipaas serve`` says why.
            app.state.startup_error = exc
            if exporter is not None:
                exporter.close()
            raise
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            if exporter is not None:
                exporter.close()
                await exporter.wait_closed()
            await runtime.shutdown()
            tracing.flush_tracing()

    app = IpaasApp(
        title="Simple iPaaS",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.runtime = runtime
    app.state.metrics_gauges = metrics.StoreGauges()
    errors.install(app, errors.HtmlErrors(is_console_path, error_page))
    # The intake route is first: it is matched before every other route on the hot path.
    app.router.routes[:0] = webhook_endpoints.routes
    app.router.routes.extend(_routes())
    install_console(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            max_age=600,
        )
    deadline = BodyDeadline(settings.body_read_timeout_s)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, deadline=deadline)
    app.add_middleware(RequestIdMiddleware)
    app.intake = webhook_endpoints.IntakeFastPath(
        runtime,
        max_body_bytes=settings.max_body_bytes,
        cors=bool(settings.cors_origins),
        deadline=deadline,
    )
    if settings.forwarded_allow_ips:
        app.trust_proxies(settings.forwarded_allow_ips)
    _document_intake(app)
    return app


@functools.cache
def _routes() -> tuple[BaseRoute, ...]:
    """Every app's routes after the intake's: the API, the health checks, the console. Built
    once per process and shared by every app it makes: FastAPI builds the routes of an
    included router (their pydantic models and dependency trees) anew for each router that
    includes it, at the include and again at the first request, ~0.25 s per app on a slow
    machine, which the tests paid once per test."""
    api = api_router(prefix="/api")
    for router in (
        tenants_router,
        members_router,
        credentials_router,
        oauth2_callback_router,
        workflows_router,
        executions_router,
        stats_router,
        circuits_router,
    ):
        api.include_router(router)
    root = APIRouter()
    root.include_router(api)
    root.include_router(health)
    add_console_routes(root)
    return tuple(root.routes)


def _document_intake(app: FastAPI) -> None:
    """Add the plain-Starlette intake route to the generated OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI caches this very dict in app.openapi_schema
        schema["paths"][webhook_endpoints.PATH] = webhook_endpoints.OPENAPI_PATH
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = (
            webhook_endpoints.ERROR_SCHEMA
        )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
