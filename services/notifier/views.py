"""The notifier's read model: every email with its delivery state. It is the sender's work
queue and the staff's delivery log.

Recipients are kept *sealed* here too (subject id + ciphertext, under the same subject key as
in the event store), and opened through the vault only when the log is read: once a subject's
key is destroyed, its addresses cannot be read here either, whatever the order in which the
erasure and this projection ran. Erasures also null the ciphertext (`scrub`), so the rows no
longer hold it at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from functools import singledispatch
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backbone.follower import Recorded
from backbone.personal import Personal, UnknownSubject, Vault
from backbone.readmodel import ReadModel, update, upsert
from backbone.sqltypes import UtcDateTime
from contracts.personal import Sealed
from services.notifier.domainmodel import PARKED, QUEUED, RETRYING, SENDING, SENT, WITHDRAWN, Email

metadata = sa.MetaData()

emails = sa.Table(
    "emails",
    metadata,
    sa.Column("email_id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("template", sa.String(64), nullable=False),
    sa.Column("audience", sa.String(16), nullable=False),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("account_id", sa.String(36), nullable=True),
    sa.Column("booking_id", sa.String(36), nullable=True),
    sa.Column("recipient_subject", sa.String(36), nullable=True),
    sa.Column("recipient_sealed", sa.Text, nullable=True),  # NULL once the subject is erased
    sa.Column("subject", sa.String(300), nullable=True),  # the subject line that went out
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("queued_at", UtcDateTime, nullable=False),
    sa.Column("last_attempt_at", UtcDateTime, nullable=True),
    sa.Column("next_attempt_at", UtcDateTime, nullable=True),
    sa.Column("sent_at", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("source_event_id", sa.String(36), nullable=False),
    sa.Index("ix_emails_due", "status", "next_attempt_at"),
    sa.Index("ix_emails_account", "tenant_id", "account_id", "queued_at"),
    sa.Index("ix_emails_booking", "tenant_id", "booking_id", "queued_at"),
    sa.Index("ix_emails_subject", "recipient_subject"),
)


def projector(vault: Vault) -> Callable[[Connection, Recorded], None]:
    """The projection's apply function (it seals recipients with the vault)."""

    def apply(conn: Connection, recorded: Recorded) -> None:
        project(recorded.event, conn, vault)

    return apply


@singledispatch
def project(event: Any, conn: Connection, vault: Vault) -> None:
    pass


@project.register
def _(event: Email.Queued, conn: Connection, vault: Vault) -> None:
    upsert(
        conn,
        emails,
        {
            "email_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "template": event.template,
            "audience": event.audience,
            "language": event.language,
            "account_id": _str(event.account_id),
            "booking_id": _str(event.booking_id),
            **_recipient(event.recipient, vault),
            "subject": None,
            "status": QUEUED,
            "attempts": 0,
            "queued_at": event.timestamp,
            "last_attempt_at": None,
            "next_attempt_at": event.timestamp,
            "sent_at": None,
            "last_error": None,
            "source_event_id": str(event.source_event_id),
        },
        keys=["email_id"],
    )


@project.register
def _(event: Email.AttemptStarted, conn: Connection, vault: Vault) -> None:
    _update(
        conn,
        event,
        status=SENDING,
        attempts=event.attempt,
        last_attempt_at=event.at,
        next_attempt_at=event.lease_until,
    )


@project.register
def _(event: Email.Sent, conn: Connection, vault: Vault) -> None:
    _update(
        conn,
        event,
        status=SENT,
        subject=event.subject[:300],
        sent_at=event.timestamp,
        next_attempt_at=None,
        last_error=None,
    )


@project.register
def _(event: Email.AttemptFailed, conn: Connection, vault: Vault) -> None:
    _update(conn, event, status=RETRYING, next_attempt_at=event.retry_at, last_error=event.error)


@project.register
def _(event: Email.Parked, conn: Connection, vault: Vault) -> None:
    _update(conn, event, status=PARKED, next_attempt_at=None, last_error=event.error)


@project.register
def _(event: Email.Withdrawn, conn: Connection, vault: Vault) -> None:
    _update(conn, event, status=WITHDRAWN, next_attempt_at=None, last_error=event.reason)


@project.register
def _(event: Email.RetryRequested, conn: Connection, vault: Vault) -> None:
    values: dict[str, Any] = {"status": QUEUED, "next_attempt_at": event.timestamp, "last_error": None}
    if event.recipient is not None:
        values.update(_recipient(event.recipient, vault))
    _update(conn, event, **values)


def _update(conn: Connection, event: Any, **values: Any) -> None:
    update(conn, emails, {"email_id": str(event.originator_id)}, values)


def _recipient(recipient: Personal | None, vault: Vault) -> dict[str, Any]:
    if recipient is None:
        return {"recipient_subject": None, "recipient_sealed": None}
    sealed = None
    if recipient.value is not None:
        try:
            sealed = vault.seal(recipient.subject_id, recipient.value).ciphertext
        except KeyError:  # erased since the event was read: nothing to keep
            sealed = None
    return {"recipient_subject": str(recipient.subject_id), "recipient_sealed": sealed}


def _str(value: UUID | None) -> str | None:
    return str(value) if value is not None else None


# ------------------------------------------------------------------------------ queries


def due(conn: Connection, now: datetime, limit: int, skip_locked: bool = False) -> list[UUID]:
    """Emails to (re)try now, oldest first: queued ones, failed ones whose backoff is over, and
    interrupted ones (`sending` past their lease: their sender died). With `skip_locked`
    (PostgreSQL), the rows are locked until the caller's transaction ends, and rows another
    transaction locked are skipped: how senders claim disjoint batches."""
    query = (
        sa.select(emails.c.email_id)
        .where(
            sa.or_(
                emails.c.status == QUEUED,
                sa.and_(emails.c.status.in_([RETRYING, SENDING]), emails.c.next_attempt_at <= now),
            )
        )
        .order_by(emails.c.queued_at)
        .limit(limit)
    )
    if skip_locked and conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [UUID(r) for r in conn.execute(query).scalars()]


def delivery_log(
    conn: Connection,
    tenant_id: str,
    *,
    account_id: UUID | None = None,
    booking_id: UUID | None = None,
    status: str | None = None,
    before: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """A tenant's emails, newest first, optionally about one account or one booking (`before`:
    queued before that instant, to page back)."""
    query = sa.select(emails).where(emails.c.tenant_id == tenant_id)
    if before is not None:
        query = query.where(emails.c.queued_at < before)
    if account_id is not None:
        query = query.where(emails.c.account_id == str(account_id))
    if booking_id is not None:
        query = query.where(emails.c.booking_id == str(booking_id))
    if status is not None:
        query = query.where(emails.c.status == status)
    rows = conn.execute(query.order_by(emails.c.queued_at.desc(), emails.c.email_id).limit(limit))
    return [dict(row._mapping) for row in rows]


def email_row(conn: Connection, email_id: UUID) -> dict[str, Any] | None:
    row = conn.execute(sa.select(emails).where(emails.c.email_id == str(email_id))).first()
    return dict(row._mapping) if row is not None else None


def parked(conn: Connection, tenant_id: str | None = None, limit: int = 1000) -> list[UUID]:
    query = sa.select(emails.c.email_id).where(emails.c.status == PARKED)
    if tenant_id is not None:
        query = query.where(emails.c.tenant_id == tenant_id)
    return [UUID(r) for r in conn.execute(query.order_by(emails.c.queued_at).limit(limit)).scalars()]


def count_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(sa.select(emails.c.status, sa.func.count()).group_by(emails.c.status))
    counts = dict.fromkeys((QUEUED, SENDING, SENT, RETRYING, PARKED, WITHDRAWN), 0)
    counts.update({status: count for status, count in rows})
    return counts


def recipient(row: dict[str, Any], vault: Vault) -> str | None:
    """The row's recipient address in the clear, or None if erased (or never known)."""
    if row["recipient_subject"] is None or not row["recipient_sealed"]:
        return None
    sealed = Sealed(subject_id=UUID(row["recipient_subject"]), ciphertext=row["recipient_sealed"])
    try:
        opened = vault.open(sealed)
    except UnknownSubject:
        return None
    return opened.value if opened is not None else None


def scrub(read_model: ReadModel, subject_ids: Iterable[UUID]) -> None:
    """Forget the sealed addresses of erased subjects (idempotent)."""
    ids = [str(s) for s in subject_ids]
    if not ids:
        return
    with read_model.engine.begin() as conn:
        conn.execute(
            sa.update(emails).where(emails.c.recipient_subject.in_(ids)).values(recipient_sealed=None)
        )


class StaffQueries:
    """What the staff routes read from the read model, in a connection of its own (the routes
    open none). Entries hold the recipient in the clear (None once erased)."""

    def __init__(self, read_model: ReadModel, vault: Vault):
        self.read_model, self.vault = read_model, vault

    def entry(self, row: dict[str, Any]) -> dict[str, Any]:
        to = recipient(row, self.vault)
        return {
            **row,
            "kind": row["template"],
            "to": to,
            "recipient_erased": row["recipient_subject"] is not None and to is None,
        }

    def delivery_log(self, tenant_id: str, **filters: Any) -> list[dict[str, Any]]:
        """`delivery_log`'s rows of the tenant, as entries."""
        with self.read_model.engine.connect() as conn:
            rows = delivery_log(conn, tenant_id, **filters)
        return [self.entry(row) for row in rows]

    def email(self, tenant_id: str, email_id: UUID) -> dict[str, Any] | None:
        """One email of the tenant as an entry; None for any other's."""
        with self.read_model.engine.connect() as conn:
            row = email_row(conn, email_id)
        return self.entry(row) if row is not None and row["tenant_id"] == tenant_id else None

    def parked(self, tenant_id: str) -> list[UUID]:
        with self.read_model.engine.connect() as conn:
            return parked(conn, tenant_id)
