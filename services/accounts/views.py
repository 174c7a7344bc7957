"""The staff directory: accounts to list and search, the blocklist, the staff members.

Derived state only (rebuilt from the event log when the tables are dropped). Contact details are
never here in the clear (`backbone.blindindex`): each is sealed with the account's subject key
and opened only to answer a request (`opened`), and the search goes through `search_tokens`,
keyed hashes of the words' prefixes under the tenant's secret. After a redaction the account's
key is gone, so its sealed columns read as erased in every copy of the database (WAL, replicas,
backups); its tokens are deleted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import singledispatch
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backbone.blindindex import BlindIndex, open_column, seal_column
from backbone.follower import Recorded
from backbone.personal import Personal, Vault
from backbone.readmodel import ReadModel, replace, update, upsert
from backbone.readmodel import value as column_value
from backbone.sqltypes import UtcDateTime
from services.accounts.addresses import BlockedEmail
from services.accounts.domainmodel import ACTIVE, ARCHIVED, REDACTED, Account
from services.accounts.tenants import StaffMember

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    # Sealed with the account's key (its id is the subject): ciphertext, NULL once erased.
    # `opened` turns them into email, name, phone and address.
    sa.Column("email_sealed", sa.Text, nullable=True),
    sa.Column("name_sealed", sa.Text, nullable=True),
    sa.Column("phone_sealed", sa.Text, nullable=True),
    sa.Column("address_sealed", sa.Text, nullable=True),  # the address as JSON
    sa.Column("language", sa.String(8), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # active | archived | redacted
    sa.Column("verified", sa.Boolean, nullable=False),
    sa.Column("claimed_by", sa.String(16), nullable=False),
    sa.Column("has_password", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("verified_at", UtcDateTime, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Index("ix_accounts_tenant_status", "tenant_id", "status", "verified"),
)

# The directory's search: one row per (account, field, token); a token is a keyed hash of a
# prefix of a word of the field (backbone.blindindex). Deleted with the account's data.
search_tokens = sa.Table(
    "account_search_tokens",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("token", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("field", sa.String(16), primary_key=True),
    sa.Index("ix_account_tokensaccount", "account_id", "field"),
)

SEALED = ("email", "name", "phone", "address")
SEARCHED = ("email", "name", "phone")

blocklist = sa.Table(
    "blocklist",
    metadata,
    sa.Column("entry_id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("hint", sa.String(320), nullable=False),  # masked: j***@example.com
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("changed_at", UtcDateTime, nullable=False),
    sa.Column("changed_by", sa.String(120), nullable=False),
    sa.Index("ix_blocklist_tenant", "tenant_id", "blocked"),
)

staff = sa.Table(
    "staff_members",
    metadata,
    sa.Column("staff_id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("added_at", UtcDateTime, nullable=False),
    sa.Index("ix_staff_tenant", "tenant_id"),
)


def _plain(value: Any) -> Any:
    if isinstance(value, Personal):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _Sealer:
    """What the projection needs to write personal fields: the vault and the blind index."""

    def __init__(self, vault: Vault):
        self.vault = vault
        self.index = BlindIndex(vault)

    def columns(self, account_id: UUID, **fields: Any) -> dict[str, str | None]:
        """Personal fields as the table stores them: sealed with the account's key."""
        values: dict[str, str | None] = {}
        for field, value in fields.items():
            plain = _plain(value)
            if plain is not None and not isinstance(plain, str):
                plain = json.dumps(plain, sort_keys=True)
            values[f"{field}_sealed"] = (
                seal_column(self.vault, Personal(account_id, plain)) if plain else None
            )
        return values

    def reindex(self, conn: Connection, tenant_id: str, account_id: UUID, **fields: Any) -> None:
        """Replace the search tokens of the given fields (None: the field has no value)."""
        for field, value in fields.items():
            if field not in SEARCHED:
                continue
            plain = _plain(value)
            tokens = (
                self.index.search_tokens(tenant_id, phone=plain)
                if field == "phone"
                else self.index.search_tokens(tenant_id, plain)
            )
            rows = [(tenant_id, t) for t in sorted(tokens)]
            owner = {"account_id": str(account_id), "field": field}
            replace(conn, search_tokens, owner, ("tenant_id", "token"), rows)

    def forget(self, conn: Connection, account_id: UUID) -> None:
        for field in SEARCHED:  # by owner, as `reindex` writes them
            replace(
                conn,
                search_tokens,
                {"account_id": str(account_id), "field": field},
                ("tenant_id", "token"),
                (),
            )


def _tenant_of(conn: Connection, account_id: UUID) -> str | None:
    return column_value(conn, accounts, "tenant_id", {"account_id": str(account_id)})


def _touch(conn: Connection, event: Any, **values: Any) -> None:
    key = {"account_id": str(event.originator_id)}
    update(
        conn, accounts, key, {"updated_at": event.timestamp, "version": event.originator_version, **values}
    )


@singledispatch
def project(event: Any, conn: Connection, sealer: _Sealer) -> None:
    """Events that change no table here."""


@project.register
def _(event: Account.Claimed, conn: Connection, sealer: _Sealer) -> None:
    personal = {"email": event.email, "name": event.name, "phone": event.phone, "address": event.address}
    upsert(
        conn,
        accounts,
        {
            "account_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            **sealer.columns(event.originator_id, **personal),
            "language": event.language,
            "status": ACTIVE,
            "verified": False,
            "claimed_by": event.claimed_by,
            "has_password": event.password_hash is not None,
            "created_at": event.timestamp,
            "verified_at": None,
            "updated_at": event.timestamp,
            "version": event.originator_version,
        },
        keys=["account_id"],
    )
    sealer.reindex(conn, event.tenant_id, event.originator_id, **personal)


@project.register
def _(event: Account.ClaimRenewed, conn: Connection, sealer: _Sealer) -> None:
    _touch(conn, event, has_password=False)


@project.register
def _(event: Account.EmailCorrected, conn: Connection, sealer: _Sealer) -> None:
    _touch(conn, event, **sealer.columns(event.originator_id, email=event.email))
    _reindex(conn, sealer, event, email=event.email)


@project.register
def _(event: Account.EmailVerified, conn: Connection, sealer: _Sealer) -> None:
    _reindex(conn, sealer, event, email=event.email)
    key = {"account_id": str(event.originator_id)}
    verified_at = column_value(conn, accounts, "verified_at", key)  # the first verification's
    _touch(
        conn,
        event,
        **sealer.columns(event.originator_id, email=event.email),
        verified=True,
        verified_at=verified_at if verified_at is not None else event.at,
    )


@project.register
def _(event: Account.PasswordSet, conn: Connection, sealer: _Sealer) -> None:
    _touch(conn, event, has_password=True)


@project.register
def _(event: Account.ProfileChanged, conn: Connection, sealer: _Sealer) -> None:
    personal = {f: v for f, v in event.changes.items() if f in SEALED}
    plain = {f: _plain(v) for f, v in event.changes.items() if f not in SEALED}
    _touch(conn, event, **sealer.columns(event.originator_id, **personal), **plain)
    _reindex(conn, sealer, event, **personal)


@project.register
def _(event: Account.Archived, conn: Connection, sealer: _Sealer) -> None:
    _touch(conn, event, status=ARCHIVED)


@project.register
def _(event: Account.Activated, conn: Connection, sealer: _Sealer) -> None:
    _touch(conn, event, status=ACTIVE)


@project.register
def _(event: Account.Redacted, conn: Connection, sealer: _Sealer) -> None:
    # The key is destroyed with the redaction, so the sealed columns are unreadable anyway;
    # clearing them and deleting the tokens keeps the table tidy.
    scrubbed = {f"{field}_sealed": None for field in SEALED}
    _touch(conn, event, status=REDACTED, has_password=False, **scrubbed)
    sealer.forget(conn, event.originator_id)


def _reindex(conn: Connection, sealer: _Sealer, event: Any, **fields: Any) -> None:
    tenant_id = _tenant_of(conn, event.originator_id)
    if tenant_id is not None:
        sealer.reindex(conn, tenant_id, event.originator_id, **fields)


@project.register
def _(event: BlockedEmail.Blocked, conn: Connection, sealer: _Sealer) -> None:
    upsert(
        conn,
        blocklist,
        {
            "entry_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "hint": event.hint,
            "blocked": True,
            "changed_at": event.timestamp,
            "changed_by": _actor(event),
        },
        keys=["entry_id"],
    )


@project.register(BlockedEmail.Unblocked)
@project.register(BlockedEmail.BlockedAgain)
def _(event: Any, conn: Connection, sealer: _Sealer) -> None:
    update(
        conn,
        blocklist,
        {"entry_id": str(event.originator_id)},
        {
            "blocked": isinstance(event, BlockedEmail.BlockedAgain),
            "changed_at": event.timestamp,
            "changed_by": _actor(event),
        },
    )


@project.register
def _(event: StaffMember.Added, conn: Connection, sealer: _Sealer) -> None:
    upsert(
        conn,
        staff,
        {
            "staff_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "label": event.label,
            "active": True,
            "added_at": event.timestamp,
        },
        keys=["staff_id"],
    )


@project.register
def _(event: StaffMember.Removed, conn: Connection, sealer: _Sealer) -> None:
    update(conn, staff, {"staff_id": str(event.originator_id)}, {"active": False})


def _actor(event: Any) -> str:
    return str((getattr(event, "meta", None) or {}).get("actor") or "service:accounts")


def projector(vault: Vault) -> Callable[[Connection, Recorded], None]:
    """The projection's apply function (it seals personal fields with the vault)."""
    sealer = _Sealer(vault)

    def apply(conn: Connection, recorded: Recorded) -> None:
        project(recorded.event, conn, sealer)

    return apply


def erases(event: Any) -> bool:
    """Events after which scrubbed personal data must be purged from the files."""
    return isinstance(event, Account.Redacted)


# ----------------------------------------------------------------------------- queries

Filter = Literal["all", "claimed", "unclaimed", "archived", "redacted"]


def directory(
    conn: Connection,
    tenant_id: str,
    status: Filter,
    tokens: list[str] | None,
    limit: int,
    offset: int,
) -> tuple[int, list[dict[str, Any]]]:
    """One page of the tenant's accounts, newest first, and how many match in total. Rows are
    sealed: open them with `opened` to answer.

    claimed = the customer proved the address; unclaimed = not yet (their own claim pending,
    or created by staff and awaiting the customer); both exclude archived and redacted.
    `tokens` are `BlindIndex.query_tokens` of the search: a row matches when it has
    every one of them (in any of its fields)."""
    where = [accounts.c.tenant_id == tenant_id]
    if status == "claimed":
        where += [accounts.c.status == ACTIVE, accounts.c.verified.is_(True)]
    elif status == "unclaimed":
        where += [accounts.c.status == ACTIVE, accounts.c.verified.is_(False)]
    elif status in (ARCHIVED, REDACTED):
        where.append(accounts.c.status == status)
    if tokens:
        matching = (
            sa.select(search_tokens.c.account_id)
            .where(search_tokens.c.tenant_id == tenant_id, search_tokens.c.token.in_(tokens))
            .group_by(search_tokens.c.account_id)
            .having(sa.func.count(sa.distinct(search_tokens.c.token)) == len(set(tokens)))
        )
        where.append(accounts.c.account_id.in_(matching))
    total = conn.execute(sa.select(sa.func.count()).select_from(accounts).where(*where)).scalar_one()
    rows = conn.execute(
        sa.select(accounts)
        .where(*where)
        .order_by(accounts.c.created_at.desc(), accounts.c.account_id)
        .limit(limit)
        .offset(offset)
    ).mappings()
    return total, [dict(row) for row in rows]


def opened(row: dict[str, Any], vault: Vault) -> dict[str, Any]:
    """A row with its personal fields in the clear (None once erased), to answer a request."""
    plain = {k: v for k, v in row.items() if not k.endswith("_sealed")}
    for field in SEALED:
        plain[field] = open_column(vault, row["account_id"], row.get(f"{field}_sealed"))
    if plain.get("address") is not None:
        plain["address"] = json.loads(plain["address"])
    return plain


def account_row(conn: Connection, tenant_id: str, account_id: UUID) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.select(accounts).where(
                accounts.c.tenant_id == tenant_id, accounts.c.account_id == str(account_id)
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def blocked_emails(conn: Connection, tenant_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(blocklist)
        .where(blocklist.c.tenant_id == tenant_id, blocklist.c.blocked.is_(True))
        .order_by(blocklist.c.changed_at.desc())
    ).mappings()
    return [dict(row) for row in rows]


def staff_members(conn: Connection, tenant_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(staff).where(staff.c.tenant_id == tenant_id).order_by(staff.c.added_at)
    ).mappings()
    return [dict(row) for row in rows]


class StaffQueries:
    """What the staff routes read from the read model, each in a connection of its own (the
    routes open none). Answers hold personal fields in the clear, opened with the vault."""

    def __init__(self, read_model: ReadModel, vault: Vault):
        self.read_model, self.vault = read_model, vault
        self.index = BlindIndex(vault)  # the directory's search, on keyed hashes only

    def search(
        self, tenant_id: str, status: Filter, q: str | None, limit: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        tokens = self.index.query_tokens(tenant_id, q) if q and q.strip() else None
        if tokens == []:  # only punctuation: no word to look for, so nothing matches
            return 0, []
        with self.read_model.engine.connect() as conn:
            total, rows = directory(conn, tenant_id, status, tokens, limit, offset)
        return total, [opened(row, self.vault) for row in rows]

    def account(self, tenant_id: str, account_id: UUID) -> dict[str, Any] | None:
        with self.read_model.engine.connect() as conn:
            row = account_row(conn, tenant_id, account_id)
        return opened(row, self.vault) if row is not None else None

    def until_shown(self, account_id: UUID, version: int, patience: float = 2.0) -> bool:
        """Wait (a little) until the read model shows an account at `version` or later: the
        staff member who just changed it sees the change on their next page (the directory,
        the account's page). False if it did not within `patience` seconds (the projection is
        behind: it shows the change later)."""
        deadline = time.monotonic() + patience
        pause = 0.002
        query = sa.select(accounts.c.version).where(accounts.c.account_id == str(account_id))
        while True:
            with self.read_model.engine.connect() as conn:
                shown = conn.execute(query).scalar()
            if shown is not None and shown >= version:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def blocked_emails(self, tenant_id: str) -> list[dict[str, Any]]:
        with self.read_model.engine.connect() as conn:
            return blocked_emails(conn, tenant_id)

    def staff_members(self, tenant_id: str) -> list[dict[str, Any]]:
        with self.read_model.engine.connect() as conn:
            return staff_members(conn, tenant_id)
