"""The Store contract: one suite, run on every backend by the ``store`` fixture."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import BaseModel
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ipaas.config import Settings
from ipaas.credentials.models import Credential, CredentialType
from ipaas.executions.models import (
    Execution,
    ExecutionStatus,
    StepRun,
    StepStatus,
    TriggerData,
)
from ipaas.kit.ids import new_id
from ipaas.stores import DuplicateError, MemoryStore, Store, create_store
from ipaas.stores.base import RecentRun, SchemaBehind
from ipaas.stores.sql import SqlStore, run_migrations
from ipaas.stores.sql.migrations import alembic_config
from ipaas.stores.sql.tables import SCHEMA_REVISION, metadata
from ipaas.tenants.models import ApiToken, Tenant, User
from ipaas.workflows.models import Step, Trigger, Workflow
from tests.contracts.conftest import POSTGRES_ONLY, in_thread

#: Microseconds on purpose: they must survive the round trip.
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TIMEOUT_S = 300.0
Q = ExecutionStatus.queued
R = ExecutionStatus.running
S = ExecutionStatus.succeeded
F = ExecutionStatus.failed


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def assert_utc(model: BaseModel) -> None:
    for name, value in model:
        if isinstance(value, datetime):
            assert value.utcoffset() == timedelta(0), name


# -- factories --------------------------------------------------------------------------------
@dataclass
class Account:
    tenant: Tenant
    user: User
    token: ApiToken

    @property
    def id(self) -> str:
        return self.tenant.id


async def new_account(store: Store, email: str | None = None) -> Account:
    account = unsaved_account(email)
    await store.create_tenant(account.tenant, account.user, account.token)
    return account


def unsaved_account(email: str | None = None) -> Account:
    tenant = Tenant(id=new_id("tn"), name="Acme", created_at=T0)
    user = User(
        id=new_id("usr"),
        tenant_id=tenant.id,
        email=email or f"{new_id('u')}@example.com",
        password_hash="argon2-hash",
        created_at=T0,
    )
    token = ApiToken(
        id=new_id("tok"),
        tenant_id=tenant.id,
        user_id=user.id,
        name="signup",
        token_hash=new_id("hash"),
        created_at=T0,
        expires_at=at(3600),
        session=True,
    )
    return Account(tenant, user, token)


def make_workflow(tenant_id: str, *, created_at: datetime = T0, text: str = "hi") -> Workflow:
    return Workflow(
        id=new_id("wf"),
        tenant_id=tenant_id,
        name="Notify",
        active=True,
        version=1,
        # ``secret`` is an extra field: triggers keep what they are given.
        trigger=Trigger.model_validate({"type": "webhook", "secret": "whsec_x"}),
        steps=[
            Step(
                id="notify",
                type="slack_message",
                credential_id="cred_1",
                config={"text": text, "nested": {"n": [1, 2.5, None, True]}},
                timeout_s=5,
            )
        ],
        created_at=created_at,
        updated_at=created_at,
    )


async def new_workflow(store: Store, tenant_id: str, **kwargs: Any) -> Workflow:
    workflow = make_workflow(tenant_id, **kwargs)
    await store.create_workflow(workflow)
    return workflow


async def new_execution(
    store: Store, tenant_id: str, workflow_id: str, *, created_at: datetime = T0
) -> Execution:
    execution = Execution(
        id=new_id("ex"),
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        workflow_version=1,
        status=Q,
        trigger=TriggerData(
            body={"order": {"id": 42, "items": ["a", "b"], "total": 9.5}},
            headers={"content-type": "application/json"},
            query={"q": "1"},
            content_type="application/json",
        ),
        created_at=created_at,
    )
    await store.create_execution(execution)
    return execution


def make_step(
    execution: Execution,
    step_id: str = "notify",
    *,
    position: int = 0,
    attempt: int = 1,
    status: StepStatus = StepStatus.succeeded,
    output: Any = None,
) -> StepRun:
    return StepRun(
        execution_id=execution.id,
        tenant_id=execution.tenant_id,
        step_id=step_id,
        position=position,
        type="slack_message",
        status=status,
        attempt=attempt,
        input={"text": "hi", "list": [1, None]},
        output={"ok": True} if output is None else output,
        started_at=at(1),
        finished_at=at(2),
    )


async def claim(
    store: Store,
    execution_id: str,
    *,
    owner: str = "w1",
    now: datetime = T0,
    lease_s: float = 30,
    timeout_s: float = TIMEOUT_S,
) -> Execution | None:
    return await store.claim_execution(
        execution_id,
        owner=owner,
        now=now,
        lease_until=now + timedelta(seconds=lease_s),
        timeout_s=timeout_s,
    )


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


@pytest.fixture
async def wf(store: Store, acct: Account) -> Workflow:
    return await new_workflow(store, acct.id)


# -- lifecycle --------------------------------------------------------------------------------
async def test_ping(store: Store) -> None:
    assert await store.ping() is True


# -- tenants, users, tokens -------------------------------------------------------------------
class TestClock:
    async def test_only_postgresql_has_a_clock_of_its_own(
        self, store: Store, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        offset = await store.clock_offset_s()
        if request.node.callspec.params["store"] != "postgres":
            assert offset is None  # one process, one clock
            return
        assert offset is not None
        assert abs(offset) < 1.0  # the same machine
        real = time.time
        monkeypatch.setattr("ipaas.stores.sql.store.time.time", lambda: real() - 30)
        behind = await store.clock_offset_s()
        assert behind is not None
        assert 29 < behind < 31  # this process 30 s behind: the database 30 s ahead


class TestCreateTenant:
    async def test_user_and_token_are_readable(self, store: Store, acct: Account) -> None:
        user = await store.get_user_by_email(acct.user.email)
        assert user is not None
        assert user.model_dump() == acct.user.model_dump()
        assert_utc(user)
        token = await store.get_token_by_hash(acct.token.token_hash)
        assert token is not None
        assert token.model_dump() == acct.token.model_dump()
        assert_utc(token)

    async def test_email_lookup_ignores_case(self, store: Store) -> None:
        acct = await new_account(store, email="ada@example.com")
        user = await store.get_user_by_email("ADA@Example.COM")
        assert user is not None
        assert user.id == acct.user.id
        assert user.email.lower() == "ada@example.com"

    async def test_unknown_email_and_hash(self, store: Store, acct: Account) -> None:
        assert await store.get_user_by_email("nobody@example.com") is None
        assert await store.get_token_by_hash("nope") is None

    async def test_duplicate_email_is_refused_case_insensitively(self, store: Store) -> None:
        await new_account(store, email="ada@example.com")
        with pytest.raises(DuplicateError):
            await new_account(store, email="Ada@Example.com")
        # Nothing of the refused sign-up was kept: one user, one tenant's tokens.
        user = await store.get_user_by_email("ada@example.com")
        assert user is not None
        assert len(await store.list_tokens(user.tenant_id, now=T0)) == 1

    async def test_refused_signup_writes_nothing(self, store: Store) -> None:
        first = await new_account(store, email="ada@example.com")
        tenant = Tenant(id=new_id("tn"), name="Other", created_at=T0)
        user = first.user.model_copy(update={"id": new_id("usr"), "tenant_id": tenant.id})
        token = ApiToken(
            id=new_id("tok"),
            tenant_id=tenant.id,
            user_id=user.id,
            name="x",
            token_hash="unique-hash",
            created_at=T0,
        )
        with pytest.raises(DuplicateError):
            await store.create_tenant(tenant, user, token)
        assert await store.get_token_by_hash("unique-hash") is None
        assert await store.list_tokens(tenant.id, now=T0) == []

    async def test_first_signup_gets_in_alone(self, store: Store) -> None:
        """``first``: of sign-ups at once exactly one is written; after it, none."""
        accounts = [unsaved_account() for _ in range(8)]
        created = await asyncio.gather(
            *(store.create_tenant(a.tenant, a.user, a.token, first=True) for a in accounts)
        )
        assert sorted(created) == [False] * 7 + [True]
        winner = accounts[created.index(True)]
        assert await store.list_tenant_ids() == [winner.tenant.id]
        for account, written in zip(accounts, created, strict=True):
            assert (await store.get_user_by_email(account.user.email) is not None) is written
            assert (await store.get_token_by_hash(account.token.token_hash) is not None) is written
        late = unsaved_account()
        assert not await store.create_tenant(late.tenant, late.user, late.token, first=True)
        assert await store.create_tenant(late.tenant, late.user, late.token)  # not first: in
        assert len(await store.list_tenant_ids()) == 2


class TestTokens:
    async def test_list_is_newest_first_and_skips_revoked(
        self, store: Store, acct: Account
    ) -> None:
        tokens = [
            ApiToken(
                id=new_id("tok"),
                tenant_id=acct.id,
                user_id=None,
                name=f"t{i}",
                token_hash=new_id("h"),
                created_at=at(i + 1),
            )
            for i in range(3)
        ]
        for token in tokens:
            await store.create_token(token)
        assert [t.id for t in await store.list_tokens(acct.id, now=T0)] == [
            tokens[2].id,
            tokens[1].id,
            tokens[0].id,
            acct.token.id,
        ]
        assert await store.revoke_token(acct.id, tokens[1].id, at(10)) is True
        assert [t.id for t in await store.list_tokens(acct.id, now=T0)] == [
            tokens[2].id,
            tokens[0].id,
            acct.token.id,
        ]

    async def test_list_skips_expired(self, store: Store, acct: Account) -> None:
        """A token that no longer authenticates is not listed (``authenticate`` refuses one
        whose ``expires_at`` is now or earlier)."""
        ends = acct.token.model_copy(
            update={"id": new_id("tok"), "token_hash": new_id("h"), "expires_at": at(100)}
        )
        await store.create_token(ends)
        assert {t.id for t in await store.list_tokens(acct.id, now=at(99))} == {
            acct.token.id,  # expires at(3600)
            ends.id,
        }
        assert [t.id for t in await store.list_tokens(acct.id, now=at(100))] == [acct.token.id]
        assert await store.list_tokens(acct.id, now=at(3600)) == []

    async def test_prune_deletes_ended_tokens_of_every_tenant(
        self, store: Store, acct: Account
    ) -> None:
        other = await new_account(store)  # its sign-up token expires at(3600)

        async def token(tenant_id: str, **ends: Any) -> ApiToken:
            made = ApiToken(
                id=new_id("tok"), tenant_id=tenant_id, user_id=None, name="t",
                token_hash=new_id("h"), created_at=T0, **ends,
            )  # fmt: skip
            await store.create_token(made)
            return made

        live = await token(acct.id)
        expired = await token(acct.id, expires_at=at(50))
        expires_later = await token(acct.id, expires_at=at(500))
        revoked = await token(acct.id)
        assert await store.revoke_token(acct.id, revoked.id, at(60))
        revoked_later = await token(other.id)
        assert await store.revoke_token(other.id, revoked_later.id, at(600))

        assert await store.prune_tokens(ended_before=at(100), limit=10) == 2
        assert await store.prune_tokens(ended_before=at(100), limit=10) == 0
        for gone in (expired, revoked):
            assert await store.get_token_by_hash(gone.token_hash) is None
        for kept in (live, expires_later, revoked_later, acct.token, other.token):
            assert await store.get_token_by_hash(kept.token_hash) is not None
        # Batches of ``limit``: both sign-up tokens (expired at 3600), revoked_later and
        # expires_later are due at 4000.
        assert await store.prune_tokens(ended_before=at(4000), limit=3) == 3
        assert await store.prune_tokens(ended_before=at(4000), limit=3) == 1
        assert await store.list_tokens(acct.id, now=T0) == [live]
        assert await store.list_tokens(other.id, now=T0) == []

    async def test_revoke_once(self, store: Store, acct: Account) -> None:
        assert await store.revoke_token(acct.id, acct.token.id, at(10)) is True
        assert await store.revoke_token(acct.id, acct.token.id, at(11)) is False
        assert await store.revoke_token(acct.id, "tok_unknown", at(11)) is False
        # Revoked tokens are still found by hash, so auth can tell "revoked" from "unknown".
        token = await store.get_token_by_hash(acct.token.token_hash)
        assert token is not None
        assert token.revoked_at == at(10)
        assert_utc(token)


class TestPasswords:
    def token(
        self, acct: Account, name: str, user_id: str | None, *, session: bool = False
    ) -> ApiToken:
        return ApiToken(
            id=new_id("tok"),
            tenant_id=acct.id,
            user_id=user_id,
            name=name,
            token_hash=new_id("h"),
            created_at=at(1),
            session=session,
        )

    async def test_get_user_is_scoped(self, store: Store, acct: Account) -> None:
        other = await new_account(store)
        got = await store.get_user(acct.id, acct.user.id)
        assert got is not None
        assert got.model_dump() == acct.user.model_dump() | {"email": acct.user.email.lower()}
        assert await store.get_user(other.id, acct.user.id) is None
        assert await store.get_user(acct.id, "usr_nope") is None

    async def test_change_password_ends_the_users_sessions_but_one(
        self, store: Store, acct: Account
    ) -> None:
        current = self.token(acct, "login", acct.user.id, session=True)
        other_session = self.token(acct, "login", acct.user.id, session=True)
        api_token = self.token(acct, "deploy", acct.user.id)
        # Named like a session, made on purpose: it stays (it did not, by name).
        named_login = self.token(acct, "login", acct.user.id)
        operators = self.token(acct, "login", None, session=True)  # a token of no user
        for token in (current, other_session, api_token, named_login, operators):
            await store.create_token(token)
        neighbour = await new_account(store)

        ended = await store.change_password(
            acct.id, acct.user.id, "new-hash", keep_token_id=current.id, at=at(20)
        )

        assert ended == 2  # the sign-up token and the other session
        user = await store.get_user(acct.id, acct.user.id)
        assert user is not None
        assert user.password_hash == "new-hash"
        live = {t.id for t in await store.list_tokens(acct.id, now=T0)}
        assert live == {current.id, api_token.id, named_login.id, operators.id}
        revoked = await store.get_token_by_hash(other_session.token_hash)
        assert revoked is not None
        assert revoked.revoked_at == at(20)
        assert [t.id for t in await store.list_tokens(neighbour.id, now=T0)] == [neighbour.token.id]

        # Keeping none ends the current one too (the operator's reset).
        assert (
            await store.change_password(
                acct.id, acct.user.id, "newer-hash", keep_token_id=None, at=at(21)
            )
            == 1
        )
        assert {t.id for t in await store.list_tokens(acct.id, now=T0)} == {
            api_token.id,
            named_login.id,
            operators.id,
        }

    async def test_change_password_of_no_such_user(self, store: Store, acct: Account) -> None:
        other = await new_account(store)
        assert (
            await store.change_password(other.id, acct.user.id, "x", keep_token_id=None, at=at(1))
            is None
        )
        user = await store.get_user(acct.id, acct.user.id)
        assert user is not None
        assert user.password_hash == acct.user.password_hash
        assert await store.get_token_by_hash(acct.token.token_hash) == acct.token


# -- credentials ------------------------------------------------------------------------------
def make_credential(tenant_id: str, *, created_at: datetime = T0) -> Credential:
    return Credential(
        id=new_id("cred"),
        tenant_id=tenant_id,
        name="Slack",
        type=CredentialType.slack,
        secret_ciphertext="gAAAA-ciphertext",
        created_at=created_at,
    )


class TestCredentials:
    async def test_round_trip_and_list(self, store: Store, acct: Account) -> None:
        creds = [make_credential(acct.id, created_at=at(i)) for i in range(3)]
        for cred in creds:
            await store.create_credential(cred)
        got = await store.get_credential(acct.id, creds[0].id)
        assert got is not None
        assert got.model_dump() == creds[0].model_dump()
        assert got.type is CredentialType.slack
        assert_utc(got)
        assert [c.id for c in await store.list_credentials(acct.id)] == [
            creds[2].id,
            creds[1].id,
            creds[0].id,
        ]

    async def test_get_many(self, store: Store, acct: Account) -> None:
        creds = [make_credential(acct.id) for _ in range(3)]
        for cred in creds:
            await store.create_credential(cred)
        found = await store.get_credentials(acct.id, [creds[0].id, creds[2].id, "cred_missing"])
        assert set(found) == {creds[0].id, creds[2].id}
        assert found[creds[2].id].model_dump() == creds[2].model_dump()
        assert await store.get_credentials(acct.id, []) == {}

    async def test_update_name_secret_or_both(self, store: Store, acct: Account) -> None:
        cred = make_credential(acct.id)
        neighbour = make_credential(acct.id)
        await store.create_credential(cred)
        await store.create_credential(neighbour)
        other = await new_account(store)

        assert await store.update_credential(acct.id, cred.id, name="renamed") is True
        assert await store.update_credential(acct.id, cred.id, secret_ciphertext="gAAAA-new")
        got = await store.get_credential(acct.id, cred.id)
        assert got is not None
        assert got.model_dump() == cred.model_dump() | {
            "name": "renamed",
            "secret_ciphertext": "gAAAA-new",
        }
        assert await store.update_credential(acct.id, cred.id, name="both", secret_ciphertext="c")
        assert await store.update_credential(acct.id, cred.id) is True  # nothing to change
        got = await store.get_credential(acct.id, cred.id)
        assert got is not None
        assert (got.name, got.secret_ciphertext) == ("both", "c")
        unchanged = await store.get_credential(acct.id, neighbour.id)
        assert unchanged is not None
        assert unchanged.model_dump() == neighbour.model_dump()
        # Another tenant's id, or none: nothing changes.
        assert await store.update_credential(other.id, cred.id, name="stolen") is False
        assert await store.update_credential(other.id, cred.id) is False
        assert await store.update_credential(acct.id, "cred_missing", name="x") is False
        got = await store.get_credential(acct.id, cred.id)
        assert got is not None
        assert got.name == "both"

    async def test_delete(self, store: Store, acct: Account) -> None:
        cred = make_credential(acct.id)
        await store.create_credential(cred)
        assert await store.delete_credential(acct.id, cred.id) is True
        assert await store.get_credential(acct.id, cred.id) is None
        assert await store.delete_credential(acct.id, cred.id) is False

    # -- workflows --------------------------------------------------------------------------------
    async def test_replace_secret_only_over_the_ciphertext_read(
        self, store: Store, acct: Account
    ) -> None:
        cred = make_credential(acct.id)
        await store.create_credential(cred)
        other = await new_account(store)
        old = cred.secret_ciphertext
        assert not await store.replace_credential_secret(other.id, cred.id, old=old, new="x")
        assert not await store.replace_credential_secret(acct.id, cred.id, old="stale", new="x")
        assert not await store.replace_credential_secret(acct.id, "cred_missing", old=old, new="x")
        got = await store.get_credential(acct.id, cred.id)
        assert got is not None
        assert got.secret_ciphertext == old
        assert await store.replace_credential_secret(acct.id, cred.id, old=old, new="gAAAA-new")
        got = await store.get_credential(acct.id, cred.id)
        assert got is not None
        assert (
            got.model_dump()
            == cred.model_copy(update={"secret_ciphertext": "gAAAA-new"}).model_dump()
        )


class TestWorkflows:
    async def test_round_trip(self, store: Store, acct: Account, wf: Workflow) -> None:
        for got in (
            await store.get_workflow(acct.id, wf.id),
            await store.get_workflow_for_intake(wf.id),
        ):
            assert got is not None
            assert got.model_dump() == wf.model_dump()
            assert got.trigger.model_extra == {"secret": "whsec_x"}
            assert_utc(got)
        version = await store.get_workflow_version(acct.id, wf.id, 1)
        assert version is not None
        assert version.model_dump() == wf.definition.model_dump()

    async def test_unknown(self, store: Store, acct: Account) -> None:
        assert await store.get_workflow(acct.id, "wf_missing") is None
        assert await store.get_workflow_for_intake("wf_missing") is None
        assert await store.get_workflow_version(acct.id, "wf_missing", 1) is None

    async def test_list_newest_first(self, store: Store, acct: Account) -> None:
        made = [await new_workflow(store, acct.id, created_at=at(i)) for i in range(3)]
        assert [w.id for w in await store.list_workflows(acct.id)] == [w.id for w in made[::-1]]

    async def test_list_in_pages(self, store: Store, acct: Account) -> None:
        other = await new_account(store)
        await new_workflow(store, other.id, created_at=at(3))
        # Two share a created_at: the id orders them.
        made = [await new_workflow(store, acct.id, created_at=at(i // 2)) for i in range(5)]
        newest_first = [w.id for w in sorted(made, key=lambda w: (w.created_at, w.id))][::-1]
        assert [w.id for w in await store.list_workflows(acct.id)] == newest_first
        seen: list[str] = []
        before = None
        while True:
            page = await store.list_workflows(acct.id, before=before, limit=2)
            seen += [w.id for w in page]
            if len(page) < 2:
                break
            before = (page[-1].created_at, page[-1].id)
        assert seen == newest_first
        assert await store.list_workflows(acct.id, limit=0) == []

    async def test_names_newest_first(self, store: Store, acct: Account) -> None:
        await new_workflow(store, (await new_account(store)).id)
        made = [await new_workflow(store, acct.id, created_at=at(i)) for i in range(3)]
        names = await store.workflow_names(acct.id)
        assert list(names.items()) == [(w.id, w.name) for w in made[::-1]]

    async def test_update_in_place(self, store: Store, acct: Account, wf: Workflow) -> None:
        changed = wf.model_copy(update={"name": "Renamed", "active": False, "updated_at": at(5)})
        assert await store.update_workflow(changed, new_version=False) is True
        got = await store.get_workflow(acct.id, wf.id)
        assert got is not None
        assert got.model_dump() == changed.model_dump()
        assert got.created_at == wf.created_at
        assert await store.get_workflow_version(acct.id, wf.id, 2) is None

    async def test_new_version_keeps_the_old_one(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        v2 = make_workflow(acct.id, text="v2").model_copy(
            update={"id": wf.id, "version": 2, "updated_at": at(5)}
        )
        assert await store.update_workflow(v2, new_version=True) is True
        got = await store.get_workflow(acct.id, wf.id)
        assert got is not None
        assert got.version == 2
        assert got.steps[0].config["text"] == "v2"
        old = await store.get_workflow_version(acct.id, wf.id, 1)
        new = await store.get_workflow_version(acct.id, wf.id, 2)
        assert old is not None
        assert new is not None
        assert old.steps[0].config["text"] == "hi"
        assert new.model_dump() == v2.definition.model_dump()

    async def test_versions_newest_first_in_pages(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        for n in (2, 3, 4):
            edit = make_workflow(acct.id, text=f"v{n}").model_copy(
                update={"id": wf.id, "version": n, "updated_at": at(n)}
            )
            assert await store.update_workflow(edit, new_version=True)
        # A rename saves no version.
        renamed = edit.model_copy(update={"name": "renamed", "updated_at": at(9)})
        assert await store.update_workflow(renamed, new_version=False)
        versions = await store.list_workflow_versions(acct.id, wf.id, limit=10)
        assert [(v.version, v.created_at) for v in versions] == [
            (4, at(4)),
            (3, at(3)),
            (2, at(2)),
            (1, wf.updated_at),
        ]
        assert [v.steps[0].config["text"] for v in versions] == ["v4", "v3", "v2", "hi"]
        assert versions[3].model_dump(include={"trigger", "steps"}) == wf.definition.model_dump()
        assert_utc(versions[0])
        page = await store.list_workflow_versions(acct.id, wf.id, limit=2)
        assert [v.version for v in page] == [4, 3]
        page = await store.list_workflow_versions(acct.id, wf.id, before=3, limit=2)
        assert [v.version for v in page] == [2, 1]
        assert await store.list_workflow_versions(acct.id, wf.id, before=1, limit=2) == []
        assert await store.list_workflow_versions(acct.id, "wf_missing", limit=2) == []

    async def test_update_over_a_stale_base_saves_nothing(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """The compare-and-set of an edit: saved only over the ``updated_at`` it was made
        from."""
        first = wf.model_copy(update={"name": "first", "updated_at": at(5)})
        assert await store.update_workflow(first, new_version=False, base_updated_at=wf.updated_at)
        stale = make_workflow(acct.id, text="stale").model_copy(
            update={"id": wf.id, "name": "stale", "version": 2, "updated_at": at(6)}
        )
        assert (
            await store.update_workflow(stale, new_version=True, base_updated_at=wf.updated_at)
            is False
        )
        got = await store.get_workflow(acct.id, wf.id)
        assert got is not None
        assert got.model_dump() == first.model_dump()
        assert await store.get_workflow_version(acct.id, wf.id, 2) is None
        assert await store.update_workflow(stale, new_version=True, base_updated_at=at(5))
        got = await store.get_workflow(acct.id, wf.id)
        assert got is not None
        assert (got.name, got.version, got.updated_at) == ("stale", 2, at(6))

    async def test_delete_over_a_stale_base_deletes_nothing(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """``If-Match`` on DELETE: deleted only in the state the caller saw."""
        edited = wf.model_copy(update={"name": "edited", "updated_at": at(5)})
        assert await store.update_workflow(edited, new_version=False)
        assert await store.delete_workflow(acct.id, wf.id, base_updated_at=wf.updated_at) is False
        got = await store.get_workflow(acct.id, wf.id)
        assert got is not None
        assert got.name == "edited"
        assert await store.delete_workflow(acct.id, wf.id, base_updated_at=at(5)) is True
        assert await store.get_workflow(acct.id, wf.id) is None
        assert await store.delete_workflow(acct.id, wf.id, base_updated_at=at(5)) is False

    async def test_update_unknown(self, store: Store, acct: Account) -> None:
        ghost = make_workflow(acct.id)
        assert await store.update_workflow(ghost, new_version=True) is False
        assert await store.get_workflow(acct.id, ghost.id) is None
        assert await store.get_workflow_version(acct.id, ghost.id, 1) is None

    async def test_delete_keeps_versions_and_executions(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        assert await store.delete_workflow(acct.id, wf.id) is True
        assert await store.get_workflow(acct.id, wf.id) is None
        assert await store.get_workflow_for_intake(wf.id) is None
        assert await store.list_workflows(acct.id) == []
        assert await store.delete_workflow(acct.id, wf.id) is False
        assert await store.update_workflow(wf, new_version=False) is False
        version = await store.get_workflow_version(acct.id, wf.id, 1)
        assert version is not None
        assert version.model_dump() == wf.definition.model_dump()
        assert [v.version for v in await store.list_workflow_versions(acct.id, wf.id, limit=5)] == [
            1
        ]
        assert await store.get_execution(acct.id, ex.id) is not None


# -- tenant isolation -------------------------------------------------------------------------
async def test_tenant_isolation(store: Store) -> None:
    """Every scoped method called as tenant A misses every row of tenant B."""
    a, b = await new_account(store), await new_account(store)
    wf_b = await new_workflow(store, b.id)
    cred_b = make_credential(b.id)
    await store.create_credential(cred_b)
    queued_b = await new_execution(store, b.id, wf_b.id)
    running_b = await new_execution(store, b.id, wf_b.id)
    assert await claim(store, running_b.id) is not None
    await store.record_step(make_step(running_b))

    assert await store.list_tokens(a.id, now=T0) == [
        await store.get_token_by_hash(a.token.token_hash)
    ]
    assert await store.revoke_token(a.id, b.token.id, at(1)) is False
    assert await store.get_credential(a.id, cred_b.id) is None
    assert await store.get_credentials(a.id, [cred_b.id]) == {}
    assert await store.list_credentials(a.id) == []
    assert await store.delete_credential(a.id, cred_b.id) is False
    assert await store.get_workflow(a.id, wf_b.id) is None
    assert await store.list_workflows(a.id) == []
    hijack = wf_b.model_copy(update={"tenant_id": a.id, "name": "hijacked", "version": 2})
    assert await store.update_workflow(hijack, new_version=True) is False
    assert await store.delete_workflow(a.id, wf_b.id) is False
    assert await store.get_workflow_version(a.id, wf_b.id, 1) is None
    assert await store.get_workflow_version(a.id, wf_b.id, 2) is None
    assert await store.list_workflow_versions(a.id, wf_b.id, limit=10) == []
    assert await store.get_execution(a.id, queued_b.id) is None
    assert (await store.list_executions(a.id)).items == []
    assert (await store.list_executions(a.id, workflow_id=wf_b.id)).items == []
    assert await store.count_queued(a.id) == 0
    assert await store.list_step_runs(a.id, running_b.id) == []
    assert await store.request_cancel(a.id, queued_b.id, now=at(1)) is None
    assert await store.request_cancel(a.id, running_b.id, now=at(1)) is None

    # ...and B's rows are untouched by all of the above.
    token_b = await store.get_token_by_hash(b.token.token_hash)
    assert token_b is not None
    assert token_b.revoked_at is None
    assert await store.get_credential(b.id, cred_b.id) is not None
    still = await store.get_workflow(b.id, wf_b.id)
    assert still is not None
    assert still.model_dump() == wf_b.model_dump()
    ex_q = await store.get_execution(b.id, queued_b.id)
    ex_r = await store.get_execution(b.id, running_b.id)
    assert ex_q is not None
    assert ex_q.status is Q
    assert ex_r is not None
    assert ex_r.cancel_requested is False
    assert await store.count_queued(b.id) == 1
    assert len(await store.list_step_runs(b.id, running_b.id)) == 1


# -- executions -------------------------------------------------------------------------------
class TestCreateExecution:
    async def test_round_trip(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        got = await store.get_execution(acct.id, ex.id)
        assert got is not None
        assert got.model_dump() == ex.model_dump()
        assert got.status is Q
        assert isinstance(got.trigger, TriggerData)
        assert_utc(got)
        assert await store.get_execution(acct.id, "ex_missing") is None

    async def test_count_queued(self, store: Store, acct: Account, wf: Workflow) -> None:
        other = await new_account(store)
        wf_other = await new_workflow(store, other.id)
        for _ in range(3):
            await new_execution(store, acct.id, wf.id)
        await new_execution(store, other.id, wf_other.id)
        running = await new_execution(store, acct.id, wf.id)
        await claim(store, running.id)
        assert await store.count_queued(acct.id) == 3
        assert await store.count_queued(other.id) == 1
        assert await store.count_queued() == 4


class TestExecutionFigures:
    async def test_counts_per_minute_and_workflow_durations_tenant_scoped(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        other = await new_account(store)
        wf_other = await new_workflow(store, other.id)
        wf2 = await new_workflow(store, acct.id)
        await new_execution(store, acct.id, wf.id, created_at=at(-1))  # before the window
        await new_execution(store, other.id, wf_other.id, created_at=at(5))  # another tenant
        ok = await new_execution(store, acct.id, wf.id, created_at=at(0))
        bad = await new_execution(store, acct.id, wf2.id, created_at=at(61))
        await new_execution(store, acct.id, wf.id, created_at=at(62))
        await new_execution(store, acct.id, wf.id, created_at=at(7200))  # past the last edge
        for execution, status, seconds in ((ok, S, 1.5), (bad, F, 0.25)):
            await claim(store, execution.id, now=at(100))
            await store.finish_execution(
                execution.id,
                owner="w1",
                status=status,
                error=None,
                finished_at=at(100 + seconds),
            )

        got = await store.execution_figures(acct.id, since=T0)
        assert sorted(got.per_minute) == [(0, S, 1), (1, F, 1), (1, Q, 1), (59, Q, 1)]
        assert sorted(got.per_workflow) == sorted([(wf.id, 0, 3), (wf2.id, 1, 1)])
        assert got.durations_s == pytest.approx([0.25, 1.5], abs=0.01)
        empty = await store.execution_figures(acct.id, since=at(10_000))
        assert (empty.per_minute, empty.per_workflow, empty.durations_s) == ([], [], [])


class TestTriggerContains:
    """``list_executions(trigger_contains=...)``: a text anywhere in the trigger's JSON."""

    @pytest.fixture
    async def found(self, store: Store, acct: Account, wf: Workflow) -> dict[str, Execution]:
        bodies = {
            "ada": {"email": "Ada@Example.com", "order": "A-100_7"},
            "bob": {"email": "bob@example.com", "order": "B%200"},
            "cy": {"note": "caf\u00e9 50% off", "path": "C:\\tmp"},
        }
        made: dict[str, Execution] = {}
        for i, (name, body) in enumerate(bodies.items()):
            ex = await new_execution(store, acct.id, wf.id, created_at=at(i))
            ex = ex.model_copy(update={"trigger": ex.trigger.model_copy(update={"body": body})})
            ex.id = new_id("ex")
            await store.create_execution(ex)
            made[name] = ex
        other = await new_account(store)
        ex = await new_execution(store, other.id, (await new_workflow(store, other.id)).id)
        ex = ex.model_copy(update={"id": new_id("ex")})
        ex.trigger.body = {"email": "ada@example.com"}
        await store.create_execution(ex)
        return made

    @pytest.mark.parametrize(
        ("text", "names"),
        [
            ("ada@example.com", ["ada"]),  # ASCII case ignored; not the other tenant's
            ("EXAMPLE.COM", ["bob", "ada"]),  # newest first
            ("A-100_7", ["ada"]),
            ("A-100x7", []),  # _ is itself, not any character
            ("B%200", ["bob"]),
            ("%", ["cy", "bob"]),  # % is itself
            ("café", ["cy"]),
            ("C:\\\\tmp", ["cy"]),  # JSON text: the backslash is written twice
            ("nobody", []),
        ],
    )
    async def test_finds_the_text(
        self,
        store: Store,
        acct: Account,
        found: dict[str, Execution],
        text: str,
        names: list[str],
    ) -> None:
        page = await store.list_executions(acct.id, trigger_contains=text, limit=10)
        by_id = {ex.id: name for name, ex in found.items()}
        assert [by_id.get(ex.id, ex.id) for ex in page.items] == names

    async def test_pages_with_the_filter(
        self, store: Store, acct: Account, found: dict[str, Execution]
    ) -> None:
        first = await store.list_executions(acct.id, trigger_contains="example", limit=1)
        assert [ex.id for ex in first.items] == [found["bob"].id]
        assert first.next_key is not None
        rest = await store.list_executions(
            acct.id, trigger_contains="example", limit=1, before=first.next_key
        )
        assert [ex.id for ex in rest.items] == [found["ada"].id]
        assert rest.next_key is None


class TestListExecutions:
    @pytest.fixture
    async def rows(self, store: Store, acct: Account, wf: Workflow) -> list[Execution]:
        """Eleven executions of two workflows, pairs sharing a ``created_at`` (ties on id)."""
        wf2 = await new_workflow(store, acct.id)
        made = [
            await new_execution(store, acct.id, (wf, wf2)[i % 3 == 0].id, created_at=at(i // 2))
            for i in range(11)
        ]
        for ex in made[::4]:
            await claim(store, ex.id)
        await store.request_cancel(acct.id, made[1].id, now=at(9))
        # Another tenant's rows, interleaved in time, must never show up.
        other = await new_account(store)
        wf_other = await new_workflow(store, other.id)
        for i in range(4):
            await new_execution(store, other.id, wf_other.id, created_at=at(i))
        current = [await store.get_execution(acct.id, ex.id) for ex in made]
        return [ex for ex in current if ex is not None]

    @pytest.mark.parametrize("limit", [1, 2, 3, 11, 50])
    @pytest.mark.parametrize("by_workflow", [False, True])
    @pytest.mark.parametrize("status", [None, Q, R, ExecutionStatus.cancelled])
    async def test_pages_cover_everything_once(
        self,
        store: Store,
        acct: Account,
        rows: list[Execution],
        limit: int,
        by_workflow: bool,
        status: ExecutionStatus | None,
    ) -> None:
        workflow_id = rows[0].workflow_id if by_workflow else None
        expected = sorted(
            (
                ex
                for ex in rows
                if (workflow_id is None or ex.workflow_id == workflow_id)
                and (status is None or ex.status == status)
            ),
            key=lambda ex: (ex.created_at, ex.id),
            reverse=True,
        )
        assert expected or status is ExecutionStatus.cancelled
        seen: list[str] = []
        before = None
        for _ in range(len(rows) + 2):
            page = await store.list_executions(
                acct.id, workflow_id=workflow_id, status=status, before=before, limit=limit
            )
            assert len(page.items) <= limit
            for ex in page.items:
                assert_utc(ex)
            seen += [ex.id for ex in page.items]
            if page.next_key is None:
                break
            assert page.items
            assert page.next_key == (page.items[-1].created_at, page.items[-1].id)
            before = page.next_key
        assert seen == [ex.id for ex in expected]

    @pytest.mark.parametrize("limit", [2, 50])
    async def test_since_bounds_the_pages(
        self, store: Store, acct: Account, rows: list[Execution], limit: int
    ) -> None:
        """``since`` (inclusive) with ``before`` (exclusive): a window of ``created_at``."""
        since, until = at(1), (at(4), "")
        expected = sorted(
            (ex for ex in rows if since <= ex.created_at < at(4)),
            key=lambda ex: (ex.created_at, ex.id),
            reverse=True,
        )
        assert 0 < len(expected) < len(rows)
        seen: list[str] = []
        before: tuple[datetime, str] | None = until
        while True:
            page = await store.list_executions(acct.id, before=before, since=since, limit=limit)
            seen += [ex.id for ex in page.items]
            if page.next_key is None:
                break
            before = page.next_key
        by_id = {ex.id: ex.created_at for ex in rows}
        assert seen == [ex.id for ex in expected], [(i, by_id.get(i)) for i in seen]
        failed_since = await store.list_executions(acct.id, status=R, since=at(3))
        assert [ex.id for ex in failed_since.items] == [
            ex.id
            for ex in sorted(rows, key=lambda ex: (ex.created_at, ex.id), reverse=True)
            if ex.status == R and ex.created_at >= at(3)
        ]

    @pytest.mark.parametrize("limit", [1, 2, 20])
    async def test_recent_runs_of_several_workflows_in_one_read(
        self, store: Store, acct: Account, rows: list[Execution], limit: int
    ) -> None:
        """The console's workflow list: each workflow's latest runs, newest first (ties on
        id), only the tenant's, none for a workflow without executions."""
        other = await new_account(store)
        quiet = await new_workflow(store, acct.id)
        by_workflow: dict[str, list[Execution]] = {}
        for ex in sorted(rows, key=lambda ex: (ex.created_at, ex.id), reverse=True):
            by_workflow.setdefault(ex.workflow_id, []).append(ex)
        ids = [*by_workflow, quiet.id, "wf_nope"]

        runs = await store.recent_runs(acct.id, ids, limit=limit)

        assert runs == {
            workflow_id: [RecentRun(ex.id, ex.status, ex.created_at) for ex in found[:limit]]
            for workflow_id, found in by_workflow.items()
        }
        assert await store.recent_runs(other.id, ids, limit=limit) == {}
        assert await store.recent_runs(acct.id, [], limit=limit) == {}

    async def test_recent_runs_of_more_workflows_than_one_statement_holds(
        self, store: Store, acct: Account
    ) -> None:
        workflows = [await new_workflow(store, acct.id) for _ in range(130)]
        for n, wf in enumerate(workflows[::3]):
            await new_execution(store, acct.id, wf.id, created_at=at(n))
        runs = await store.recent_runs(acct.id, [wf.id for wf in workflows], limit=5)
        assert sorted(runs) == sorted(wf.id for wf in workflows[::3])
        assert all(len(found) == 1 for found in runs.values())

    async def test_exact_fit_has_no_next_page(
        self, store: Store, acct: Account, rows: list[Execution]
    ) -> None:
        page = await store.list_executions(acct.id, limit=len(rows))
        assert len(page.items) == len(rows)
        assert page.next_key is None


class TestClaimExecution:
    async def test_claim_sets_lease_attempt_and_deadline(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        claimed = await claim(store, ex.id, owner="w1", now=at(1), lease_s=30)
        assert claimed is not None
        assert claimed.status is R
        assert claimed.lease_owner == "w1"
        assert claimed.lease_expires_at == at(31)
        assert claimed.attempt == 1
        assert claimed.started_at == at(1)
        assert claimed.deadline_at == at(1 + TIMEOUT_S)
        assert_utc(claimed)
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert stored.model_dump() == claimed.model_dump()

    async def test_second_claim_loses(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        assert await claim(store, ex.id, owner="w1") is not None
        assert await claim(store, ex.id, owner="w2") is None
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert stored.lease_owner == "w1"
        assert stored.attempt == 1

    async def test_unknown_and_terminal_are_not_claimed(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        assert await claim(store, "ex_missing") is None
        ex = await new_execution(store, acct.id, wf.id)
        await store.request_cancel(acct.id, ex.id, now=at(1))
        assert await claim(store, ex.id) is None
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert stored.status is ExecutionStatus.cancelled
        assert stored.attempt == 0

    async def test_reclaim_keeps_started_at_and_deadline(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1", now=at(1))
        assert await store.release_execution(ex.id, owner="w1") is True
        again = await claim(store, ex.id, owner="w2", now=at(50), timeout_s=10)
        assert again is not None
        assert again.attempt == 2
        assert again.lease_owner == "w2"
        assert again.lease_expires_at == at(80)
        assert again.started_at == at(1)
        assert again.deadline_at == at(1 + TIMEOUT_S)

    async def test_deadline_counts_from_an_existing_started_at(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        preset = ex.model_copy(update={"id": new_id("ex"), "started_at": at(-100)})
        await store.create_execution(preset)
        claimed = await claim(store, preset.id, now=at(1), timeout_s=60)
        assert claimed is not None
        assert (claimed.started_at, claimed.deadline_at) == (at(-100), at(-40))
        stored = await store.get_execution(acct.id, preset.id)
        assert stored is not None
        assert stored.deadline_at == at(-40)

    async def test_concurrent_claims_have_one_winner(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        results = await asyncio.gather(*(claim(store, ex.id, owner=f"w{n}") for n in range(5)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert stored.lease_owner == winners[0].lease_owner
        assert stored.attempt == 1


class TestClaimNext:
    async def test_oldest_first_up_to_limit(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        other = await new_account(store)
        wf_other = await new_workflow(store, other.id)
        made = [
            await new_execution(
                store,
                (acct.id, other.id)[i % 2],
                (wf.id, wf_other.id)[i % 2],
                created_at=at(10 - i),
            )
            for i in range(5)
        ]
        done = await new_execution(store, acct.id, wf.id, created_at=at(-10))
        await store.request_cancel(acct.id, done.id, now=T0)
        claimed = await store.claim_next(
            owner="w1", now=at(20), lease_until=at(50), timeout_s=TIMEOUT_S, limit=3
        )
        assert [ex.id for ex in claimed] == [made[4].id, made[3].id, made[2].id]
        for ex in claimed:
            assert ex.status is R
            assert ex.lease_owner == "w1"
            assert ex.lease_expires_at == at(50)
            assert ex.attempt == 1
            assert ex.started_at == at(20)
            assert ex.deadline_at == at(20 + TIMEOUT_S)
            assert_utc(ex)
        rest = await store.claim_next(
            owner="w2", now=at(20), lease_until=at(50), timeout_s=TIMEOUT_S, limit=10
        )
        assert [ex.id for ex in rest] == [made[1].id, made[0].id]
        assert (
            await store.claim_next(
                owner="w3", now=at(20), lease_until=at(50), timeout_s=TIMEOUT_S, limit=10
            )
            == []
        )

    async def test_concurrent_callers_never_share(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ids = {(await new_execution(store, acct.id, wf.id, created_at=at(i))).id for i in range(50)}

        async def worker(owner: str) -> list[Execution]:
            got: list[Execution] = []
            while batch := await store.claim_next(
                owner=owner, now=T0, lease_until=at(30), timeout_s=TIMEOUT_S, limit=3
            ):
                got += batch
            return got

        owners = [f"w{n}" for n in range(5)]
        results = await asyncio.gather(*(worker(owner) for owner in owners))
        claimed = [ex.id for batch in results for ex in batch]
        assert len(claimed) == len(set(claimed))
        assert set(claimed) == ids
        for owner, batch in zip(owners, results, strict=True):
            for ex in batch:
                stored = await store.get_execution(acct.id, ex.id)
                assert stored is not None
                assert (stored.status, stored.lease_owner, stored.attempt) == (R, owner, 1)
        assert await store.count_queued() == 0


class TestLeases:
    async def test_renew_only_for_owner(self, store: Store, acct: Account, wf: Workflow) -> None:
        mine, theirs, done, queued = [await new_execution(store, acct.id, wf.id) for _ in range(4)]
        await claim(store, mine.id, owner="w1")
        await claim(store, theirs.id, owner="w2")
        await claim(store, done.id, owner="w1")
        await store.finish_execution(
            done.id, owner="w1", status=ExecutionStatus.succeeded, error=None, finished_at=at(1)
        )
        renewed = await store.renew_leases(
            [mine.id, theirs.id, done.id, queued.id, "ex_missing"], owner="w1", lease_until=at(99)
        )
        assert renewed == {mine.id}
        got_mine = await store.get_execution(acct.id, mine.id)
        got_theirs = await store.get_execution(acct.id, theirs.id)
        assert got_mine is not None
        assert got_theirs is not None
        assert got_mine.lease_expires_at == at(99)
        assert got_theirs.lease_expires_at == at(30)
        assert await store.renew_leases([], owner="w1", lease_until=at(99)) == set()

    async def test_cancel_requested(self, store: Store, acct: Account, wf: Workflow) -> None:
        asked, running, queued = [await new_execution(store, acct.id, wf.id) for _ in range(3)]
        await claim(store, asked.id)
        await claim(store, running.id)
        await store.request_cancel(acct.id, asked.id, now=at(1))
        ids = [asked.id, running.id, queued.id, "ex_missing"]
        assert await store.cancel_requested(ids) == {asked.id}
        assert await store.cancel_requested([]) == set()

    async def test_queued_among(self, store: Store, acct: Account, wf: Workflow) -> None:
        queued, running, finished = [await new_execution(store, acct.id, wf.id) for _ in range(3)]
        await claim(store, running.id)
        await claim(store, finished.id)
        finish = {"owner": "w1", "error": None, "finished_at": at(3)}
        assert await store.finish_execution(finished.id, status=ExecutionStatus.succeeded, **finish)
        ids = [queued.id, running.id, finished.id, "ex_missing"]
        assert await store.queued_among(ids) == {queued.id}
        assert await store.queued_among([]) == set()

    async def test_release(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1")
        assert await store.release_execution(ex.id, owner="w2") is False
        assert await store.release_execution(ex.id, owner="w1") is True
        got = await store.get_execution(acct.id, ex.id)
        assert got is not None
        assert (got.status, got.lease_owner, got.lease_expires_at) == (Q, None, None)
        assert await store.release_execution(ex.id, owner="w1") is False
        assert await store.release_execution("ex_missing", owner="w1") is False


class TestSteps:
    async def test_record_and_list_in_order(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        second = make_step(ex, "b", position=1, output=["x", {"y": None}])
        first_retry = make_step(ex, "a", position=0, attempt=2)
        first = make_step(ex, "a", position=0, attempt=1, status=StepStatus.failed)
        for step in (second, first_retry, first):
            await store.record_step(step)
        got = await store.list_step_runs(acct.id, ex.id)
        assert [s.model_dump() for s in got] == [
            first.model_dump(),
            first_retry.model_dump(),
            second.model_dump(),
        ]
        assert got[0].status is StepStatus.failed
        for step in got:
            assert_utc(step)
        assert await store.list_step_runs(acct.id, "ex_missing") == []

    async def test_a_loops_items_list_in_the_order_they_ran(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """A ``for_each`` step's items share its position: listed by start, so ``x[1]``'s
        retry comes before ``x[2]``, which ran after it (the ids sort otherwise)."""
        ex = await new_execution(store, acct.id, wf.id)
        runs = [
            make_step(ex, "x[0]", position=0).model_copy(update={"started_at": at(1)}),
            make_step(ex, "x[1]", position=0, status=StepStatus.failed).model_copy(
                update={"started_at": at(2)}
            ),
            make_step(ex, "x[1]", position=0, attempt=2).model_copy(update={"started_at": at(5)}),
            make_step(ex, "x[2]", position=0).model_copy(update={"started_at": at(6)}),
            make_step(ex, "x[10]", position=0).model_copy(update={"started_at": at(7)}),
            make_step(ex, "after", position=1).model_copy(update={"started_at": at(8)}),
        ]
        for step in reversed(runs):
            await store.record_step(step)
        got = await store.list_step_runs(acct.id, ex.id)
        assert [(s.step_id, s.attempt) for s in got] == [(s.step_id, s.attempt) for s in runs]

    async def test_record_replaces_the_same_attempt(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await store.record_step(make_step(ex, status=StepStatus.failed))
        replaced = make_step(ex, output={"ts": 3}).model_copy(update={"error": None})
        await store.record_step(replaced)
        got = await store.list_step_runs(acct.id, ex.id)
        assert [s.model_dump() for s in got] == [replaced.model_dump()]


class TestFinishExecution:
    async def test_owner_finishes_with_step(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1")
        step = make_step(ex, status=StepStatus.failed)
        assert (
            await store.finish_execution(
                ex.id,
                owner="w1",
                status=ExecutionStatus.failed,
                error="boom",
                finished_at=at(5),
                step=step,
            )
            is True
        )
        got = await store.get_execution(acct.id, ex.id)
        assert got is not None
        assert (got.status, got.error, got.finished_at) == (ExecutionStatus.failed, "boom", at(5))
        assert (got.lease_owner, got.lease_expires_at) == (None, None)
        assert [s.model_dump() for s in await store.list_step_runs(acct.id, ex.id)] == [
            step.model_dump()
        ]

    async def test_other_owner_writes_nothing(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1")
        assert (
            await store.finish_execution(
                ex.id,
                owner="w2",
                status=ExecutionStatus.succeeded,
                error=None,
                finished_at=at(5),
                step=make_step(ex),
            )
            is False
        )
        got = await store.get_execution(acct.id, ex.id)
        assert got is not None
        assert (got.status, got.lease_owner, got.finished_at) == (R, "w1", None)
        assert await store.list_step_runs(acct.id, ex.id) == []

    async def test_terminal_is_never_overwritten(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1")
        assert (
            await store.finish_execution(
                ex.id, owner="w1", status=ExecutionStatus.succeeded, error=None, finished_at=at(5)
            )
            is True
        )
        assert (
            await store.finish_execution(
                ex.id,
                owner="w1",
                status=ExecutionStatus.failed,
                error="late",
                finished_at=at(6),
                step=make_step(ex),
            )
            is False
        )
        got = await store.get_execution(acct.id, ex.id)
        assert got is not None
        assert (got.status, got.error, got.finished_at) == (
            ExecutionStatus.succeeded,
            None,
            at(5),
        )
        assert await store.list_step_runs(acct.id, ex.id) == []

    async def test_queued_and_unknown_are_not_finished(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        for execution_id in (ex.id, "ex_missing"):
            assert (
                await store.finish_execution(
                    execution_id,
                    owner="w1",
                    status=ExecutionStatus.succeeded,
                    error=None,
                    finished_at=at(5),
                )
                is False
            )
        got = await store.get_execution(acct.id, ex.id)
        assert got is not None
        assert got.status is Q


class TestRequestCancel:
    async def test_queued_is_cancelled_at_once(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        got = await store.request_cancel(acct.id, ex.id, now=at(7))
        assert got is not None
        assert got.status is ExecutionStatus.cancelled
        assert got.finished_at == at(7)
        assert got.error
        assert_utc(got)
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert stored.model_dump() == got.model_dump()
        assert await store.count_queued(acct.id) == 0

    async def test_running_gets_the_flag(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1")
        got = await store.request_cancel(acct.id, ex.id, now=at(7))
        assert got is not None
        assert (got.status, got.cancel_requested, got.lease_owner, got.finished_at) == (
            R,
            True,
            "w1",
            None,
        )
        # The worker then finishes it as cancelled.
        assert (
            await store.finish_execution(
                ex.id,
                owner="w1",
                status=ExecutionStatus.cancelled,
                error="cancelled",
                finished_at=at(8),
            )
            is True
        )

    async def test_terminal_is_left_alone(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1")
        await store.finish_execution(
            ex.id, owner="w1", status=ExecutionStatus.succeeded, error=None, finished_at=at(5)
        )
        before = await store.get_execution(acct.id, ex.id)
        got = await store.request_cancel(acct.id, ex.id, now=at(7))
        assert before is not None
        assert got is not None
        assert got.model_dump() == before.model_dump()
        assert got.status is ExecutionStatus.succeeded
        assert got.cancel_requested is False

    async def test_unknown(self, store: Store, acct: Account) -> None:
        assert await store.request_cancel(acct.id, "ex_missing", now=at(7)) is None


class TestCancelPending:
    """Every unfinished execution of a tenant (of one workflow, or all) in two statements:
    what ``POST /api/executions/cancel`` and a workflow's deletion do."""

    async def test_one_workflows_then_all(self, store: Store, acct: Account, wf: Workflow) -> None:
        other_wf = await new_workflow(store, acct.id)
        queued = await new_execution(store, acct.id, wf.id)
        waiting = await new_execution(store, acct.id, wf.id)  # a retry waiting for its time
        assert await claim(store, waiting.id, now=at(1)) is not None
        step = make_step(waiting, status=StepStatus.failed)
        assert await store.defer_execution(
            waiting.id, owner="w1", next_attempt_at=at(60), step=step, now=at(2)
        )
        running = await new_execution(store, acct.id, wf.id)
        assert await claim(store, running.id, owner="w2") is not None
        done = await new_execution(store, acct.id, wf.id)
        assert await claim(store, done.id, owner="w3") is not None
        assert await store.finish_execution(
            done.id, owner="w3", status=S, error=None, finished_at=at(3)
        )
        other_queued = await new_execution(store, acct.id, other_wf.id)
        other_running = await new_execution(store, acct.id, other_wf.id)
        assert await claim(store, other_running.id, owner="w4") is not None
        theirs = await new_account(store, "grace@example.com")
        their_wf = await new_workflow(store, theirs.id)
        their_queued = await new_execution(store, theirs.id, their_wf.id)
        their_running = await new_execution(store, theirs.id, their_wf.id)
        assert await claim(store, their_running.id, owner="w5") is not None

        got = await store.cancel_pending(acct.id, workflow_id=wf.id, now=at(7))
        assert (got.cancelled, got.stopping) == (2, [running.id])

        async def state(tenant_id: str, ex: Execution) -> tuple[Any, ...]:
            stored = await store.get_execution(tenant_id, ex.id)
            assert stored is not None
            assert_utc(stored)
            return stored.status, stored.cancel_requested, stored.finished_at, stored.error

        cancelled = (ExecutionStatus.cancelled, False, at(7), "cancelled by user")
        assert await state(acct.id, queued) == cancelled
        assert await state(acct.id, waiting) == cancelled
        assert await state(acct.id, running) == (R, True, None, None)
        assert await state(acct.id, done) == (S, False, at(3), None)
        assert await state(acct.id, other_queued) == (Q, False, None, None)
        assert await state(acct.id, other_running) == (R, False, None, None)
        # A cancelled execution is claimed by no worker that still holds its id.
        assert await claim(store, queued.id, owner="w9") is None

        got = await store.cancel_pending(acct.id, workflow_id=None, now=at(8))
        assert got.cancelled == 1
        assert sorted(got.stopping) == sorted([running.id, other_running.id])
        assert await store.count_queued(acct.id) == 0
        # Another tenant's are never touched.
        assert await state(theirs.id, their_queued) == (Q, False, None, None)
        assert await state(theirs.id, their_running) == (R, False, None, None)
        assert await store.count_queued(theirs.id) == 1

    async def test_nothing_pending(self, store: Store, acct: Account, wf: Workflow) -> None:
        got = await store.cancel_pending(acct.id, workflow_id=wf.id, now=at(7))
        assert (got.cancelled, got.stopping) == (0, [])


class TestReap:
    async def test_each_rule(self, store: Store, acct: Account, wf: Workflow) -> None:
        names = [
            "requeue",
            "cancel",
            "timeout_running",
            "live_past_deadline",
            "live",
            "timeout_queued",
            "queued",
            "done",
        ]
        ex = {name: await new_execution(store, acct.id, wf.id) for name in names}
        await claim(store, ex["requeue"].id, lease_s=30)
        await claim(store, ex["cancel"].id, lease_s=30)
        await store.request_cancel(acct.id, ex["cancel"].id, now=at(1))
        await claim(store, ex["timeout_running"].id, lease_s=30, timeout_s=10)
        await claim(store, ex["live_past_deadline"].id, lease_s=1000, timeout_s=10)
        await claim(store, ex["live"].id, lease_s=1000)
        await claim(store, ex["timeout_queued"].id, timeout_s=10)
        await store.release_execution(ex["timeout_queued"].id, owner="w1")
        await claim(store, ex["done"].id, timeout_s=10)
        await store.finish_execution(
            ex["done"].id,
            owner="w1",
            status=ExecutionStatus.succeeded,
            error=None,
            finished_at=at(5),
        )

        reaped = await store.reap(now=at(60))

        assert set(reaped.requeued) == {ex["requeue"].id}
        assert set(reaped.timed_out) == {ex["timeout_running"].id, ex["timeout_queued"].id}
        got = {name: await store.get_execution(acct.id, e.id) for name, e in ex.items()}
        state = {name: (e.status, e.lease_owner) for name, e in got.items() if e is not None}
        assert state == {
            "requeue": (Q, None),
            "cancel": (ExecutionStatus.cancelled, None),
            "timeout_running": (ExecutionStatus.timed_out, None),
            "live_past_deadline": (R, "w1"),
            "live": (R, "w1"),
            "timeout_queued": (ExecutionStatus.timed_out, None),
            "queued": (Q, None),
            "done": (ExecutionStatus.succeeded, None),
        }
        for name in ("cancel", "timeout_running", "timeout_queued"):
            ended = got[name]
            assert ended is not None
            assert ended.finished_at == at(60)
            assert ended.error
            assert ended.lease_expires_at is None
        requeued = got["requeue"]
        assert requeued is not None
        assert requeued.lease_expires_at is None
        assert requeued.finished_at is None
        done = got["done"]
        assert done is not None
        assert done.finished_at == at(5)

        # A second pass finds nothing left to do.
        again = await store.reap(now=at(60))
        assert (again.requeued, again.timed_out) == ([], [])

        # The re-queued execution resumes as a second attempt of the same run.
        reclaimed = await claim(store, ex["requeue"].id, owner="w2", now=at(61))
        assert reclaimed is not None
        assert (reclaimed.attempt, reclaimed.started_at, reclaimed.deadline_at) == (
            2,
            T0,
            at(TIMEOUT_S),
        )

    async def test_lost_lease_cannot_finish(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1", lease_s=30)
        await store.reap(now=at(60))
        await claim(store, ex.id, owner="w2", now=at(61))
        assert await store.renew_leases([ex.id], owner="w1", lease_until=at(99)) == set()
        assert (
            await store.finish_execution(
                ex.id, owner="w1", status=ExecutionStatus.succeeded, error=None, finished_at=at(62)
            )
            is False
        )
        assert (
            await store.finish_execution(
                ex.id, owner="w2", status=ExecutionStatus.succeeded, error=None, finished_at=at(63)
            )
            is True
        )


@pytest.mark.parametrize("store", [pytest.param("postgres", marks=POSTGRES_ONLY)], indirect=True)
async def test_the_reaper_skips_rows_another_transaction_holds(
    store: Store, acct: Account, wf: Workflow, postgres_url: str
) -> None:
    # Every worker and scheduler reaps. Reapers that waited for each other's row locks
    # deadlocked (seen in the chaos test: PostgreSQL aborted one, "deadlock detected"). A
    # reap skips a row another transaction holds and takes the rest; the next pass gets it.
    held = await new_execution(store, acct.id, wf.id)
    free = await new_execution(store, acct.id, wf.id)
    for ex in (held, free):
        await claim(store, ex.id, lease_s=30)
    engine = create_async_engine(postgres_url, poolclass=NullPool)
    try:
        async with engine.connect() as other:
            await other.execute(
                sa.text("SELECT 1 FROM execution WHERE id = :id FOR UPDATE"), {"id": held.id}
            )
            reaped = await asyncio.wait_for(store.reap(now=at(60)), 5)
            assert reaped.requeued == [free.id]
            await other.rollback()
        again = await store.reap(now=at(60))
        assert again.requeued == [held.id]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("store", [pytest.param("postgres", marks=POSTGRES_ONLY)], indirect=True)
async def test_a_renewal_takes_its_row_locks_in_id_order(
    store: Store, acct: Account, wf: Workflow, postgres_url: str
) -> None:
    # A worker's finishes lock their rows in id order. A renewal of its leases that locked
    # them in the table's order deadlocked with such a batch (seen in a scale-out run once
    # the table had statistics: PostgreSQL aborted the renewal, "deadlock detected"). Here
    # the newer row version (the table's order) is the higher id's; another transaction
    # holds the lower id and then asks for the higher one.
    made = [await new_execution(store, acct.id, wf.id) for _ in range(2)]
    low, high = sorted(ex.id for ex in made)
    for execution_id in (high, low):
        await claim(store, execution_id, owner="w1", lease_s=30)
    engine = create_async_engine(postgres_url, poolclass=NullPool)
    touch = sa.text("UPDATE execution SET error = 'held' WHERE id = :id")
    try:
        async with engine.connect() as other:
            await other.execute(touch, {"id": low})
            renewal = asyncio.create_task(
                store.renew_leases([low, high], owner="w1", lease_until=at(99))
            )
            await asyncio.sleep(0.3)  # the renewal waits for ``low``, holding nothing
            assert not renewal.done()
            await asyncio.wait_for(other.execute(touch, {"id": high}), 5)
            await other.rollback()
            assert await asyncio.wait_for(renewal, 5) == {low, high}
    finally:
        await engine.dispose()


async def test_queued_ids_oldest_first(store: Store, acct: Account, wf: Workflow) -> None:
    other = await new_account(store)
    wf_other = await new_workflow(store, other.id)
    made = [
        await new_execution(
            store, (acct.id, other.id)[i % 2], (wf.id, wf_other.id)[i % 2], created_at=at(10 - i)
        )
        for i in range(6)
    ]
    await claim(store, made[5].id)
    await store.request_cancel(acct.id, made[4].id, now=T0)
    assert await store.queued_ids(limit=3) == [made[3].id, made[2].id, made[1].id]
    assert await store.queued_ids(limit=10) == [m.id for m in made[3::-1]]


# -- the factory and the migrations -----------------------------------------------------------
class TestCreateStore:
    @pytest.mark.parametrize(
        ("url", "kind"),
        [
            ("memory://", MemoryStore),
            ("sqlite+aiosqlite:///./x.db", SqlStore),
            ("postgresql+asyncpg://u@localhost/db", SqlStore),
            # The URLs hosts and docs hand out, on this product's drivers (``Settings``).
            ("sqlite:///x.db", SqlStore),
            ("postgresql://h/db", SqlStore),
            ("postgres://h/db", SqlStore),
        ],
    )
    def test_picks_the_adapter(self, url: str, kind: type) -> None:
        assert isinstance(create_store(Settings(database_url=url)), kind)

    def test_refuses_other_schemes(self) -> None:
        with pytest.raises(ValueError, match="unsupported"):
            Settings(database_url="mysql://u@h/db")
        # Settings built without their checks (``model_copy``) still meet the store's own.
        unchecked = Settings().model_copy(update={"database_url": "mysql://u@h/db"})
        with pytest.raises(ValueError, match="unsupported"):
            create_store(unchecked)


def _schema_diff(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(
                        MigrationContext.configure(c, opts={"compare_type": True}), metadata
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _table_names(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _indexes(url: str, table: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: inspect(c).get_indexes(table))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _words(predicate: str) -> list[str]:
    """PostgreSQL gives a predicate back in its own words: ``((status)::text =
    'queued'::text)``, and an ``IN`` list as ``= ANY ((ARRAY['a'::character varying,
    ...])::text[])``. Its parentheses, casts and commas are left out of the comparison, and
    its ``= ANY ARRAY[...]`` read as ``IN``."""
    for cast in ("::character varying", "::text[]", "::text"):
        predicate = predicate.replace(cast, "")
    predicate = re.sub(r"=\s*ANY\s*\(+\s*ARRAY\[", " in ", predicate, flags=re.IGNORECASE)
    for mark in "()[],":
        predicate = predicate.replace(mark, " ")
    return predicate.lower().split()


class TestMigrations:
    def test_create_exactly_the_declared_schema(self, empty_sql_url: str) -> None:
        in_thread(lambda: run_migrations(empty_sql_url))
        assert in_thread(lambda: _schema_diff(empty_sql_url)) == []

    def test_existing_tokens_named_like_sessions_stay_sessions(self, empty_sql_url: str) -> None:
        """Migration 0011: before it, a password change ended tokens by name."""
        in_thread(lambda: command.upgrade(alembic_config(empty_sql_url), "0010"))
        rows = [("t1", "usr_1", "login"), ("t2", "usr_1", "signup"), ("t3", "usr_1", "ci")]
        rows.append(("t4", None, "login"))  # a token of no user is no one's session

        async def seed_and_read() -> dict[str, bool]:
            engine = create_async_engine(empty_sql_url, poolclass=NullPool)
            try:
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.text(
                            "INSERT INTO tenant (id, name, created_at) VALUES ('tn_1', 'A', :at)"
                        ),
                        {"at": T0},
                    )
                    await conn.execute(
                        sa.text(
                            "INSERT INTO app_user (id, tenant_id, email, password_hash, "
                            "created_at) VALUES ('usr_1', 'tn_1', 'a@b.co', 'h', :at)"
                        ),
                        {"at": T0},
                    )
                    for token_id, user_id, name in rows:
                        await conn.execute(
                            sa.text(
                                "INSERT INTO api_token (id, tenant_id, user_id, name, "
                                "token_hash, created_at) VALUES (:id, 'tn_1', :user_id, :name, "
                                ":id, :at)"
                            ),
                            {"id": token_id, "user_id": user_id, "name": name, "at": T0},
                        )
                await asyncio.to_thread(run_migrations, empty_sql_url)
                async with engine.connect() as conn:
                    found = await conn.execute(sa.text("SELECT id, session FROM api_token"))
                    return {token_id: bool(session) for token_id, session in found}
            finally:
                await engine.dispose()

        sessions = in_thread(lambda: asyncio.run(seed_and_read()))
        assert sessions == {"t1": True, "t2": True, "t3": False, "t4": False}

    def test_partial_indexes_keep_their_predicates(self, empty_sql_url: str) -> None:
        # compare_metadata does not compare a partial index's WHERE: read it back instead.
        in_thread(lambda: run_migrations(empty_sql_url))
        dialect = "postgresql" if empty_sql_url.startswith("postgresql") else "sqlite"
        declared = {
            str(index.name): str(index.dialect_options[dialect]["where"])
            for index in metadata.tables["execution"].indexes
            if index.dialect_options[dialect]["where"] is not None
        }
        assert set(declared) == {
            "ix_execution_workflow_id_dedup_key",
            "ix_execution_next_attempt_at",
            "ix_execution_tenant_id_finished_at",
            "ix_execution_queued",
            "ix_execution_running",
            "ix_execution_finished_at",
            "ix_execution_unsuccessful",
        }
        reflected = {
            index["name"]: str(index.get("dialect_options", {}).get(f"{dialect}_where"))
            for index in in_thread(lambda: _indexes(empty_sql_url, "execution"))
        }
        for name, predicate in declared.items():
            # PostgreSQL gives the predicate back in its own words: compare loosely.
            assert _words(reflected[name]) == _words(predicate), name

    def test_processes_migrating_at_once_all_succeed(
        self, empty_sql_url: str, tmp_path: Path
    ) -> None:
        """``ipaas serve`` migrates on every API machine, and a deploy may run a release step
        on each: at once. On PostgreSQL, two of three failed (a duplicate type) before the
        migrations took an advisory lock."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")}
        env |= {"IPAAS_DATABASE_URL": empty_sql_url, "IPAAS_DATA_DIR": str(tmp_path)}
        script = "from ipaas.cli import main; raise SystemExit(main(['migrate']))"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        outcomes = [(p.wait(timeout=120), p.stdout.read() if p.stdout else "") for p in processes]
        for process in processes:
            if process.stdout:
                process.stdout.close()
        assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
        assert in_thread(lambda: _schema_diff(empty_sql_url)) == []

    def test_the_code_knows_the_newest_revision(self) -> None:
        script = ScriptDirectory.from_config(alembic_config("sqlite://"))
        assert script.get_current_head() == SCHEMA_REVISION
        # Numbered in order from 0001: ``_check_schema`` compares them as numbers.
        revisions = [r.revision for r in script.walk_revisions()][::-1]
        assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]

    def test_a_store_starts_only_on_a_schema_as_new_as_its_code(
        self, empty_sql_url: str, logs: list[MutableMapping[str, Any]]
    ) -> None:
        """A worker of a new release started before (or without) ``ipaas migrate``: each
        statement that names a new column would fail."""

        def start() -> None:
            async def start_and_stop() -> None:
                store = SqlStore(empty_sql_url)
                await store.startup()
                await store.shutdown()

            in_thread(lambda: asyncio.run(start_and_stop()))

        with pytest.raises(SchemaBehind) as empty:
            start()
        assert (empty.value.found, empty.value.expected) == (None, SCHEMA_REVISION)
        assert "run `ipaas migrate`" in str(empty.value)
        previous = f"{int(SCHEMA_REVISION) - 1:04d}"
        in_thread(lambda: command.upgrade(alembic_config(empty_sql_url), previous))
        with pytest.raises(SchemaBehind) as older:
            start()
        assert older.value.found == previous
        in_thread(lambda: run_migrations(empty_sql_url))
        start()  # at the code's revision
        assert not [line for line in logs if line["event"] == "schema_newer_than_code"]
        # A newer schema (the release after this one migrated it) is let in, and said.

        async def bump() -> None:
            engine = create_async_engine(empty_sql_url, poolclass=NullPool)
            try:
                async with engine.begin() as conn:
                    await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
            finally:
                await engine.dispose()

        in_thread(lambda: asyncio.run(bump()))
        start()
        newer = [line for line in logs if line["event"] == "schema_newer_than_code"]
        assert [(line["found"], line["expected"]) for line in newer] == [("9999", SCHEMA_REVISION)]

    def test_rerun_downgrade_and_upgrade(self, empty_sql_url: str) -> None:
        in_thread(lambda: run_migrations(empty_sql_url))
        in_thread(lambda: run_migrations(empty_sql_url))  # already at head: a no-op
        config = alembic_config(empty_sql_url)
        in_thread(lambda: command.downgrade(config, "base"))
        assert in_thread(lambda: _table_names(empty_sql_url)) == {"alembic_version"}
        in_thread(lambda: run_migrations(empty_sql_url))
        assert in_thread(lambda: _table_names(empty_sql_url)) == {
            "alembic_version",
            *metadata.tables,
        }
