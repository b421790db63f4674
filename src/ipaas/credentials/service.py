"""Encrypted credentials: the secret goes in once and only the engine reads it back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ipaas.credentials.crypto import CredentialCipher
from ipaas.credentials.models import Credential
from ipaas.credentials.schemas import SECRET_MODELS, CredentialCreate
from ipaas.errors import NotFound, ValidationFailed
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.stores.base import Store


class CredentialNotFound(NotFound):
    code = "credential_not_found"


def _validate_secret(data: CredentialCreate) -> dict[str, Any]:
    """The secret as given, once its shape is checked (URLs are kept exactly as typed)."""
    try:
        SECRET_MODELS[data.type].model_validate(data.secret)
    except ValidationError as exc:
        # Never echo the input back: it is the secret.
        errors = [
            {"loc": ["body", "secret", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_input=False, include_url=False)
        ]
        raise ValidationFailed("Invalid secret for this credential type", details=errors) from exc
    return {k: v for k, v in data.secret.items() if v is not None}


async def create(
    store: Store, cipher: CredentialCipher, *, tenant_id: str, data: CredentialCreate
) -> Credential:
    secret = _validate_secret(data)
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


async def delete(store: Store, *, tenant_id: str, credential_id: str) -> None:
    if not await store.delete_credential(tenant_id, credential_id):
        raise CredentialNotFound("Credential not found")


async def load_secrets(
    store: Store, cipher: CredentialCipher, *, tenant_id: str, credential_ids: Sequence[str]
) -> dict[str, tuple[Credential, dict[str, Any]]]:
    """Decrypted secrets of the tenant's credentials among ``credential_ids`` (engine only)."""
    found = await store.get_credentials(tenant_id, credential_ids)
    return {cid: (cred, cipher.decrypt(cred.secret_ciphertext)) for cid, cred in found.items()}
