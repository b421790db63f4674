"""Connecting a user's account to an ``http`` credential (OAuth 2.0's authorization code
grant, RFC 6749 4.1, with PKCE, RFC 7636), and the connection as it is stored.

1. ``authorize``: the URL of the provider's consent page, whose ``state`` is this server's
   own sealed note (Fernet under ``IPAAS_SECRET_KEY``: the tenant, the credential, the
   PKCE verifier, the redirect URI, when it was made). Nothing is stored: the note is good
   for ``STATE_TTL_S``, and only this server can read or make one.
2. The user consents; the provider sends the browser to ``GET /api/oauth2/callback`` with
   a ``code`` and the ``state``. ``connect`` opens the note, trades the code (and the
   verifier, which never left this server unsealed) for tokens at the token endpoint, and
   stores them in the credential's encrypted secret (``SESSION``), where the engine renews
   them (``engine.connectors.oauth2``).

The callback carries no API token (the browser arrives from the provider): the sealed
``state`` is what names the tenant and the credential, so a callback can only connect a
credential a member of its tenant asked to connect, within the note's lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ipaas.credentials import service as credential_service
from ipaas.credentials.crypto import CredentialCipher, UndecryptableSecret
from ipaas.credentials.models import Credential, CredentialType
from ipaas.credentials.schemas import AuthorizeRead, ConnectedRead, OAuth2Connection
from ipaas.engine.connectors.base import ConnectorError, Endpoints, StepContext, merge_query
from ipaas.engine.connectors.oauth2 import (
    AUTHORIZATION_CODE,
    SESSION,
    Grant,
    TokenCache,
    post_token,
    session_of,
)
from ipaas.errors import BadRequest, Conflict, IpaasError
from ipaas.kit.http import HttpClient
from ipaas.stores.base import Store

#: How long a consent page's ``state`` is taken back: long enough to log in at the
#: provider and consent, short enough that an old link does nothing.
STATE_TTL_S = 600
#: The token endpoint's time to answer the callback's exchange of the code.
EXCHANGE_TIMEOUT_S = 30.0
#: Tries of a compare-and-set on a secret that others keep writing.
_UPDATE_TRIES = 20
CALLBACK_PATH = "/api/oauth2/callback"
#: Marks a sealed note as a consent page's state (the same key seals the secrets).
_STATE_KIND = "oauth2_state"


class NotAuthorizationCode(Conflict):
    code = "not_authorization_code"


class InvalidState(BadRequest):
    code = "invalid_state"


class ConsentRefused(BadRequest):
    code = "oauth2_denied"


class ExchangeFailed(IpaasError):
    status_code = 502
    code = "oauth2_exchange_failed"


class CredentialSessions:
    """The credentials' secrets as stored, for the engine's renewals (``Sessions``)."""

    def __init__(self, store: Store, cipher: CredentialCipher) -> None:
        self.store = store
        self.cipher = cipher

    async def load(self, tenant_id: str, credential_id: str) -> dict[str, Any] | None:
        credential = await self.store.get_credential(tenant_id, credential_id)
        return None if credential is None else self._decrypt(credential)

    async def update(
        self,
        tenant_id: str,
        credential_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        for _ in range(_UPDATE_TRIES):
            credential = await self.store.get_credential(tenant_id, credential_id)
            if credential is None:
                return None
            changed = change(self._decrypt(credential))
            if changed is None:
                return None
            if await self.store.replace_credential_secret(
                tenant_id,
                credential_id,
                old=credential.secret_ciphertext,
                new=self.cipher.encrypt(changed),
            ):
                return changed
        msg = f"credential {credential_id} kept changing while its connection was stored"
        raise ConnectorError(msg, retryable=True)

    def _decrypt(self, credential: Credential) -> dict[str, Any]:
        try:
            return self.cipher.decrypt(credential.secret_ciphertext)
        except UndecryptableSecret:
            credential_service.log_undecryptable(credential.tenant_id, [credential.id])
            msg = f"credential {credential.id} cannot be decrypted with this server's key"
            raise ConnectorError(msg, retryable=True) from None


def _authorization_code(
    credential: Credential, secret: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The credential's ``oauth2`` when it connects a user's account, else ``None``."""
    oauth2 = secret.get("oauth2") if credential.type is CredentialType.http else None
    if not isinstance(oauth2, Mapping) or oauth2.get("grant_type") != AUTHORIZATION_CODE:
        return None
    return oauth2


def _settings(credential: Credential, secret: Mapping[str, Any]) -> Mapping[str, Any]:
    """The credential's ``oauth2``, when it connects a user's account (else 409)."""
    oauth2 = _authorization_code(credential, secret)
    if oauth2 is None:
        msg = "Only an http credential with oauth2 grant_type authorization_code connects"
        raise NotAuthorizationCode(msg)
    return oauth2


def connection(
    cipher: CredentialCipher, credential: Credential, redirect_uri: str
) -> OAuth2Connection | None:
    """What a read of the credential (the API's, the console's list) shows of its
    connection, never a token; ``None`` when it connects no account, or when this server
    cannot decrypt it (logged where it is used: a read still lists it)."""
    if credential.type is not CredentialType.http:
        return None
    try:
        secret = cipher.decrypt(credential.secret_ciphertext)
    except UndecryptableSecret:
        return None
    oauth2 = _authorization_code(credential, secret)
    if oauth2 is None:
        return None
    session = secret.get(SESSION) or {}
    refresh = session.get("refresh_token") or oauth2.get("refresh_token")
    return OAuth2Connection(
        connected=bool(refresh or session.get("access_token")) and not session.get("error"),
        expires_at=_when(session.get("expires_at")),
        scope=session.get("scope"),
        error=session.get("error"),
        redirect_uri=redirect_uri,
    )


def _when(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def _challenge(verifier: str) -> str:
    """PKCE's S256 challenge of ``verifier`` (RFC 7636, 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def authorize(
    store: Store,
    cipher: CredentialCipher,
    *,
    tenant_id: str,
    credential_id: str,
    redirect_uri: str,
    now: Callable[[], float] = time.time,
) -> AuthorizeRead:
    """The consent page's URL for the credential (see the module docstring)."""
    credential = await credential_service.get(
        store, tenant_id=tenant_id, credential_id=credential_id
    )
    oauth2 = _settings(credential, credential_service.readable_secret(cipher, credential))
    if not oauth2.get("authorize_url"):
        msg = "The credential has a refresh_token but no authorize_url to connect with"
        raise NotAuthorizationCode(msg)
    verifier = secrets.token_urlsafe(48)  # 64 characters of RFC 7636's 43 to 128
    made_at = now()
    state = cipher.encrypt(
        {
            "kind": _STATE_KIND,
            "t": tenant_id,
            "c": credential_id,
            "v": verifier,
            "r": redirect_uri,
            "at": made_at,
        }
    )
    params = {
        "response_type": "code",
        "client_id": oauth2["client_id"],
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
    }
    if oauth2.get("scope"):
        params["scope"] = oauth2["scope"]
    params.update(oauth2.get("authorize_params") or {})
    return AuthorizeRead(
        authorize_url=merge_query(str(oauth2["authorize_url"]), params),
        redirect_uri=redirect_uri,
        expires_at=datetime.fromtimestamp(made_at + STATE_TTL_S, UTC),
    )


async def connect(
    store: Store,
    cipher: CredentialCipher,
    http: HttpClient,
    tokens: TokenCache,
    *,
    query: Mapping[str, str],
    now: Callable[[], float] = time.time,
) -> tuple[str, ConnectedRead]:
    """The callback: trade the code for tokens and store them; the tenant id and what the
    connection is now. Refusals raise (4xx; 502 when the token endpoint fails)."""
    note = _opened(cipher, query.get("state"), now())
    tenant_id, credential_id = note["t"], note["c"]
    if "error" in query:
        # RFC 6749, 4.1.2.1: the user said no, or the provider refused the request.
        described = query.get("error_description")
        reason = f"{query['error']}: {described}" if described else query["error"]
        raise ConsentRefused(f"The provider did not connect the account ({reason[:300]})")
    code = query.get("code")
    if not code:
        raise BadRequest("The callback has no code", code="invalid_request")
    credential = await credential_service.get(
        store, tenant_id=tenant_id, credential_id=credential_id
    )
    secret = credential_service.readable_secret(cipher, credential)
    _settings(credential, secret)
    grant = Grant.of(secret, (tenant_id, credential_id))
    assert grant is not None
    ctx = StepContext(
        http=http,
        secret=None,
        endpoints=Endpoints(),
        tenant_id=tenant_id,
        credential_id=credential_id,
        timeout_s=EXCHANGE_TIMEOUT_S,
    )
    form = {
        "grant_type": AUTHORIZATION_CODE,
        "code": code,
        "redirect_uri": note["r"],
        "code_verifier": note["v"],
    }
    try:
        answer = await post_token(grant, ctx, form)
    except ConnectorError as exc:
        said = f": {exc.remote_error}" if exc.remote_error else ""
        raise ExchangeFailed(
            f"The token endpoint did not give tokens ({exc.message}{said})"
        ) from None
    session = {**session_of(answer, now()), "connected_at": now()}

    def connected(current: dict[str, Any]) -> dict[str, Any] | None:
        return {**current, SESSION: session} if grant.same_client(current) else None

    if await CredentialSessions(store, cipher).update(tenant_id, credential_id, connected) is None:
        msg = "The credential was deleted or given another client while it was connected"
        raise Conflict(msg, code="credential_changed")
    tokens.drop(grant)
    return tenant_id, ConnectedRead(
        credential_id=credential_id,
        connected=True,
        expires_at=_when(session.get("expires_at")),
        scope=answer.scope,
    )


def _opened(cipher: CredentialCipher, state: str | None, now: float) -> dict[str, Any]:
    """The note ``authorize`` sealed into ``state``, if this server made it lately."""
    if not state:
        raise InvalidState("The callback has no state: start connecting again")
    try:
        note = cipher.decrypt(state)
    except UndecryptableSecret:
        raise InvalidState("The callback's state was not made by this server") from None
    if note.get("kind") != _STATE_KIND:
        raise InvalidState("The callback's state was not made by this server")
    if not 0 <= now - float(note.get("at", 0)) <= STATE_TTL_S:
        msg = f"The callback's state is older than {STATE_TTL_S // 60} minutes: start again"
        raise InvalidState(msg)
    return note
