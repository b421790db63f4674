"""The URLs the product hands out (webhook URLs, invite links), absolute."""

from __future__ import annotations

from starlette.requests import Request


def public_url(request: Request, path: str) -> str:
    """``path`` (from ``/``) where users and senders reach this server: under
    ``IPAAS_PUBLIC_URL`` when set (behind a reverse proxy), else under the scheme and
    ``Host`` ``request`` arrived with (the scheme a trusted proxy forwarded, with
    ``IPAAS_FORWARDED_ALLOW_IPS``)."""
    base = request.app.state.runtime.settings.public_url or str(request.base_url).rstrip("/")
    return base + path
