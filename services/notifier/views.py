"""The notifier's read model: every email with its delivery state (the sender's work queue and
the delivery log)."""

from __future__ import annotations

from datetime import datetime
from functools import singledispatch
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backbone.follower import Recorded
from backbone.readmodel import upsert
from backbone.sqltypes import UtcDateTime
from services.notifier.domainmodel import PARKED, QUEUED, RETRYING, SENDING, SENT, Email

metadata = sa.MetaData()

emails = sa.Table(
    "emails",
    metadata,
    sa.Column("email_id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("template", sa.String(64), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=True),  # None once the subject is erased
    sa.Column("about", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("queued_at", UtcDateTime, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=True),
    sa.Column("sent_at", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_emails_due", "status", "next_attempt_at"),
    sa.Index("ix_emails_about", "tenant_id", "about"),
)


@singledispatch
def project(event: Any, conn: Connection) -> None:
    pass


@project.register
def _(event: Email.Queued, conn: Connection) -> None:
    upsert(
        conn,
        emails,
        {
            "email_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "template": event.template,
            "recipient": event.recipient.value,
            "about": event.about,
            "status": QUEUED,
            "attempts": 0,
            "queued_at": event.timestamp,
            "next_attempt_at": event.timestamp,
            "sent_at": None,
            "last_error": None,
        },
        keys=["email_id"],
    )


@project.register
def _(event: Email.AttemptStarted, conn: Connection) -> None:
    _update(conn, event, status=SENDING, attempts=event.attempt)


@project.register
def _(event: Email.Sent, conn: Connection) -> None:
    _update(conn, event, status=SENT, sent_at=event.timestamp, next_attempt_at=None, last_error=None)


@project.register
def _(event: Email.AttemptFailed, conn: Connection) -> None:
    _update(conn, event, status=RETRYING, next_attempt_at=event.retry_at, last_error=event.error)


@project.register
def _(event: Email.Parked, conn: Connection) -> None:
    _update(conn, event, status=PARKED, next_attempt_at=None, last_error=event.error)


def _update(conn: Connection, event: Any, **values: Any) -> None:
    conn.execute(sa.update(emails).where(emails.c.email_id == str(event.originator_id)).values(**values))


def apply(conn: Connection, recorded: Recorded) -> None:
    project(recorded.event, conn)


def due(conn: Connection, now: datetime, limit: int) -> list[UUID]:
    """Emails to (re)try now, oldest first. `sending` ones were interrupted by a crash."""
    rows = conn.execute(
        sa.select(emails.c.email_id)
        .where(
            sa.or_(
                emails.c.status.in_([QUEUED, SENDING]),
                sa.and_(emails.c.status == RETRYING, emails.c.next_attempt_at <= now),
            )
        )
        .order_by(emails.c.queued_at)
        .limit(limit)
    ).scalars()
    return [UUID(r) for r in rows]
