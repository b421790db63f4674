"""An OAuth 2.0 authorization server's token endpoint (client credentials grant, RFC 6749
4.4 and 5) and a resource server that takes its tokens (RFC 6750).

- ``POST /oauth/token``: a form with ``grant_type=client_credentials`` (optional ``scope``,
  ``audience``); the client authenticates with HTTP Basic (id and secret form-urlencoded
  first, 2.3.1) or with ``client_id`` and ``client_secret`` in the form, not both. Answers
  ``{"access_token", "token_type": "Bearer", "expires_in"}`` with ``Cache-Control:
  no-store``; errors as section 5.2 words them: 401 ``invalid_client`` (with
  ``WWW-Authenticate``), 400 ``invalid_request``, ``unsupported_grant_type`` or
  ``invalid_scope`` (a scope holding ``forbidden``).
- ``GET /oauth/authorize``: the consent page of the authorization code grant (RFC 6749
  4.1, PKCE S256 required, RFC 7636), which consents at once: a 302 back to
  ``redirect_uri`` with ``code``, ``state`` and ``iss``, or with ``error`` (``deny``). The
  token endpoint trades a code once, for the same ``redirect_uri`` and the verifier, for an
  access token and a refresh token; ``grant_type=refresh_token`` gives a new access token
  and, rotating (the default), a new refresh token, the old one ended: using an ended one
  again revokes its whole family (Auth0's and Okta's reuse detection), ``invalid_grant``.
- ``/oauth/api/...`` (any method): 200 with what it received when the request carries a
  live token as ``Authorization: Bearer``; else 401 ``invalid_token`` (its description
  names the token) with ``WWW-Authenticate: Bearer error="invalid_token"``.
- ``POST /_standin/oauth`` ``{"revoke": true, "expires_in": N | null, "answer": {...},
  "rotate": bool, "deny": "access_denied" | null, "revoke_refresh": true}``: revoke every
  access token given so far; set the lifetime of the next ones (``null``: ``expires_in``
  left out); answer a client with ``answer`` instead of a token (a broken endpoint;
  ``null``: tokens again); rotate refresh tokens or not; refuse consent; revoke every
  refresh token.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standins.generic import ALL_METHODS, _echo
from tests.standins.routing import recorded, retry_after_header
from tests.standins.state import StandinState

CLIENT_ID = "standin-client"
#: With a space and a plus: Basic auth must form-urlencode it (RFC 6749, 2.3.1).
CLIENT_SECRET = "standin secret+1"


def _error(status: int, error: str, description: str, **headers: str) -> Response:
    body = {"error": error, "error_description": description}
    headers = {"cache-control": "no-store", **headers}
    return JSONResponse(body, status, headers=headers)


def _client(request: Request, form: dict[str, str]) -> tuple[str, str] | Response:
    """The client's id and secret, from one of the two methods, or the error to answer."""
    authorization = request.headers.get("authorization", "")
    in_body = "client_id" in form or "client_secret" in form
    if authorization:
        if in_body:
            return _error(400, "invalid_request", "more than one client authentication method")
        scheme, _, encoded = authorization.partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        client_id, colon, secret = decoded.partition(":")
        if scheme.lower() != "basic" or not colon:
            return _error(400, "invalid_request", "malformed Authorization header")
        return unquote_plus(client_id), unquote_plus(secret)
    if not in_body:
        return _error(401, "invalid_client", "no client authentication", www_authenticate="Basic")
    return form.get("client_id", ""), form.get("client_secret", "")


def routes(state: StandinState) -> list[Route]:
    async def token(request: Request, body: bytes) -> Response:
        if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            return _error(400, "invalid_request", "the body must be a urlencoded form")
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        client = _client(request, form)
        if isinstance(client, Response):
            return client
        if client != (CLIENT_ID, CLIENT_SECRET):
            return _error(
                401, "invalid_client", "Client authentication failed", www_authenticate="Basic"
            )
        grant_type = form.get("grant_type")
        refresh: str | None = None
        if grant_type == "authorization_code":
            redeemed = state.oauth_redeem(
                form.get("code", ""), form.get("redirect_uri", ""), form.get("code_verifier", "")
            )
            if redeemed is None:
                return _error(400, "invalid_grant", "the code is unknown, used or not yours")
            refresh, form["scope"] = redeemed
        elif grant_type == "refresh_token":
            refresh, refused = state.oauth_renew(form.get("refresh_token", ""))
            if refused:
                return _error(400, "invalid_grant", refused)
        elif grant_type != "client_credentials":
            return _error(400, "unsupported_grant_type", f"{grant_type!r} is not served")
        if "forbidden" in form.get("scope", ""):
            return _error(400, "invalid_scope", "the scope is not granted to this client")
        if state.oauth_answer is not None:
            return JSONResponse(state.oauth_answer)
        value = f"tok-{uuid.uuid4().hex}"
        expires_in = state.oauth_issue(value)
        answer: dict[str, Any] = {"access_token": value, "token_type": "Bearer"}
        if expires_in is not None:
            answer["expires_in"] = expires_in
        if "scope" in form:
            answer["scope"] = form["scope"]
        if refresh is not None:
            answer["refresh_token"] = refresh
        return JSONResponse(answer, headers={"cache-control": "no-store", "pragma": "no-cache"})

    async def authorize(request: Request, body: bytes) -> Response:
        """The consent page, consenting at once: back to ``redirect_uri`` with a code (or
        the error ``deny`` sets), the ``state``, and ``iss`` (RFC 9207), which clients
        must not mind."""
        query = request.query_params
        if query.get("client_id") != CLIENT_ID or not query.get("redirect_uri"):
            # RFC 6749, 4.1.2.1: never redirect to an unchecked URI; tell the user.
            return Response("unknown client or no redirect_uri", 400)
        back: dict[str, str] = {"state": query.get("state", ""), "iss": str(request.base_url)}
        if state.oauth_deny is not None:
            back.update(error=state.oauth_deny, error_description="The user said no")
        elif query.get("response_type") != "code":
            back["error"] = "unsupported_response_type"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            back.update(error="invalid_request", error_description="PKCE S256 is required")
        else:
            back["code"] = state.oauth_code(
                query["redirect_uri"], query["code_challenge"], query.get("scope", "")
            )
        separator = "&" if "?" in query["redirect_uri"] else "?"
        return Response(
            status_code=302,
            headers={"location": query["redirect_uri"] + separator + urlencode(back)},
        )

    async def api(request: Request, body: bytes) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not state.oauth_live(value):
            # Some servers name the token they refuse: a client must not record it.
            return JSONResponse(
                {"error": "invalid_token", "error_description": f"not a live token: {value}"},
                401,
                headers={"www-authenticate": 'Bearer error="invalid_token"'},
            )
        return _echo(request, body)

    async def control(request: Request) -> Response:
        state.oauth_configure(await request.json())
        return Response(status_code=204)

    def forced(request: Request, body: bytes, status: int, retry: float | None) -> Response:
        headers = retry_after_header(retry) if status in (429, 503) else {}
        return _error(status, "temporarily_unavailable", f"forced {status}", **headers)

    return [
        recorded(state, "oauth_token", "/oauth/token", token, forced),
        recorded(state, "oauth_api", "/oauth/api/{rest:path}", api, forced, ALL_METHODS),
        recorded(state, "oauth_authorize", "/oauth/authorize", authorize, forced, ["GET"]),
        Route("/_standin/oauth", control, methods=["POST"]),
    ]
