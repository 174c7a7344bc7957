"""The bookings service's read models: bookings by customer, accounts, tenant rules.

Derived state only: `project` turns each recorded event into rows; drop the tables and the
projection rebuilds them from the event log.
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backbone.follower import Recorded
from backbone.readmodel import upsert
from backbone.sqltypes import UtcDateTime, jsonable
from services.bookings.domainmodel import Booking, CustomerAccount, TenantPolicy

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
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", sa.Numeric(14, 2), nullable=False),
    sa.Column("amount_paid", sa.Numeric(14, 2), nullable=False),
    sa.Column("starts_at", UtcDateTime, nullable=False),
    sa.Column("placed_at", UtcDateTime, nullable=False),
    sa.Column("cancelled_at", UtcDateTime, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("lines", sa.JSON, nullable=False),
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
)

tenant_policies = sa.Table(
    "tenant_policies",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("aggregate_id", sa.String(36), nullable=False, unique=True),
    sa.Column("settings_version", sa.Integer, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
)


@singledispatch
def project(event: Any, conn: Connection, recorded: Recorded) -> None:
    """Events that change no read model."""


@project.register
def _(event: Booking.Placed, conn: Connection, recorded: Recorded) -> None:
    lines = jsonable(event.lines)
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
            "status": event.status,
            "currency": event.currency,
            "total": event.total,
            "amount_paid": event.amount_paid,
            "starts_at": min(line["starts_at"] for line in event.lines),
            "placed_at": event.timestamp,
            "cancelled_at": None,
            "version": event.originator_version,
            "lines": lines,
        },
        keys=["booking_id"],
    )


@project.register
def _(event: Booking.Cancelled, conn: Connection, recorded: Recorded) -> None:
    conn.execute(
        sa.update(bookings)
        .where(bookings.c.booking_id == str(event.originator_id))
        .values(status="STOP", cancelled_at=event.cancelled_at, version=event.originator_version)
    )


@project.register
def _(event: CustomerAccount.Learned, conn: Connection, recorded: Recorded) -> None:
    upsert(
        conn,
        customer_accounts,
        {
            "account_id": str(event.account_id),
            "aggregate_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "email": event.email.value,
            "verified_email": None,
        },
        keys=["account_id"],
    )


@project.register
def _(event: CustomerAccount.EmailVerified, conn: Connection, recorded: Recorded) -> None:
    conn.execute(
        sa.update(customer_accounts)
        .where(customer_accounts.c.aggregate_id == str(event.originator_id))
        .values(verified_email=event.email.value)
    )


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


def apply(conn: Connection, recorded: Recorded) -> None:
    project(recorded.event, conn, recorded)


# ----------------------------------------------------------------------------- queries


def customer_bookings(
    conn: Connection, tenant_id: str, account_id: UUID, verified_email: str
) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(bookings)
        .where(bookings.c.tenant_id == tenant_id)
        .where(sa.or_(bookings.c.account_id == str(account_id), bookings.c.email == verified_email))
        .order_by(bookings.c.starts_at.desc())
    ).mappings()
    return [dict(row) for row in rows]
