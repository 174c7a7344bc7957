"""The bookings service's read models: bookings by customer, accounts, tenant rules and
custom statuses.

Derived state only: `project` turns each recorded event into rows; drop the tables and the
projection rebuilds them from the event log. Personal columns (email, name) hold plaintext for
queries; they are scrubbed when a customer is erased, and a rebuild after the erasure finds
only erased values in the log (the key is gone), so it gives the same scrubbed answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from functools import singledispatch
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backbone.follower import Recorded
from backbone.readmodel import upsert
from backbone.sqltypes import UtcDateTime, jsonable
from services.bookings.customers import CustomerAccount
from services.bookings.domainmodel import Booking
from services.bookings.statuses import PRE, STOP, VOID, CustomStatus
from services.bookings.tenants import TenantPolicy, TenantStatuses

metadata = sa.MetaData()

bookings = sa.Table(
    "bookings",
    metadata,
    sa.Column("booking_id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("account_id", sa.String(36), nullable=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("customer_erased", sa.Boolean, nullable=False, default=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", sa.Numeric(14, 2), nullable=False),
    sa.Column("amount_paid", sa.Numeric(14, 2), nullable=False),
    sa.Column("starts_at", UtcDateTime, nullable=False),
    sa.Column("ends_at", UtcDateTime, nullable=False),
    sa.Column("placed_at", UtcDateTime, nullable=False),
    sa.Column("placed_position", sa.BigInteger, nullable=False),  # in the event log
    sa.Column("cancelled_at", UtcDateTime, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("lines", sa.JSON, nullable=False),
    sa.Column("terms", sa.JSON, nullable=False),  # frozen when placed
    sa.Index("ix_bookings_tenant_email", "tenant_id", "email"),
    sa.Index("ix_bookings_tenant_account", "tenant_id", "account_id"),
)

customer_accounts = sa.Table(
    "customer_accounts",
    metadata,
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("aggregate_id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("verified_email", sa.String(320), nullable=True),
    sa.Column("archived", sa.Boolean, nullable=False, default=False),
    sa.Column("redacted", sa.Boolean, nullable=False, default=False),
)

tenant_policies = sa.Table(
    "tenant_policies",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("aggregate_id", sa.String(36), nullable=False, unique=True),
    sa.Column("settings_version", sa.Integer, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
)

custom_statuses = sa.Table(
    "custom_statuses",
    metadata,
    sa.Column("statuses_id", sa.String(36), primary_key=True),  # the tenant's TenantStatuses
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("locks_inventory", sa.Boolean, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
)


@singledispatch
def project(event: Any, conn: Connection, recorded: Recorded) -> None:
    """Events that change no read model."""


# ---------------------------------------------------------------------------- bookings


@project.register
def _(event: Booking.Placed, conn: Connection, recorded: Recorded) -> None:
    upsert(
        conn,
        bookings,
        {
            "booking_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "code": event.code,
            "account_id": str(event.account_id) if event.account_id else None,
            "email": event.customer["email"].value,  # None once the customer is erased
            "name": event.customer["name"].value,
            "customer_erased": False,
            "status": event.status,
            "currency": event.currency,
            "total": event.total,
            "amount_paid": event.amount_paid,
            "starts_at": min(line["starts_at"] for line in event.lines),
            "ends_at": max(line["ends_at"] for line in event.lines),
            "placed_at": event.timestamp,
            "placed_position": recorded.position,
            "cancelled_at": None,
            "version": event.originator_version,
            "lines": jsonable(event.lines),
            "terms": jsonable(event.terms),
        },
        keys=["booking_id"],
    )


@project.register
def _(event: Booking.PaymentRecorded, conn: Connection, recorded: Recorded) -> None:
    paid = conn.execute(sa.select(bookings.c.amount_paid).where(_booking(event))).scalar_one()
    _update(conn, event, amount_paid=Decimal(paid) + event.amount)


@project.register
def _(event: Booking.StatusChanged, conn: Connection, recorded: Recorded) -> None:
    _update(conn, event, status=event.status)


@project.register
def _(event: Booking.Modified, conn: Connection, recorded: Recorded) -> None:
    values: dict[str, Any] = {}
    if event.lines is not None:
        values.update(
            lines=jsonable(event.lines),
            total=event.total,
            starts_at=min(line["starts_at"] for line in event.lines),
            ends_at=max(line["ends_at"] for line in event.lines),
        )
    if event.customer is not None:
        values.update(email=event.customer["email"].value, name=event.customer["name"].value)
    _update(conn, event, **values)


@project.register
def _(event: Booking.Cancelled, conn: Connection, recorded: Recorded) -> None:
    _update(conn, event, status=STOP, cancelled_at=event.cancelled_at)


@project.register
def _(event: Booking.Voided, conn: Connection, recorded: Recorded) -> None:
    _update(conn, event, status=VOID)


@project.register
def _(event: Booking.CustomerErased, conn: Connection, recorded: Recorded) -> None:
    _update(conn, event, email=None, name=None, customer_erased=True)


def _booking(event: Any) -> Any:
    return bookings.c.booking_id == str(event.originator_id)


def _update(conn: Connection, event: Any, **values: Any) -> None:
    conn.execute(
        sa.update(bookings).where(_booking(event)).values(version=event.originator_version, **values)
    )


# ---------------------------------------------------------------------------- accounts


@project.register
def _(event: CustomerAccount.Learned, conn: Connection, recorded: Recorded) -> None:
    upsert(
        conn,
        customer_accounts,
        {
            "account_id": str(event.account_id),
            "aggregate_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "email": event.email.value if event.email else None,
            "verified_email": None,
            "archived": False,
            "redacted": False,
        },
        keys=["account_id"],
    )


@project.register
def _(event: CustomerAccount.EmailVerified, conn: Connection, recorded: Recorded) -> None:
    _update_account(conn, event, verified_email=event.email.value)


@project.register
def _(event: CustomerAccount.Archived, conn: Connection, recorded: Recorded) -> None:
    _update_account(conn, event, archived=True)


@project.register
def _(event: CustomerAccount.Activated, conn: Connection, recorded: Recorded) -> None:
    _update_account(conn, event, archived=False)


@project.register
def _(event: CustomerAccount.Redacted, conn: Connection, recorded: Recorded) -> None:
    # The email stays until the erasure is carried out: the eraser finds the bookings by it.
    _update_account(conn, event, redacted=True)


@project.register
def _(event: CustomerAccount.Erased, conn: Connection, recorded: Recorded) -> None:
    _update_account(conn, event, email=None, verified_email=None)


def erases(event: Any) -> bool:
    """Events after which scrubbed personal data must be purged from the files."""
    return isinstance(event, Booking.CustomerErased | CustomerAccount.Erased)


def _update_account(conn: Connection, event: Any, **values: Any) -> None:
    conn.execute(
        sa.update(customer_accounts)
        .where(customer_accounts.c.aggregate_id == str(event.originator_id))
        .values(**values)
    )


# ---------------------------------------------------------------------------- tenants


@project.register
def _(event: TenantPolicy.Adopted, conn: Connection, recorded: Recorded) -> None:
    upsert(
        conn,
        tenant_policies,
        {
            "tenant_id": event.tenant_id,
            "aggregate_id": str(event.originator_id),
            "settings_version": event.settings_version,
            "settings": jsonable(event.settings),
        },
        keys=["tenant_id"],
    )


@project.register
def _(event: TenantPolicy.Updated, conn: Connection, recorded: Recorded) -> None:
    conn.execute(
        sa.update(tenant_policies)
        .where(tenant_policies.c.aggregate_id == str(event.originator_id))
        .values(settings_version=event.settings_version, settings=jsonable(event.settings))
    )


@project.register
def _(event: TenantStatuses.Defined, conn: Connection, recorded: Recorded) -> None:
    upsert(
        conn,
        custom_statuses,
        {
            "statuses_id": str(event.originator_id),
            "status": event.code,
            "label": event.label,
            "locks_inventory": event.locks_inventory,
            "active": True,
        },
        keys=["statuses_id", "status"],
    )


@project.register
def _(event: TenantStatuses.Retired, conn: Connection, recorded: Recorded) -> None:
    conn.execute(
        sa.update(custom_statuses)
        .where(
            custom_statuses.c.statuses_id == str(event.originator_id), custom_statuses.c.status == event.code
        )
        .values(active=False)
    )


def apply(conn: Connection, recorded: Recorded) -> None:
    project(recorded.event, conn, recorded)


# ----------------------------------------------------------------------------- queries


def customer_bookings(
    conn: Connection, tenant_id: str, account_id: UUID, verified_email: str, *, with_pre: bool
) -> list[dict[str, Any]]:
    """Every booking of a verified customer: made under their account, or with their verified
    email (also before the account existed); pre-bookings only when the tenant shows them."""
    query = (
        sa.select(bookings)
        .where(bookings.c.tenant_id == tenant_id)
        .where(sa.or_(bookings.c.account_id == str(account_id), bookings.c.email == verified_email))
        .order_by(bookings.c.starts_at.desc())
    )
    if not with_pre:
        query = query.where(bookings.c.status != PRE)
    return [dict(row) for row in conn.execute(query).mappings()]


def bookings_to_erase(
    conn: Connection,
    tenant_id: str,
    account_id: UUID,
    before_position: int,
    earlier_emails: Sequence[str] = (),
) -> list[UUID]:
    """The bookings made under an account or with its verified email (the current one, and
    `earlier_emails` it had verified before), placed before the decision to erase it (a later
    booking with one of those addresses is someone's new booking)."""
    email = conn.execute(
        sa.select(customer_accounts.c.verified_email).where(customer_accounts.c.account_id == str(account_id))
    ).scalar()
    emails = list(dict.fromkeys([*earlier_emails, *([email] if email else [])]))
    mine = bookings.c.account_id == str(account_id)
    if emails:
        mine = sa.or_(mine, bookings.c.email.in_(emails))
    rows = conn.execute(
        sa.select(bookings.c.booking_id)
        .where(bookings.c.tenant_id == tenant_id, bookings.c.placed_position < before_position, mine)
        .order_by(bookings.c.placed_position)
    ).scalars()
    return [UUID(booking_id) for booking_id in rows]


def tenant_custom_statuses(conn: Connection, tenant_id: str) -> dict[str, CustomStatus]:
    statuses_id = str(TenantStatuses.create_id(tenant_id))
    rows = conn.execute(
        sa.select(custom_statuses).where(custom_statuses.c.statuses_id == statuses_id)
    ).mappings()
    return {
        row["status"]: CustomStatus(row["status"], row["label"], row["locks_inventory"], row["active"])
        for row in rows
    }
