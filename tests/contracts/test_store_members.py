"""The Store contract for a tenant's members: invitations, their acceptance, role changes
and removals, and the owner a tenant always keeps."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ipaas.kit.ids import new_id
from ipaas.stores import DuplicateError, Store
from ipaas.stores.base import MemberChange
from ipaas.stores.sql import SqlStore, run_migrations
from ipaas.stores.sql.migrations import alembic_config
from ipaas.tenants.models import ApiToken, Role, User
from tests.contracts.conftest import in_thread
from tests.contracts.test_store import T0, Account, assert_utc, at, new_account

DONE, NOT_FOUND, LAST_OWNER = MemberChange.done, MemberChange.not_found, MemberChange.last_owner


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


async def invite(
    store: Store,
    tenant_id: str,
    *,
    role: Role = Role.member,
    email: str | None = None,
    created: float = 1,
    expires: float = 3600,
) -> User:
    user = User(
        id=new_id("usr"),
        tenant_id=tenant_id,
        email=email or f"{new_id('u')}@example.com",
        password_hash="",
        created_at=at(created),
        role=role,
        invite_hash=new_id("inv"),
        invite_expires_at=at(expires),
    )
    await store.create_user(user)
    return user


def session(tenant_id: str, *, created: float = 10) -> ApiToken:
    return ApiToken(
        id=new_id("tok"),
        tenant_id=tenant_id,
        user_id=None,
        name="login",
        token_hash=new_id("hash"),
        created_at=at(created),
        expires_at=at(7200),
        session=True,
    )


async def accept(store: Store, user: User, *, now: float = 10) -> ApiToken:
    """Accept ``user``'s invitation; the session it started, as stored."""
    assert user.invite_hash is not None
    token = session(user.tenant_id)
    assert await store.accept_invite(user.invite_hash, "argon2-new", token, now=at(now))
    stored = await store.get_token_by_hash(token.token_hash)
    assert stored is not None
    return stored


async def owners(store: Store, tenant_id: str) -> list[str]:
    return [u.id for u in await store.list_users(tenant_id) if u.role is Role.owner]


class TestUsers:
    async def test_listed_oldest_first_and_by_tenant(self, store: Store, acct: Account) -> None:
        other = await new_account(store)
        later = await invite(store, acct.id, created=2)
        earlier = await invite(store, acct.id, role=Role.owner, created=1)

        users = await store.list_users(acct.id)
        assert [u.id for u in users] == [acct.user.id, earlier.id, later.id]
        assert [u.role for u in users] == [Role.owner, Role.owner, Role.member]
        assert all(isinstance(u.role, Role) for u in users)
        assert [u.id for u in await store.list_users(other.id)] == [other.user.id]
        assert await store.list_users("tn_missing") == []

    async def test_an_invited_member_has_no_password(self, store: Store, acct: Account) -> None:
        user = await invite(store, acct.id, email="New.Member@Example.com")

        found = await store.get_user_by_email("new.member@example.com")
        assert found is not None
        assert found == await store.get_user(acct.id, user.id)
        assert found.email == "new.member@example.com"
        assert found.password_hash == ""
        assert found.invited
        assert found.role is Role.member
        assert found.invite_hash == user.invite_hash
        assert found.invite_expires_at == at(3600)
        assert_utc(found)

    @pytest.mark.parametrize("email", ["taken@example.com", "TAKEN@Example.com"])
    async def test_an_email_taken_in_any_tenant_is_a_duplicate(
        self, store: Store, acct: Account, email: str
    ) -> None:
        other = await new_account(store, email="taken@example.com")
        invited = await invite(store, other.id)

        for taken in (email, invited.email.upper()):
            with pytest.raises(DuplicateError):
                await invite(store, acct.id, email=taken)
        assert [u.id for u in await store.list_users(acct.id)] == [acct.user.id]


class TestAcceptInvite:
    async def test_sets_the_password_and_starts_a_session_of_the_user(
        self, store: Store, acct: Account
    ) -> None:
        user = await invite(store, acct.id)
        assert user.invite_hash is not None
        other = await new_account(store)
        token = session(other.id)  # the invitation's tenant replaces it

        accepted = await store.accept_invite(user.invite_hash, "argon2-new", token, now=at(10))

        assert accepted is not None
        assert accepted == await store.get_user(acct.id, user.id)
        assert (accepted.id, accepted.tenant_id, accepted.role) == (user.id, acct.id, Role.member)
        assert accepted.password_hash == "argon2-new"
        assert not accepted.invited
        assert accepted.invite_expires_at is None
        stored = await store.get_token_by_hash(token.token_hash)
        assert stored is not None
        assert (stored.id, stored.tenant_id, stored.user_id) == (token.id, acct.id, user.id)
        assert stored.session

    async def test_an_invitation_is_accepted_once(self, store: Store, acct: Account) -> None:
        user = await invite(store, acct.id)
        await accept(store, user)
        assert user.invite_hash is not None

        again = session(acct.id)
        assert await store.accept_invite(user.invite_hash, "other", again, now=at(11)) is None
        assert await store.get_token_by_hash(again.token_hash) is None
        stored = await store.get_user(acct.id, user.id)
        assert stored is not None
        assert stored.password_hash == "argon2-new"

    async def test_an_expired_invitation_writes_nothing(self, store: Store, acct: Account) -> None:
        user = await invite(store, acct.id, expires=10)
        assert user.invite_hash is not None
        token = session(acct.id)

        assert await store.accept_invite(user.invite_hash, "argon2-new", token, now=at(10)) is None

        assert await store.get_user(acct.id, user.id) == user
        assert await store.get_token_by_hash(token.token_hash) is None

    async def test_a_password_set_meanwhile_closes_it(self, store: Store, acct: Account) -> None:
        """The operator's reset (``ipaas user password``) of an invited user: the link must
        not set another password later."""
        user = await invite(store, acct.id)
        assert user.invite_hash is not None
        assert (
            await store.change_password(
                acct.id, user.id, "argon2-reset", keep_token_id=None, at=at(5)
            )
            == 0
        )
        stored = await store.get_user(acct.id, user.id)
        assert stored is not None
        assert (stored.invited, stored.invite_expires_at) == (False, None)
        token = session(acct.id)
        assert await store.accept_invite(user.invite_hash, "other", token, now=at(10)) is None

    async def test_an_unknown_invitation_is_none(self, store: Store, acct: Account) -> None:
        await invite(store, acct.id)
        token = session(acct.id)
        assert await store.accept_invite("inv_unknown", "argon2-new", token, now=at(10)) is None
        assert await store.get_token_by_hash(token.token_hash) is None


class TestChangeMember:
    async def test_sets_the_role(self, store: Store, acct: Account) -> None:
        user = await invite(store, acct.id)
        await accept(store, user)

        assert await store.change_member(acct.id, user.id, role=Role.owner) is DONE
        assert await owners(store, acct.id) == [acct.user.id, user.id]
        assert await store.change_member(acct.id, acct.user.id, role=Role.member) is DONE
        assert await owners(store, acct.id) == [user.id]
        found = await store.get_user(acct.id, acct.user.id)
        assert found is not None
        assert found.role is Role.member

    async def test_a_removal_deletes_the_user_and_every_token_it_holds(
        self, store: Store, acct: Account
    ) -> None:
        user = await invite(store, acct.id)
        signed_in = await accept(store, user)
        made = session(acct.id).model_copy(
            update={"user_id": user.id, "name": "ci", "session": False}
        )
        await store.create_token(made)

        assert await store.change_member(acct.id, user.id, role=None) is DONE

        assert await store.get_user(acct.id, user.id) is None
        assert [u.id for u in await store.list_users(acct.id)] == [acct.user.id]
        assert await store.get_token_by_hash(signed_in.token_hash) is None
        assert await store.get_token_by_hash(made.token_hash) is None
        assert await store.get_token_by_hash(acct.token.token_hash) is not None
        assert await store.change_member(acct.id, user.id, role=None) is NOT_FOUND

    async def test_an_invited_user_can_be_removed(self, store: Store, acct: Account) -> None:
        user = await invite(store, acct.id, role=Role.owner)
        assert await store.change_member(acct.id, user.id, role=None) is DONE
        assert await store.get_user_by_email(user.email) is None

    async def test_another_tenants_user_is_not_found(self, store: Store, acct: Account) -> None:
        other = await new_account(store)
        member = await invite(store, other.id)

        for user_id in (other.user.id, member.id, "usr_missing"):
            for role in (Role.owner, Role.member, None):
                assert await store.change_member(acct.id, user_id, role=role) is NOT_FOUND
        assert await store.change_member("tn_missing", member.id, role=None) is NOT_FOUND
        assert await store.list_users(other.id) == [other.user, member]
        assert await store.get_token_by_hash(other.token.token_hash) is not None

    async def test_the_last_owner_who_accepted_stays(self, store: Store, acct: Account) -> None:
        # An invited owner does not count: nobody might ever accept.
        await invite(store, acct.id, role=Role.owner)
        member = await invite(store, acct.id)
        await accept(store, member)

        for role in (Role.member, None):
            assert await store.change_member(acct.id, acct.user.id, role=role) is LAST_OWNER
        assert await store.get_user(acct.id, acct.user.id) == acct.user
        assert await store.get_token_by_hash(acct.token.token_hash) is not None
        assert await store.change_member(acct.id, acct.user.id, role=Role.owner) is DONE
        assert await store.change_member(acct.id, member.id, role=None) is DONE

    async def test_a_second_owner_who_accepted_lets_the_first_go(
        self, store: Store, acct: Account
    ) -> None:
        second = await invite(store, acct.id, role=Role.owner)
        await accept(store, second)

        assert await store.change_member(acct.id, acct.user.id, role=Role.member) is DONE
        assert await store.change_member(acct.id, second.id, role=None) is LAST_OWNER
        assert await store.change_member(acct.id, acct.user.id, role=Role.owner) is DONE
        assert await store.change_member(acct.id, acct.user.id, role=None) is DONE
        assert await owners(store, acct.id) == [second.id]

    async def test_concurrent_removals_of_two_owners_leave_one(self, store: Store) -> None:
        """Each removal sees the other owner until the other commits: only the tenant's lock
        keeps both from going on PostgreSQL. Several tenants: without the lock, one pair lost
        both owners in 2 runs of 5, five pairs in 10 of 10."""
        for _ in range(5):
            acct = await new_account(store)
            second = await invite(store, acct.id, role=Role.owner)
            await accept(store, second)

            changes = await asyncio.gather(
                store.change_member(acct.id, acct.user.id, role=None),
                store.change_member(acct.id, second.id, role=None),
            )

            assert sorted(changes) == [DONE, LAST_OWNER]
            assert len(await owners(store, acct.id)) == 1


def test_users_from_before_members_are_owners(empty_sql_url: str) -> None:
    """Migration 0014: until then each tenant had one user, who signed it up."""
    in_thread(lambda: command.upgrade(alembic_config(empty_sql_url), "0013"))

    async def seed() -> None:
        engine = create_async_engine(empty_sql_url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("INSERT INTO tenant (id, name, created_at) VALUES ('tn_1', 'A', :at)"),
                    {"at": T0},
                )
                await conn.execute(
                    sa.text(
                        "INSERT INTO app_user (id, tenant_id, email, password_hash, created_at) "
                        "VALUES ('usr_1', 'tn_1', 'a@b.co', 'h', :at)"
                    ),
                    {"at": T0},
                )
        finally:
            await engine.dispose()

    async def read() -> list[User]:
        store = SqlStore(empty_sql_url)
        await store.startup()
        try:
            return await store.list_users("tn_1")
        finally:
            await store.shutdown()

    in_thread(lambda: asyncio.run(seed()))
    in_thread(lambda: run_migrations(empty_sql_url))
    [user] = in_thread(lambda: asyncio.run(read()))
    assert user.role is Role.owner
    assert not user.invited
