"""The staff directory: accounts to list and search, the blocklist, the staff members.

Derived state only (rebuilt from the event log when the tables are dropped). It holds contact
details in the clear so that staff can search them; a redaction scrubs the account's row and
purges the files (`ReadModel.purge`), and a rebuild after the erasure finds only erased values.
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backbone.follower import Recorded
from backbone.personal import Personal
from backbone.readmodel import upsert
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
    sa.Column("email", sa.String(320), nullable=True),  # NULL once erased
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("address", sa.JSON, nullable=True),
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
    sa.Index("ix_accounts_tenant_email", "tenant_id", "email"),
)

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


def _touch(conn: Connection, event: Any, **values: Any) -> None:
    conn.execute(
        sa.update(accounts)
        .where(accounts.c.account_id == str(event.originator_id))
        .values(updated_at=event.timestamp, version=event.originator_version, **values)
    )


@singledispatch
def project(event: Any, conn: Connection) -> None:
    """Events that change no table here."""


@project.register
def _(event: Account.Claimed, conn: Connection) -> None:
    upsert(
        conn,
        accounts,
        {
            "account_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "email": _plain(event.email),
            "name": _plain(event.name),
            "phone": _plain(event.phone),
            "address": _plain(event.address),
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


@project.register
def _(event: Account.ClaimRenewed, conn: Connection) -> None:
    _touch(conn, event, has_password=False)


@project.register
def _(event: Account.EmailCorrected, conn: Connection) -> None:
    _touch(conn, event, email=_plain(event.email))


@project.register
def _(event: Account.EmailVerified, conn: Connection) -> None:
    conn.execute(
        sa.update(accounts)
        .where(accounts.c.account_id == str(event.originator_id))
        .values(
            email=_plain(event.email),
            verified=True,
            verified_at=sa.func.coalesce(accounts.c.verified_at, event.at),
            updated_at=event.timestamp,
            version=event.originator_version,
        )
    )


@project.register
def _(event: Account.PasswordSet, conn: Connection) -> None:
    _touch(conn, event, has_password=True)


@project.register
def _(event: Account.ProfileChanged, conn: Connection) -> None:
    _touch(conn, event, **{field: _plain(value) for field, value in event.changes.items()})


@project.register
def _(event: Account.Archived, conn: Connection) -> None:
    _touch(conn, event, status=ARCHIVED)


@project.register
def _(event: Account.Activated, conn: Connection) -> None:
    _touch(conn, event, status=ACTIVE)


@project.register
def _(event: Account.Redacted, conn: Connection) -> None:
    _touch(conn, event, status=REDACTED, email=None, name=None, phone=None, address=None, has_password=False)


@project.register
def _(event: BlockedEmail.Blocked, conn: Connection) -> None:
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
def _(event: Any, conn: Connection) -> None:
    conn.execute(
        sa.update(blocklist)
        .where(blocklist.c.entry_id == str(event.originator_id))
        .values(
            blocked=isinstance(event, BlockedEmail.BlockedAgain),
            changed_at=event.timestamp,
            changed_by=_actor(event),
        )
    )


@project.register
def _(event: StaffMember.Added, conn: Connection) -> None:
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
def _(event: StaffMember.Removed, conn: Connection) -> None:
    conn.execute(sa.update(staff).where(staff.c.staff_id == str(event.originator_id)).values(active=False))


def _actor(event: Any) -> str:
    return str((getattr(event, "meta", None) or {}).get("actor") or "service:accounts")


def apply(conn: Connection, recorded: Recorded) -> None:
    project(recorded.event, conn)


def erases(event: Any) -> bool:
    """Events after which scrubbed personal data must be purged from the files."""
    return isinstance(event, Account.Redacted)


# ----------------------------------------------------------------------------- queries

Filter = Literal["all", "claimed", "unclaimed", "archived", "redacted"]


def directory(
    conn: Connection, tenant_id: str, status: Filter, search: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """One page of the tenant's accounts, newest first, and how many match in total.

    claimed = the customer proved the address; unclaimed = not yet (their own claim pending,
    or created by staff and awaiting the customer); both exclude archived and redacted."""
    where = [accounts.c.tenant_id == tenant_id]
    if status == "claimed":
        where += [accounts.c.status == ACTIVE, accounts.c.verified.is_(True)]
    elif status == "unclaimed":
        where += [accounts.c.status == ACTIVE, accounts.c.verified.is_(False)]
    elif status in (ARCHIVED, REDACTED):
        where.append(accounts.c.status == status)
    if search:
        needle = search.strip().lower()
        where.append(
            sa.or_(
                accounts.c.email.contains(needle, autoescape=True),
                sa.func.lower(accounts.c.name).contains(needle, autoescape=True),
                accounts.c.phone.contains(needle, autoescape=True),
            )
        )
    total = conn.execute(sa.select(sa.func.count()).select_from(accounts).where(*where)).scalar_one()
    rows = conn.execute(
        sa.select(accounts)
        .where(*where)
        .order_by(accounts.c.created_at.desc(), accounts.c.account_id)
        .limit(limit)
        .offset(offset)
    ).mappings()
    return total, [dict(row) for row in rows]


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
