"""OAuth 2.0 access tokens for ``http`` credentials: the client credentials grant (RFC 6749,
4.4) and, for a user's account, the authorization code grant (4.1) with its refresh tokens
(6).

A credential's ``oauth2`` holds a token endpoint, a client id and secret, and optionally a
scope and an audience. Before a step's call, ``TokenCache.token`` gives an access token:
the one this process holds, until shortly before it expires, else a new one asked of the
token endpoint, one request at a time per grant however many steps want it at once (a
burst of executions makes one token request, not one each). The token goes out as
``Authorization: Bearer``; it is never stored, and is scrubbed from what the step records.

A call answered 401 with a token from the cache (the server may have revoked it, or its
clock runs ahead of ours) forgets it and is made once more with a new one
(``HttpRequest.run``).

The token request goes through the steps' shared HTTP client: the egress policy, the step's
timeout and cancellation apply to it as to the call itself. Its failures fail the step as
a call's would: a timeout, a connection error, 408, 429 or 5xx can pass (retried by the
step's policy); another 4xx (``invalid_client``, ``invalid_scope``...) will not, and the
endpoint's own error text is kept.

**Authorization code** (``grant_type: authorization_code``): the user connects the
credential once, through the provider's consent page (``credentials.oauth2``), which gives
a refresh token; or pastes one got elsewhere. The connection lives in the credential's
encrypted secret (``SESSION``: the refresh token, the last access token and when it
expires), because every process must see the same one: a provider that rotates refresh
tokens invalidates the old one at each renewal, and some (Auth0, Okta) revoke the whole
connection when an old one is used again. So a renewal is made by one process at a time
for all of them: the process first reads the stored access token (another process may have
renewed it), else claims the renewal in the store (a compare-and-set on the ciphertext,
held for ``CLAIM_S``), asks the token endpoint, and stores the new tokens; the others wait
for them (``Sessions``). A refresh token the endpoint refuses (``invalid_grant``: revoked,
expired, the user's password changed) ends the connection: the steps fail saying to
connect it again, without asking the endpoint each time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus

from ipaas.engine.connectors.base import (
    ConnectorError,
    StepContext,
    error_text,
    is_retryable_status,
    response_body,
    retry_after,
    send,
)
from ipaas.kit.http import check_header_token

#: A token's lifetime when the endpoint does not say (``expires_in`` is only RECOMMENDED).
DEFAULT_LIFETIME_S = 300.0
#: A token is renewed this long before it expires (half its lifetime, if that is shorter),
#: so a call does not set out with a token that expires on the way.
RENEW_BEFORE_S = 60.0
#: Grants whose tokens one process keeps; the oldest is dropped beyond it.
MAX_GRANTS = 1024
#: The step's error code for a token the endpoint did not give.
TOKEN_ERROR = "oauth2_token"  # noqa: S105 - an error code, not a password
CLIENT_CREDENTIALS = "client_credentials"
AUTHORIZATION_CODE = "authorization_code"
#: Where an authorization code grant's connection is kept in the credential's secret.
SESSION = "oauth2_session"
#: How long a process holds the claim to renew a connection's token: past it, another
#: may (the first died, or its token request hangs).
CLAIM_S = 30.0
#: The lifetime of a token that does not expire (100 years).
NEVER_S = 100 * 365 * 86400.0
#: How often a process waiting for another's renewal reads the store again.
CLAIM_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Grant:
    """One client's credentials at one token endpoint: the cache's key. A credential whose
    secret changes is another grant, so its next call asks for a new token at once. An
    authorization code grant is also the credential's own (``credential``: tenant and
    credential ids), whose connection is in the store."""

    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    audience: str | None = None
    client_auth: str = "basic"
    grant_type: str = CLIENT_CREDENTIALS
    credential: tuple[str, str] | None = None

    @classmethod
    def of(
        cls, secret: Mapping[str, Any] | None, credential: tuple[str, str] | None = None
    ) -> Grant | None:
        """The grant of an ``http`` credential's secret, or ``None`` when it has none."""
        oauth2 = (secret or {}).get("oauth2")
        if not isinstance(oauth2, Mapping):
            return None
        grant_type = oauth2.get("grant_type", CLIENT_CREDENTIALS)
        return cls(
            token_url=str(oauth2["token_url"]),
            client_id=str(oauth2["client_id"]),
            client_secret=str(oauth2["client_secret"]),
            scope=oauth2.get("scope"),
            audience=oauth2.get("audience"),
            client_auth=oauth2.get("client_auth", "basic"),
            grant_type=grant_type,
            credential=credential if grant_type == AUTHORIZATION_CODE else None,
        )

    def __repr__(self) -> str:  # the secret never reaches a log line or a traceback
        return f"Grant(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def same_client(self, secret: Mapping[str, Any]) -> bool:
        """Whether ``secret`` (as stored now) is still this client at this endpoint: a
        connection made for another is not this one's to renew or to write."""
        oauth2 = secret.get("oauth2")
        return (
            isinstance(oauth2, Mapping)
            and oauth2.get("grant_type") == self.grant_type
            and oauth2.get("token_url") == self.token_url
            and oauth2.get("client_id") == self.client_id
        )


class Sessions(Protocol):
    """The credentials' secrets as stored (``credentials.oauth2.CredentialSessions``)."""

    async def load(self, tenant_id: str, credential_id: str) -> dict[str, Any] | None:
        """The credential's decrypted secret, ``None`` when it is gone."""

    async def update(
        self,
        tenant_id: str,
        credential_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Store ``change(secret)`` unless it is ``None``, the secret read again if another
        writer got there first; the secret stored, or ``None`` (declined, or gone)."""


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    #: ``clock()`` after which the token is renewed before use.
    renew_at: float
    #: Whether the endpoint gave it just now (``False``: read from the store).
    issued: bool = True


def _renew_in(lifetime: float) -> float:
    """How long after it is given a token is used before it is renewed."""
    return lifetime - min(RENEW_BEFORE_S, lifetime / 2)


class GrantRefused(ConnectorError):
    """The token endpoint refused the refresh token (``invalid_grant``)."""


class TokenCache:
    """The access tokens of this process's grants (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sessions: Sessions | None = None,
    ) -> None:
        self._clock = clock
        self._wall = wall
        #: Where authorization code grants' connections are; ``None``: none can be used.
        self.sessions = sessions
        self._tokens: dict[Grant, _Token] = {}
        self._asking: dict[Grant, asyncio.Task[_Token]] = {}
        #: Tokens an API refused, which a renewal must not take from the store again.
        self._refused: dict[Grant, str] = {}

    async def token(self, grant: Grant, ctx: StepContext) -> tuple[str, bool]:
        """An access token for ``grant`` and whether the endpoint gave it just now
        (``False``: from the cache, or stored by another process: a 401 may mean it was
        revoked meanwhile). ``ConnectorError`` when the endpoint gives none."""
        held = self._tokens.get(grant)
        if held is not None and self._clock() < held.renew_at:
            return held.value, False
        task = self._asking.get(grant)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(grant, ctx))
            self._asking[grant] = task
            task.add_done_callback(lambda done: self._asked(grant, done))
        # Shielded: a step cancelled while waiting does not cancel the others' request.
        token = await asyncio.shield(task)
        return token.value, token.issued

    def _asked(self, grant: Grant, task: asyncio.Task[_Token]) -> None:
        self._asking.pop(grant, None)
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have been cancelled meanwhile

    def drop(self, grant: Grant) -> None:
        """Forget ``grant``'s token (its credential was connected again)."""
        self._tokens.pop(grant, None)
        self._refused.pop(grant, None)

    def forget(self, grant: Grant, value: str) -> None:
        """Drop ``value`` (refused by the API) unless a newer token replaced it already."""
        held = self._tokens.get(grant)
        if held is not None and held.value == value:
            del self._tokens[grant]
        if grant.credential is not None:
            self._refused[grant] = value

    async def _ask(self, grant: Grant, ctx: StepContext) -> _Token:
        asked_at = self._clock()
        issued = True
        if grant.credential is None:
            value, lifetime = await request_token(grant, ctx)
            renew_in = _renew_in(lifetime)
        else:
            value, renew_in, issued = await self._renewed(grant, ctx)
        token = _Token(value, asked_at + renew_in, issued)
        self._tokens.pop(grant, None)
        self._tokens[grant] = token
        while len(self._tokens) > MAX_GRANTS:
            del self._tokens[next(iter(self._tokens))]
        return token

    async def _renewed(self, grant: Grant, ctx: StepContext) -> tuple[str, float, bool]:
        """The connection's access token, how long it is used before it is renewed, and
        whether the endpoint gave it just now: the stored one while it is fresh (and not
        refused), else a new one, renewed here or by another process (see the module
        docstring)."""
        sessions = self.sessions
        assert grant.credential is not None
        if sessions is None:
            msg = "this run cannot renew an OAuth 2.0 connection (no credential store)"
            raise ConnectorError(msg, retryable=False, code=TOKEN_ERROR)
        tenant_id, credential_id = grant.credential
        claim = uuid.uuid4().hex
        give_up_at = self._clock() + (ctx.timeout_s or CLAIM_S)
        while True:
            secret = await sessions.load(tenant_id, credential_id)
            if secret is None or not grant.same_client(secret):
                msg = f"credential {credential_id} was deleted or changed meanwhile"
                raise ConnectorError(msg, retryable=True, code=TOKEN_ERROR)
            session = secret.get(SESSION) or {}
            value = session.get("access_token")
            renew_in = float(session.get("renew_at") or 0) - self._wall()
            if value and value != self._refused.get(grant) and renew_in > 0:
                return value, renew_in, False
            refresh = _refresh_token(secret)
            if refresh is None:
                raise ConnectorError(
                    f"credential {credential_id} is not connected: connect it with POST "
                    f"/api/credentials/{credential_id}/oauth2/authorize",
                    retryable=False,
                    code=TOKEN_ERROR,
                )
            if session.get("error") and session.get("error_for") == _fingerprint(refresh):
                raise ConnectorError(
                    f"credential {credential_id}'s connection ended ({session['error']}): "
                    "connect it again",
                    retryable=False,
                    code=TOKEN_ERROR,
                )
            now = self._wall()
            claimed = _claimed(grant, claim, now, refresh, self._refused.get(grant))
            if await sessions.update(tenant_id, credential_id, claimed):
                break
            if self._clock() >= give_up_at:
                msg = "another process is renewing the OAuth 2.0 token and has not finished"
                raise ConnectorError(msg, retryable=True, code=TOKEN_ERROR)
            await asyncio.sleep(CLAIM_POLL_S)
        try:
            answer = await post_token(
                grant, ctx, {"grant_type": "refresh_token", "refresh_token": refresh}
            )
        except GrantRefused as exc:
            ended = {
                "error": exc.remote_error or "invalid_grant",
                "error_for": _fingerprint(refresh),
            }
            await sessions.update(tenant_id, credential_id, _released(grant, claim, ended))
            exc.message = (
                f"the OAuth 2.0 token endpoint refused the refresh token: credential "
                f"{credential_id}'s connection ended, connect it again"
            )
            exc.args = (exc.message,)
            raise
        except BaseException:
            await asyncio.shield(
                sessions.update(tenant_id, credential_id, _released(grant, claim, {}))
            )
            raise
        stored = session_of(answer, self._wall(), previous=refresh)
        self._refused.pop(grant, None)
        await sessions.update(tenant_id, credential_id, _released(grant, claim, stored))
        return answer.access_token, _renew_in(answer.lifetime), True


def kept_connection(old: Mapping[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (a secret replacing ``old``) with ``old``'s connection when it is still the
    same client at the same token endpoint and ``new`` gives no other refresh token: a
    rotated client secret keeps the account connected."""
    session = old.get(SESSION)
    grant = Grant.of(old)
    if not session or grant is None or not grant.same_client(new):
        return new
    given = new["oauth2"].get("refresh_token")
    if given is None or given == old["oauth2"].get("refresh_token"):
        return {**new, SESSION: session}
    return new


def _refresh_token(secret: Mapping[str, Any]) -> str | None:
    """The connection's refresh token: the one it got, else one the user gave."""
    session = secret.get(SESSION) or {}
    return session.get("refresh_token") or (secret.get("oauth2") or {}).get("refresh_token")


def _fingerprint(refresh_token: str) -> str:
    """Names a refresh token in the stored error without keeping it twice."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:16]


def _claimed(
    grant: Grant, claim: str, now: float, refresh: str, refused: str | None
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """The change that claims the renewal with ``refresh`` (the refresh token read),
    declined while another process holds it, and when another has renewed since the read:
    the stored refresh token is another (``refresh`` may have ended with that renewal, and
    using it again revokes the connection at providers that detect reuse), or the stored
    access token is fresh again (``refused``: one the API refused, which is not)."""

    def change(secret: dict[str, Any]) -> dict[str, Any] | None:
        session = dict(secret.get(SESSION) or {})
        if not grant.same_client(secret) or _refresh_token(secret) != refresh:
            return None
        fresh = session.get("access_token") not in (None, refused)
        if fresh and float(session.get("renew_at") or 0) > now:
            return None
        if session.get("claim") not in (None, claim) and session.get("claimed_until", 0) > now:
            return None
        session.update(claim=claim, claimed_until=now + CLAIM_S)
        return {**secret, SESSION: session}

    return change


def _released(
    grant: Grant, claim: str, update: Mapping[str, Any]
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """The change that stores what the renewal got (``update``) and ends its claim; declined
    when the claim is no longer this renewal's: the account was connected again meanwhile
    (a new session, which the old connection's tokens or refusal must not replace), or the
    claim ran out and another process took it."""

    def change(secret: dict[str, Any]) -> dict[str, Any] | None:
        session = dict(secret.get(SESSION) or {})
        if not grant.same_client(secret) or session.get("claim") != claim:
            return None
        if update.get("refresh_token"):
            # Renewed: an error stored for an earlier refresh token no longer applies.
            session.pop("error", None)
            session.pop("error_for", None)
        session.update(update)
        session.pop("claim", None)
        session.pop("claimed_until", None)
        return {**secret, SESSION: session}

    return change


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """A token endpoint's answer: the access token and its lifetime, and what else it
    gave (a refresh token, the scope granted)."""

    access_token: str
    lifetime: float
    refresh_token: str | None = None
    scope: str | None = None
    #: Whether the endpoint said when the token expires (``lifetime`` is a guess if not).
    expires: bool = True

    def __repr__(self) -> str:
        return f"TokenAnswer(lifetime={self.lifetime!r}, scope={self.scope!r})"


def session_of(answer: TokenAnswer, now: float, *, previous: str | None = None) -> dict[str, Any]:
    """What is stored of a token answer: the access token, when it expires (wall clock,
    which every process shares), and the refresh token (a new one, else ``previous``:
    renewals need not return one, RFC 6749 6). A token given without a lifetime or a
    refresh token (GitHub's OAuth apps) does not expire: it is used until an API refuses
    it."""
    refresh = answer.refresh_token or previous
    if not answer.expires and not refresh:
        return {"access_token": answer.access_token, "renew_at": now + NEVER_S}
    session: dict[str, Any] = {
        "access_token": answer.access_token,
        "expires_at": now + answer.lifetime,
        "renew_at": now + _renew_in(answer.lifetime),
    }
    if refresh:
        session["refresh_token"] = refresh
    if answer.scope is not None:
        session["scope"] = answer.scope
    return session


async def request_token(grant: Grant, ctx: StepContext) -> tuple[str, float]:
    """Ask the token endpoint for a client credentials grant's access token: the token and
    its lifetime in seconds."""
    form = {"grant_type": CLIENT_CREDENTIALS}
    answer = await post_token(grant, ctx, form)
    return answer.access_token, answer.lifetime


async def post_token(grant: Grant, ctx: StepContext, form: dict[str, str]) -> TokenAnswer:
    """POST ``form`` (a grant type and what it needs) to the token endpoint, with the
    client's authentication, scope and audience; its answer, checked."""
    form = dict(form)
    if grant.scope is not None and form["grant_type"] != AUTHORIZATION_CODE:
        form["scope"] = grant.scope
    if grant.audience is not None:
        form["audience"] = grant.audience
    headers = {"accept": "application/json"}
    if grant.client_auth == "body":
        form.update(client_id=grant.client_id, client_secret=grant.client_secret)
    else:
        # RFC 6749, 2.3.1: each form-urlencoded before they are joined.
        pair = f"{quote_plus(grant.client_id)}:{quote_plus(grant.client_secret)}"
        headers["authorization"] = f"Basic {base64.b64encode(pair.encode()).decode()}"
    request = ctx.http.build_request("POST", grant.token_url, headers=headers, data=form)
    response = await send(ctx, request)
    status = response.status_code
    if not 200 <= status < 300:
        body = response_body(response)
        refused = isinstance(body, dict) and _refused(form, body.get("error"))
        raise (GrantRefused if refused else ConnectorError)(
            f"the OAuth 2.0 token endpoint answered HTTP {status}",
            retryable=is_retryable_status(status),
            status_code=status,
            remote_error=error_text(response) or None,
            retry_after_s=retry_after(response),
            code=TOKEN_ERROR,
        )
    body = response_body(response)
    value = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        said = body.get("error") if isinstance(body, dict) else None
        if isinstance(said, str) and said:
            # Slack answers its refusals with 200 and {"ok": false, "error": "..."}.
            raise (GrantRefused if _refused(form, said) else ConnectorError)(
                f"the OAuth 2.0 token endpoint refused: {said}",
                retryable=False,
                status_code=status,
                remote_error=error_text(response) or None,
                code=TOKEN_ERROR,
            )
        msg = "the OAuth 2.0 token endpoint's answer holds no access_token"
        raise ConnectorError(msg, retryable=False, status_code=status, code=TOKEN_ERROR)
    try:
        check_header_token(value)
    except ValueError as exc:
        # It goes in a header: a line break would start another one.
        msg = f"the OAuth 2.0 token endpoint gave an access_token that {exc}"
        raise ConnectorError(msg, retryable=False, status_code=status, code=TOKEN_ERROR) from None
    kind = body.get("token_type", "Bearer")
    if not isinstance(kind, str) or kind.lower() not in _BEARER_TYPES:
        msg = f"the OAuth 2.0 token endpoint gave a token of type {kind!r}, not Bearer"
        raise ConnectorError(msg, retryable=False, status_code=status, code=TOKEN_ERROR)
    refresh = body.get("refresh_token")
    scope = body.get("scope")
    return TokenAnswer(
        access_token=value,
        lifetime=_lifetime(body.get("expires_in")),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        scope=scope if isinstance(scope, str) else None,
        expires="expires_in" in body,
    )


#: ``token_type`` values of tokens sent as ``Authorization: Bearer``: RFC 6750's, and
#: Slack's OAuth v2 (``oauth.v2.access``), which names a bot's token ``bot`` and a user's
#: ``user`` and documents both as Bearer tokens.
_BEARER_TYPES = frozenset({"bearer", "bot", "user"})
#: Errors that say a code or refresh token is no good (RFC 6749 5.2's ``invalid_grant``;
#: Slack's own words): the connection ends, where another error may pass.
_GRANT_ERRORS = frozenset(
    {"invalid_grant", "invalid_refresh_token", "invalid_code", "code_already_used"}
)


def _refused(form: Mapping[str, str], error: Any) -> bool:
    """Whether ``error`` refuses the code or refresh token ``form`` gave."""
    return form["grant_type"] != CLIENT_CREDENTIALS and error in _GRANT_ERRORS


def _lifetime(expires_in: Any) -> float:
    """``expires_in`` in seconds (a number, or a numeric string as some servers send it);
    ``DEFAULT_LIFETIME_S`` when it is missing or makes no sense."""
    if isinstance(expires_in, bool):
        return DEFAULT_LIFETIME_S
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME_S
    return seconds if 0 < seconds < float("inf") else DEFAULT_LIFETIME_S
