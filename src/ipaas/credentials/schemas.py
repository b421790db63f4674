from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from ipaas.credentials.models import CredentialType
from ipaas.kit.http import check_header_lines, check_header_token
from ipaas.kit.inputs import Input, LeftOutKeeps
from ipaas.kit.text import Name
from ipaas.workflows.models import HEADER_PATTERN

WHSEC_PREFIX = "whsec_"


class _Secret(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlackSecret(_Secret):
    webhook_url: AnyHttpUrl | None = None
    bot_token: str | None = Field(default=None, min_length=8)

    _header_token = field_validator("bot_token")(check_header_token)

    @model_validator(mode="after")
    def _one_of(self) -> SlackSecret:
        if (self.webhook_url is None) == (self.bot_token is None):
            msg = "give exactly one of webhook_url or bot_token"
            raise ValueError(msg)
        return self


class DiscordSecret(_Secret):
    webhook_url: AnyHttpUrl


def _joinable(value: AnyHttpUrl | None) -> AnyHttpUrl | None:
    """A ``base_url`` paths are joined to: with a query or a fragment, each path would
    land after them (found by hand: ``https://api.example.com/v1?key=x`` made
    ``.../v1?key=x/orders``, and every call went to ``/v1``)."""
    if value is not None and (value.query or value.fragment):
        msg = "base_url is joined to each path: give it without a query (?...) or fragment (#...)"
        raise ValueError(msg)
    return value


class OpenWeatherSecret(_Secret):
    api_key: str = Field(min_length=1)
    base_url: AnyHttpUrl | None = None

    _joinable = field_validator("base_url")(_joinable)


class BasicAuth(_Secret):
    username: str
    password: str

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        # RFC 7617, 2: the first colon ends the user-id. Before, "a:b" logged in as "a",
        # with the password after it.
        if ":" in value:
            msg = "a Basic auth username cannot hold a colon (:)"
            raise ValueError(msg)
        return value


class OAuth2Settings(_Secret):
    """OAuth 2.0 (``engine.connectors.oauth2``): the access token is asked of ``token_url``
    with the client's id and secret, kept until shortly before it expires, and sent as
    ``Authorization: Bearer``. ``client_credentials`` (RFC 6749, 4.4): the client's own
    access, for APIs one server calls for another. ``authorization_code`` (4.1): a user's
    account, connected once through ``authorize_url`` (``POST
    /api/credentials/{id}/oauth2/authorize``) or with a ``refresh_token`` got elsewhere;
    its tokens are kept in the secret and renewed with the refresh token."""

    grant_type: Literal["client_credentials", "authorization_code"] = "client_credentials"
    token_url: AnyHttpUrl
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    #: Space-separated scopes (Microsoft Graph: ``https://graph.microsoft.com/.default``).
    scope: str | None = Field(default=None, min_length=1)
    #: The API the token is for, where the server asks for it (Auth0).
    audience: str | None = Field(default=None, min_length=1)
    #: How the client authenticates to the token endpoint: HTTP Basic (RFC 6749, 2.3.1:
    #: every server supports it) or ``client_id`` and ``client_secret`` in the form body.
    client_auth: Literal["basic", "body"] = "basic"
    #: ``authorization_code``: the provider's consent page the user is sent to.
    authorize_url: AnyHttpUrl | None = None
    #: ``authorization_code``: more parameters of the consent page's URL (Google wants
    #: ``access_type=offline`` for a refresh token, and ``prompt=consent`` to give it again).
    authorize_params: dict[str, str] | None = None
    #: ``authorization_code``: a refresh token got elsewhere, instead of connecting here.
    refresh_token: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _fits_grant(self) -> OAuth2Settings:
        given = [
            name
            for name in ("authorize_url", "authorize_params", "refresh_token")
            if getattr(self, name) is not None
        ]
        if self.grant_type == "client_credentials" and given:
            msg = f"{' and '.join(given)}: only for grant_type authorization_code"
            raise ValueError(msg)
        if self.grant_type == "authorization_code":
            if self.authorize_url is None and self.refresh_token is None:
                msg = (
                    "grant_type authorization_code needs an authorize_url (to connect an "
                    "account here) or a refresh_token"
                )
                raise ValueError(msg)
            reserved = _AUTHORIZE_OWN & set(self.authorize_params or ())
            if reserved:
                msg = f"authorize_params cannot set {', '.join(sorted(reserved))}: set here"
                raise ValueError(msg)
        return self


#: The consent page's parameters the connect flow sets itself (RFC 6749 4.1.1, RFC 7636).
_AUTHORIZE_OWN = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    }
)


class OutboundSigning(_Secret):
    """Signs each call's body (``engine.connectors.signing``), so the receiver can tell it
    came from here, unchanged: Standard Webhooks' three headers, or one HMAC-SHA256 header
    (GitHub's ``X-Hub-Signature-256: sha256=<hex>`` unless ``header``, ``prefix`` and
    ``encoding`` say otherwise)."""

    scheme: Literal["standard_webhooks", "hmac_sha256"]
    #: Standard Webhooks: ``whsec_`` and base64 (24 to 64 bytes), as Svix makes them.
    secret: str = Field(min_length=8, max_length=512)
    header: str | None = Field(default=None, pattern=HEADER_PATTERN)
    prefix: str | None = Field(default=None, max_length=32)
    encoding: Literal["hex", "base64"] | None = None

    @model_validator(mode="after")
    def _fits_scheme(self) -> OutboundSigning:
        if self.scheme == "standard_webhooks":
            given = [n for n in ("header", "prefix", "encoding") if getattr(self, n) is not None]
            if given:
                msg = f"{' and '.join(given)}: only for scheme hmac_sha256"
                raise ValueError(msg)
            try:
                key = base64.b64decode(self.secret.removeprefix(WHSEC_PREFIX), validate=True)
            except ValueError:
                key = b""
            if not 24 <= len(key) <= 64:
                msg = "a Standard Webhooks secret is whsec_ and 24 to 64 bytes in base64"
                raise ValueError(msg)
        elif self.prefix is not None and not self.prefix.isprintable():
            msg = "prefix must be printable text"
            raise ValueError(msg)
        return self


#: The fields of an ``http`` credential that put authorization on a call: at most one.
_AUTHORIZATIONS = ("bearer_token", "basic", "oauth2")


class HttpSecret(_Secret):
    base_url: AnyHttpUrl | None = None
    headers: dict[str, str] | None = None
    #: Query parameters added to every call (an API key sent as ``?api_key=``); a step's
    #: ``query`` with the same name replaces one.
    query: dict[str, str] | None = None
    bearer_token: str | None = Field(default=None, min_length=1)
    basic: BasicAuth | None = None
    oauth2: OAuth2Settings | None = None
    #: Signs each call's body for its receiver.
    signing: OutboundSigning | None = None

    _header_token = field_validator("bearer_token")(check_header_token)
    _joinable = field_validator("base_url")(_joinable)

    @field_validator("headers")
    @classmethod
    def _one_line(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_header_lines(value)

    @field_validator("query")
    @classmethod
    def _named(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and any(not name.strip() for name in value):
            msg = "a query parameter needs a name"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> HttpSecret:
        # Before, both were stored, and every step with the credential failed ("keep one");
        # an Authorization among the headers was replaced without a word.
        given = [name for name in _AUTHORIZATIONS if getattr(self, name) is not None]
        if any(name.lower() == "authorization" for name in self.headers or {}):
            given.append("an Authorization header")
        if len(given) > 1:
            msg = (
                "give one of bearer_token, basic, oauth2 or an Authorization header, "
                f"not {' and '.join(given)}"
            )
            raise ValueError(msg)
        if not (given or self.base_url or self.headers or self.query or self.signing):
            msg = (
                "give at least one of base_url, headers, query, bearer_token, basic, oauth2 "
                "or signing"
            )
            raise ValueError(msg)
        return self


class WebhookSecret(_Secret):
    """A webhook signing secret. During a rotation both ``secret`` and ``previous_secret``
    verify; for Standard Webhooks it is the ``whsec_<base64>`` the sender shows.
    ``verify_token`` is the token Meta's webhooks (WhatsApp, Messenger, Instagram) send in
    their subscription check (``GET ...?hub.verify_token=``), chosen by the user."""

    secret: str = Field(min_length=8, max_length=512)
    previous_secret: str | None = Field(default=None, min_length=8, max_length=512)
    verify_token: str | None = Field(default=None, min_length=1, max_length=512)

    @field_validator("secret", "previous_secret")
    @classmethod
    def _whsec_is_base64(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(WHSEC_PREFIX):
            try:
                base64.b64decode(value.removeprefix(WHSEC_PREFIX), validate=True)
            except ValueError:
                msg = "a whsec_ secret must be base64 after the prefix"
                raise ValueError(msg) from None
        return value


SECRET_MODELS: dict[CredentialType, type[_Secret]] = {
    CredentialType.slack: SlackSecret,
    CredentialType.discord: DiscordSecret,
    CredentialType.openweather: OpenWeatherSecret,
    CredentialType.http: HttpSecret,
    CredentialType.webhook_secret: WebhookSecret,
}


class CredentialCreate(Input):
    name: Name
    type: CredentialType
    #: Write-only: validated against the type's shape, encrypted, never returned.
    secret: dict[str, Any]

    def __repr__(self) -> str:
        return f"CredentialCreate(name={self.name!r}, type={self.type.value!r}, secret='***')"


class CredentialUpdate(BaseModel):
    """A new name, a new secret (whole, of the credential's type), or both. The type
    cannot change: the workflows that use the credential were checked against it."""

    # The schema says what is accepted: at least one of the two, neither of them null.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: LeftOutKeeps[Name] = None
    #: Write-only, as at creation: replaces the whole secret.
    secret: LeftOutKeeps[dict[str, Any]] = None

    @model_validator(mode="after")
    def _something(self) -> CredentialUpdate:
        if self.name is None and self.secret is None:
            msg = "give a name, a secret or both"
            raise ValueError(msg)
        return self

    def __repr__(self) -> str:
        secret = "***" if self.secret is not None else None
        return f"CredentialUpdate(name={self.name!r}, secret={secret!r})"


class OAuth2Connection(BaseModel):
    """An ``authorization_code`` credential's connection, without its tokens."""

    connected: bool
    #: When the last access token expires (renewed before then, while it is connected).
    expires_at: datetime | None = None
    #: The scope the provider granted, when it said.
    scope: str | None = None
    #: Why the connection ended (the provider refused the refresh token): connect again.
    error: str | None = None
    #: The address to register with the provider as the redirect (callback) URI.
    redirect_uri: str


class CredentialRead(BaseModel):
    id: str
    name: str
    type: CredentialType
    created_at: datetime
    #: ``http`` credentials with ``grant_type: authorization_code`` only (else left out).
    oauth2: OAuth2Connection | None = None

    @model_serializer(mode="wrap")
    def _without_oauth2(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("oauth2") is None:
            data.pop("oauth2", None)
        return data


class AuthorizeRead(BaseModel):
    """Where to send the user to connect the credential, for ``STATE_TTL_S``."""

    authorize_url: str
    redirect_uri: str
    expires_at: datetime


class CredentialTestRead(BaseModel):
    """What testing a credential found: whether the service took it, and what it said."""

    ok: bool
    message: str


class ConnectedRead(BaseModel):
    credential_id: str
    connected: bool
    expires_at: datetime | None = None
    scope: str | None = None
