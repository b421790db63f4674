"""Encrypted credentials: the secret goes in once and only the engine reads it back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from ipaas.credentials.crypto import CredentialCipher, UndecryptableSecret
from ipaas.credentials.models import Credential, CredentialType
from ipaas.credentials.schemas import SECRET_MODELS, CredentialCreate, CredentialUpdate
from ipaas.engine.connectors.oauth2 import kept_connection
from ipaas.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.stores.base import Store
from ipaas.workflows.models import named

_log = structlog.get_logger(__name__)
#: Tries of a secret's compare-and-set while renewals write it.
_REPLACE_TRIES = 20


class CredentialNotFound(NotFound):
    code = "credential_not_found"


class CredentialInUse(Conflict):
    code = "credential_in_use"


def _validate_secret(kind: CredentialType, secret: dict[str, Any]) -> dict[str, Any]:
    """The secret as given, once its shape is checked (URLs are kept exactly as typed)."""
    try:
        SECRET_MODELS[kind].model_validate(secret)
    except ValidationError as exc:
        # Never echo the input back: it is the secret.
        errors = [
            {"loc": ["body", "secret", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_input=False, include_url=False)
        ]
        raise ValidationFailed("Invalid secret for this credential type", details=errors) from exc
    return {k: v for k, v in secret.items() if v is not None}


async def create(
    store: Store, cipher: CredentialCipher, *, tenant_id: str, data: CredentialCreate
) -> Credential:
    secret = _validate_secret(data.type, data.secret)
    credential = Credential(
        id=new_id("cred"),
        tenant_id=tenant_id,
        name=data.name,
        type=data.type,
        secret_ciphertext=cipher.encrypt(secret),
        created_at=utcnow(),
    )
    await store.create_credential(credential)
    return credential


async def get(store: Store, *, tenant_id: str, credential_id: str) -> Credential:
    credential = await store.get_credential(tenant_id, credential_id)
    if credential is None:
        raise CredentialNotFound("Credential not found")
    return credential


async def list_(store: Store, *, tenant_id: str) -> list[Credential]:
    return await store.list_credentials(tenant_id)


async def update(
    store: Store,
    cipher: CredentialCipher,
    *,
    tenant_id: str,
    credential_id: str,
    data: CredentialUpdate,
    forget: Callable[[str, str], None],
) -> Credential:
    """Rename the credential and/or replace its secret (checked against its type, as at
    creation). Every workflow that uses it sends the new secret from its next step on:
    ``forget(tenant_id, credential_id)`` (``Runtime.credential_changed``) drops this
    process's cached copies once it is saved; other processes keep theirs for at most 2 s
    (``SECRETS_TTL_S``, the intake's ``TTL_S``)."""
    credential = await get(store, tenant_id=tenant_id, credential_id=credential_id)
    ciphertext = None
    if data.secret is not None:
        secret = _validate_secret(credential.type, data.secret)
        ciphertext = await _replace_secret(store, cipher, credential, secret)
    if data.name is not None and not await store.update_credential(
        tenant_id, credential_id, name=data.name, secret_ciphertext=None
    ):
        raise CredentialNotFound("Credential not found")  # deleted meanwhile
    forget(tenant_id, credential_id)
    return credential.model_copy(
        update={
            "name": data.name or credential.name,
            "secret_ciphertext": ciphertext or credential.secret_ciphertext,
        }
    )


async def _replace_secret(
    store: Store, cipher: CredentialCipher, credential: Credential, secret: dict[str, Any]
) -> str:
    """Store ``secret`` as the credential's, keeping a connected account's tokens where
    they still apply (``kept_connection``): a compare-and-set on what was read, so a
    renewal that stores a new refresh token meanwhile is not undone."""
    for _ in range(_REPLACE_TRIES):
        try:
            old = cipher.decrypt(credential.secret_ciphertext)
        except UndecryptableSecret:
            old = {}
        ciphertext = cipher.encrypt(kept_connection(old, secret))
        if await store.replace_credential_secret(
            credential.tenant_id, credential.id, old=credential.secret_ciphertext, new=ciphertext
        ):
            return ciphertext
        current = await store.get_credential(credential.tenant_id, credential.id)
        if current is None:
            raise CredentialNotFound("Credential not found")  # deleted meanwhile
        credential = current
    raise Conflict("The credential kept changing: try again", code="credential_changed")


async def delete(store: Store, *, tenant_id: str, credential_id: str) -> None:
    """Refused (409) while a workflow's current version uses the credential: deleting it
    would make every run of that workflow fail, and a webhook trigger's signing secret
    would turn every delivery away. Executions of older versions that still name it fail
    with ``credential ... not found`` when they run."""
    if await store.get_credential(tenant_id, credential_id) is None:
        raise CredentialNotFound("Credential not found")
    users = [
        wf for wf in await store.list_workflows(tenant_id) if credential_id in wf.credential_ids
    ]
    if users:
        raise CredentialInUse(
            f"Credential is used by {named(users)}: change or delete those workflows first",
            details={"workflows": [{"id": wf.id, "name": wf.name} for wf in users]},
        )
    if not await store.delete_credential(tenant_id, credential_id):
        raise CredentialNotFound("Credential not found")


@dataclass(frozen=True, slots=True)
class Secrets:
    """What ``load_secrets`` found: decrypted secrets by credential id, and the ids of
    those no key of ``IPAAS_SECRET_KEY`` decrypts (a step using one fails saying so)."""

    by_id: dict[str, dict[str, Any]]
    unreadable: frozenset[str] = frozenset()


async def load_secrets(
    store: Store, cipher: CredentialCipher, *, tenant_id: str, credential_ids: Sequence[str]
) -> Secrets:
    """Decrypted secrets of the tenant's credentials among ``credential_ids`` (engine only).
    A credential that does not exist is left out; one that cannot be decrypted is named in
    ``unreadable`` and logged, with its id and the tenant's, never its ciphertext."""
    found = await store.get_credentials(tenant_id, credential_ids)
    by_id: dict[str, dict[str, Any]] = {}
    unreadable: list[str] = []
    for cid, cred in found.items():
        try:
            by_id[cid] = cipher.decrypt(cred.secret_ciphertext)
        except UndecryptableSecret:
            unreadable.append(cid)
    if unreadable:
        log_undecryptable(tenant_id, unreadable)
    return Secrets(by_id, frozenset(unreadable))


def readable_secret(cipher: CredentialCipher, credential: Credential) -> dict[str, Any]:
    """The credential's secret, or 503 ``credential_unreadable`` (logged) when no key of
    this server's ``IPAAS_SECRET_KEY`` decrypts it: the server's fault, not the caller's."""
    try:
        return cipher.decrypt(credential.secret_ciphertext)
    except UndecryptableSecret:
        log_undecryptable(credential.tenant_id, [credential.id])
        raise ServiceUnavailable(
            "The credential cannot be decrypted with this server's key (IPAAS_SECRET_KEY)",
            code="credential_unreadable",
        ) from None


def log_undecryptable(tenant_id: str, credential_ids: Sequence[str]) -> None:
    """The one error line an operator alerts on when this process's key does not decrypt a
    tenant's credentials (the steps' and the intake's alike): ids only, never ciphertext."""
    _log.error(
        "credential_undecryptable",
        tenant_id=tenant_id,
        credential_ids=list(credential_ids),
        hint="IPAAS_SECRET_KEY differs from the key they were encrypted under",
    )


@dataclass(slots=True)
class Rotation:
    """What ``rotate_secrets`` did: counts, and the ids it could not re-encrypt."""

    rotated: int = 0
    current: int = 0
    undecryptable: list[str] = field(default_factory=list)


async def rotate_secrets(store: Store, cipher: CredentialCipher) -> Rotation:
    """Encrypt every tenant's credentials again under the first key of
    ``IPAAS_SECRET_KEY`` (``new,old``), so that the old key can then be removed.

    Safe beside running processes: each replacement is a compare-and-set on the ciphertext
    read, so a secret replaced meanwhile (``PATCH``, encrypted by a process that already has
    ``new,old``: step 2 of docs/operations.md) is left as it is, and every process decrypts
    with both keys until its ``IPAAS_SECRET_KEY`` drops the old one. Running it again
    changes nothing."""
    report = Rotation()
    for tenant_id in await store.list_tenant_ids():
        for credential in await store.list_credentials(tenant_id):
            try:
                new = cipher.rotate(credential.secret_ciphertext)
            except UndecryptableSecret:
                report.undecryptable.append(credential.id)
                continue
            if new is None:
                report.current += 1
            elif await store.replace_credential_secret(
                tenant_id, credential.id, old=credential.secret_ciphertext, new=new
            ):
                report.rotated += 1
            # else: deleted or given a new secret meanwhile (under the first key already).
    return report
