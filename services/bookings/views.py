"""The bookings service's read models: bookings by customer (with what a customer's answer
needs: contact details, form answers, the version to confirm against, the history), accounts,
tenant rules and custom statuses.

Derived state only: `project` turns each recorded event into rows; drop the tables and the
projection rebuilds them from the event log.

No personal data in the clear (`backbone.blindindex`): a booking's customer details (email,
name, the contact details and the form's answers) and a customer's cancellation reason in the
history are sealed with the booking's subject key (`customer_subject`) and opened only to answer
(`opened`, `opened_history`); "the bookings of this verified address" compares blind-index
tokens (`email_token`, `verified_email_token`: keyed hashes under the tenant's secret). Once a
customer is erased the keys are gone, so every copy of these rows (WAL, replicas, backups) reads
as erased.

The customers' read path (`reads.py`) answers from these tables alone, never by replaying an
aggregate: whatever a customer's answer shows must be projected here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import singledispatch
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backbone.blindindex import BlindIndex, open_column
from backbone.context import Cause
from backbone.follower import Recorded
from backbone.personal import Personal, UnknownSubject, Vault, encrypt
from backbone.readmodel import AFTER_REBUILD, prefetch, replace, update, upsert, value
from backbone.sqltypes import UtcDateTime, jsonable
from services.bookings import history
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
    sa.Column("customer_subject", sa.String(36), nullable=True),  # whose key opens the *_sealed
    sa.Column("email_sealed", sa.Text, nullable=True),  # `opened` gives email, name, contact, form
    sa.Column("name_sealed", sa.Text, nullable=True),
    sa.Column("email_token", sa.String(32), nullable=True),  # blind index of the email
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
    sa.Column("contact_sealed", sa.Text, nullable=True),  # email, name, phone as JSON
    sa.Column("form_sealed", sa.Text, nullable=True),  # the booking form's answers as JSON
    # The field names (not personal): what an erased customer's contact and form read as.
    sa.Column("contact_fields", sa.JSON, nullable=False),
    sa.Column("form_fields", sa.JSON, nullable=False),
    # Queries' indexes only (the projection reads bookings by their id): made after a rebuild.
    sa.Index("ix_bookings_tenant_email_token", "tenant_id", "email_token", info={AFTER_REBUILD: True}),
    sa.Index("ix_bookings_tenant_account", "tenant_id", "account_id", info={AFTER_REBUILD: True}),
)

customer_accounts = sa.Table(
    "customer_accounts",
    metadata,
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("aggregate_id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("verified", sa.Boolean, nullable=False, default=False),  # stays once erased
    sa.Column("verified_email_token", sa.String(32), nullable=True),  # blind index
    sa.Column("sessions_revoked_before", UtcDateTime, nullable=True),
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

booking_history = sa.Table(
    "booking_history",
    metadata,
    sa.Column("booking_id", sa.String(36), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("what", sa.String(32), nullable=False),
    sa.Column("facts", sa.JSON, nullable=False),  # see history.recorded
)

# The staff's search by customer: keyed hashes of the beginnings of the words of the customer's
# name and email (backbone.blindindex), deleted with the customer's details.
search_tokens = sa.Table(
    "booking_search_tokens",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("token", sa.String(32), primary_key=True),
    sa.Column("booking_id", sa.String(36), primary_key=True),
    sa.Index("ix_booking_search_tokens_booking", "booking_id"),
    sqlite_with_rowid=False,  # the rows are their key: one B-tree fewer to write (SQLite)
)

_TOKEN_COLUMNS = ("tenant_id", "token")  # a booking's rows in `search_tokens` (`replace`)

custom_statuses = sa.Table(
    "custom_statuses",
    metadata,
    sa.Column("statuses_id", sa.String(36), primary_key=True),  # the tenant's TenantStatuses
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("locks_inventory", sa.Boolean, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
)


class _Sealer:
    """What the projection needs for personal fields: the vault and the blind index."""

    def __init__(self, vault: Vault):
        self.vault = vault
        self.index = BlindIndex(vault)

    def customer(self, tenant_id: str, subject: UUID, customer: dict[str, Any]) -> dict[str, Any]:
        return {
            "customer_subject": str(subject),
            "email_sealed": self.seal(customer.get("email")),
            "name_sealed": self.seal(customer.get("name")),
            "email_token": self.token(tenant_id, customer.get("email")),
            "contact_sealed": self.json(subject, _plain(customer)),
            "contact_fields": sorted(customer),
        }

    def reindex(
        self,
        conn: Connection,
        tenant_id: str,
        booking_id: UUID,
        customer: dict[str, Any] | None,
        *,
        new: bool = False,
    ) -> None:
        """Replace the booking's search tokens (none once the customer is erased); `new`: a
        booking just placed, which has none yet."""
        plain = _plain(customer or {})
        tokens = self.index.search_tokens(tenant_id, plain.get("name"), plain.get("email"))
        rows = [(tenant_id, t) for t in sorted(tokens)]
        replace(conn, search_tokens, {"booking_id": str(booking_id)}, _TOKEN_COLUMNS, rows, new=new)

    def form(self, subject: UUID, form: dict[str, Any]) -> dict[str, Any]:
        return {"form_sealed": self.json(subject, _plain(form)), "form_fields": sorted(form)}

    def json(self, subject: UUID, values: dict[str, Any]) -> str | None:
        if not values or all(v is None for v in values.values()):
            return None
        return self.seal(Personal(subject, json.dumps(values, sort_keys=True)))

    def seal(self, value: Personal | None) -> str | None:
        """`seal_column`, without the `Sealed` model it makes (a rebuild seals millions)."""
        if value is None or value.value is None:
            return None
        try:
            key = self.vault.key(value.subject_id)
        except UnknownSubject:
            key = self.vault.key_for(value.subject_id)
        if key is None:  # erased since the event was read: nothing to keep
            return None
        return encrypt(key, value.subject_id, value.value)

    def token(self, tenant_id: str, email: Personal | None) -> str | None:
        if email is None or email.value is None:
            return None
        return self.index.exact(tenant_id, email.value)


@singledispatch
def project(event: Any, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    """Events that change no read model."""


# ---------------------------------------------------------------------------- bookings


@project.register
def _(event: Booking.Placed, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    upsert(
        conn,
        bookings,
        {
            "booking_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "code": event.code,
            "account_id": str(event.account_id) if event.account_id else None,
            **sealer.customer(event.tenant_id, _subject(event), event.customer),  # None once erased
            **sealer.form(_subject(event), event.form or {}),
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
    sealer.reindex(conn, event.tenant_id, event.originator_id, event.customer, new=True)


@project.register
def _(event: Booking.PaymentRecorded, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    paid = _booking_value(conn, event, "amount_paid")
    _update(conn, event, amount_paid=Decimal(paid) + event.amount)


@project.register
def _(event: Booking.StatusChanged, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    _update(conn, event, status=event.status)


@project.register
def _(event: Booking.Modified, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    values: dict[str, Any] = {}
    if event.lines is not None:
        values.update(
            lines=jsonable(event.lines),
            total=event.total,
            starts_at=min(line["starts_at"] for line in event.lines),
            ends_at=max(line["ends_at"] for line in event.lines),
        )
    if event.customer is not None:
        tenant_id = _booking_value(conn, event, "tenant_id")
        values.update(sealer.customer(tenant_id, _subject(event), event.customer))
        sealer.reindex(conn, tenant_id, event.originator_id, event.customer)
    if event.form is not None:
        values.update(sealer.form(_subject(event), event.form))
    _update(conn, event, **values)


@project.register
def _(event: Booking.Cancelled, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    _update(conn, event, status=STOP, cancelled_at=event.cancelled_at)


@project.register
def _(event: Booking.Voided, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    _update(conn, event, status=VOID)


@project.register
def _(event: Booking.CustomerErased, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    # The key goes with the erasure, so the sealed columns read as erased anyway.
    erased = {"email_sealed": None, "name_sealed": None, "contact_sealed": None, "form_sealed": None}
    _update(conn, event, email_token=None, customer_erased=True, **erased)
    replace(conn, search_tokens, {"booking_id": str(event.originator_id)}, _TOKEN_COLUMNS, ())


def _booking(event: Any) -> dict[str, Any]:
    return {"booking_id": str(event.originator_id)}


def _booking_value(conn: Connection, event: Any, column: str) -> Any:
    found = value(conn, bookings, column, _booking(event))
    if found is None:  # the log is out of order or the tables were changed by hand
        raise LookupError(f"no booking {event.originator_id} in the read model for {type(event).__name__}")
    return found


def _update(conn: Connection, event: Any, **values: Any) -> None:
    update(conn, bookings, _booking(event), {"version": event.originator_version, **values})


def _subject(event: Any) -> UUID:
    """The data subject of a booking's customer details: the booking itself."""
    return event.originator_id


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Personal values as their plain text (None: absent, or erased)."""
    return {key: (value.value if value is not None else None) for key, value in values.items()}


def _record_history(event: Any, conn: Connection, sealer: _Sealer) -> None:
    facts = history.recorded(event)
    if facts is None:
        return
    if facts.get("reason") is not None:  # the customer's own words: personal, sealed here too
        reason = facts["reason"]
        text = reason.value if isinstance(reason, Personal) else reason
        facts["reason"] = {"sealed": sealer.seal(Personal(_subject(event), text))}
    upsert(
        conn,
        booking_history,
        {
            "booking_id": str(event.originator_id),
            "version": event.originator_version,
            "at": event.timestamp,
            "actor": Cause.from_meta(getattr(event, "meta", None)).actor,
            "what": facts.pop("what"),
            "facts": jsonable(facts),
        },
        keys=["booking_id", "version"],
    )


# ---------------------------------------------------------------------------- accounts


@project.register
def _(event: CustomerAccount.Learned, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    upsert(
        conn,
        customer_accounts,
        {
            "account_id": str(event.account_id),
            "aggregate_id": str(event.originator_id),
            "tenant_id": event.tenant_id,
            "verified": False,
            "verified_email_token": None,
            "sessions_revoked_before": None,
            "archived": False,
            "redacted": False,
        },
        keys=["account_id"],
    )


@project.register
def _(event: CustomerAccount.EmailVerified, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    token = sealer.token(_account_tenant(conn, event), event.email)
    _update_account(conn, event, verified=True, verified_email_token=token)


@project.register
def _(event: CustomerAccount.SessionsRevoked, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    _update_account(conn, event, sessions_revoked_before=event.before)


@project.register
def _(event: CustomerAccount.Archived, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    _update_account(conn, event, archived=True)


@project.register
def _(event: CustomerAccount.Activated, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    _update_account(conn, event, archived=False)


@project.register
def _(event: CustomerAccount.Redacted, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    # The token stays until the erasure is carried out: the eraser finds the bookings by it.
    _update_account(conn, event, redacted=True)


@project.register
def _(event: CustomerAccount.Erased, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    _update_account(conn, event, verified_email_token=None)


def erases(event: Any) -> bool:
    """Events after which scrubbed personal data must be purged from the files."""
    return isinstance(event, Booking.CustomerErased | CustomerAccount.Erased)


def _account_tenant(conn: Connection, event: Any) -> str:
    return conn.execute(
        sa.select(customer_accounts.c.tenant_id).where(
            customer_accounts.c.aggregate_id == str(event.originator_id)
        )
    ).scalar_one()


def _update_account(conn: Connection, event: Any, **values: Any) -> None:
    conn.execute(
        sa.update(customer_accounts)
        .where(customer_accounts.c.aggregate_id == str(event.originator_id))
        .values(**values)
    )


# ---------------------------------------------------------------------------- tenants


@project.register
def _(event: TenantPolicy.Adopted, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
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
def _(event: TenantPolicy.Updated, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    conn.execute(
        sa.update(tenant_policies)
        .where(tenant_policies.c.aggregate_id == str(event.originator_id))
        .values(settings_version=event.settings_version, settings=jsonable(event.settings))
    )


@project.register
def _(event: TenantStatuses.Defined, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
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
def _(event: TenantStatuses.Retired, conn: Connection, recorded: Recorded, sealer: _Sealer) -> None:
    conn.execute(
        sa.update(custom_statuses)
        .where(
            custom_statuses.c.statuses_id == str(event.originator_id), custom_statuses.c.status == event.code
        )
        .values(active=False)
    )


def projector(vault: Vault) -> Callable[[Connection, Recorded], None]:
    """The projection's apply function (it seals personal fields and indexes emails)."""
    sealer = _Sealer(vault)

    def apply(conn: Connection, recorded: Recorded) -> None:
        project(recorded.event, conn, recorded, sealer)
        if isinstance(recorded.event, Booking.Event):
            _record_history(recorded.event, conn, sealer)

    apply.read_ahead = _read_ahead  # type: ignore[attr-defined]
    return apply


def _read_ahead(conn: Connection, batch: Sequence[Recorded]) -> None:
    """What a batch's events read from `bookings` (`_booking_value`: a payment's amount paid so
    far, the tenant of changed customer details), in one query rather than one per event
    (`Projection.read_ahead`)."""
    placed: set[UUID] = set()
    wanted: set[str] = set()
    for recorded in batch:
        event = recorded.event
        if isinstance(event, Booking.Placed):
            placed.add(event.originator_id)
        elif (
            isinstance(event, Booking.PaymentRecorded | Booking.Modified)
            and event.originator_id not in placed
        ):
            wanted.add(str(event.originator_id))
    if wanted:
        prefetch(conn, bookings, ("amount_paid", "tenant_id"), wanted)


# ----------------------------------------------------------------------------- queries


# What a booking's summary shows (`answers.row_summary`), and what says whose it is.
SUMMARY_COLUMNS = [
    bookings.c[name]
    for name in (
        "booking_id", "tenant_id", "code", "account_id", "email_token", "status", "currency", "total",
        "amount_paid", "starts_at", "ends_at", "version", "lines", "terms",
    )
]  # fmt: skip


def _customer_bookings_query(*, with_pre: bool) -> Any:
    # Built once: building a statement costs more than running it on a customer's few rows.
    # The tenant is named in each side of the OR, so that each side is one index's search (SQLite:
    # MULTI-INDEX OR; PostgreSQL: a BitmapOr). With `tenant_id = ? AND (account_id = ? OR
    # email_token = ?)` SQLite searched `ix_bookings_tenant_account` by the tenant alone, reading
    # every booking of the tenant for each customer's page: 11 ms a listing with 20,000 bookings
    # (docs/performance.md, "Memory over a soak", 2026-12-01 round 3).
    tenant = bookings.c.tenant_id == sa.bindparam("tenant_id")
    query = (
        sa.select(*SUMMARY_COLUMNS)
        .where(
            sa.or_(
                sa.and_(tenant, bookings.c.account_id == sa.bindparam("account_id")),
                sa.and_(tenant, bookings.c.email_token == sa.bindparam("email_token")),
            )
        )
        .order_by(bookings.c.starts_at.desc())
    )
    return query if with_pre else query.where(bookings.c.status != PRE)


_CUSTOMER_BOOKINGS = {with_pre: _customer_bookings_query(with_pre=with_pre) for with_pre in (False, True)}
# The same bookings, only which and at what version (what a cached summary is checked against).
_CUSTOMER_BOOKING_VERSIONS = {
    with_pre: query.with_only_columns(bookings.c.booking_id, bookings.c.version)
    for with_pre, query in _CUSTOMER_BOOKINGS.items()
}
_SUMMARY_ROWS = sa.select(*SUMMARY_COLUMNS).where(
    bookings.c.booking_id.in_(sa.bindparam("ids", expanding=True))
)


def customer_bookings(
    conn: Connection, tenant_id: str, account_id: UUID, verified_email_token: str | None, *, with_pre: bool
) -> list[dict[str, Any]]:
    """Every booking of a verified customer (`SUMMARY_COLUMNS`): made under their account, or
    with their verified email (its blind-index token; also before the account existed);
    pre-bookings only when the tenant shows them. Latest start first."""
    params = {"tenant_id": tenant_id, "account_id": str(account_id), "email_token": verified_email_token}
    return [dict(row) for row in conn.execute(_CUSTOMER_BOOKINGS[with_pre], params).mappings()]


def customer_booking_versions(
    conn: Connection, tenant_id: str, account_id: UUID, verified_email_token: str | None, *, with_pre: bool
) -> list[tuple[str, int]]:
    """(booking id, version) of `customer_bookings`, in the same order."""
    params = {"tenant_id": tenant_id, "account_id": str(account_id), "email_token": verified_email_token}
    return [(row[0], row[1]) for row in conn.execute(_CUSTOMER_BOOKING_VERSIONS[with_pre], params)]


def summary_rows(conn: Connection, booking_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The `SUMMARY_COLUMNS` of these bookings, by booking id."""
    if not booking_ids:
        return {}
    return {
        row["booking_id"]: dict(row)
        for row in conn.execute(_SUMMARY_ROWS, {"ids": list(booking_ids)}).mappings()
    }


def bookings_to_erase(
    conn: Connection,
    tenant_id: str,
    account_id: UUID,
    before_position: int,
    earlier_email_tokens: Sequence[str] = (),
) -> list[UUID]:
    """The bookings made under an account or with its verified email (the current one, and
    those it had verified before, as blind-index tokens), placed before the decision to erase it
    (a later booking with one of those addresses is someone's new booking)."""
    token = conn.execute(
        sa.select(customer_accounts.c.verified_email_token).where(
            customer_accounts.c.account_id == str(account_id)
        )
    ).scalar()
    tokens = list(dict.fromkeys([*earlier_email_tokens, *([token] if token else [])]))
    # The tenant in each side of the OR, so that each side is one index's search (as in
    # `_customer_bookings_query`), never every booking of the tenant.
    tenant = bookings.c.tenant_id == tenant_id
    mine = sa.and_(tenant, bookings.c.account_id == str(account_id))
    if tokens:
        mine = sa.or_(mine, sa.and_(tenant, bookings.c.email_token.in_(tokens)))
    rows = conn.execute(
        sa.select(bookings.c.booking_id)
        .where(mine, bookings.c.placed_position < before_position)
        .order_by(bookings.c.placed_position)
    ).scalars()
    return [UUID(booking_id) for booking_id in rows]


def opened(row: dict[str, Any], vault: Vault, only: Sequence[str] | None = None) -> dict[str, Any]:
    """A booking row with its customer's details in the clear (None once erased): `email`,
    `name`, `contact` and `form` in place of their sealed columns (`only` those sealed columns
    named, if given: the others are left out)."""
    subject = row.get("customer_subject")
    plain = {
        key.removesuffix("_sealed"): open_column(vault, subject, value) if key.endswith("_sealed") else value
        for key, value in row.items()
        if only is None or not key.endswith("_sealed") or key in only
    }
    for field in ("contact", "form"):
        if field in plain:
            names = row.get(f"{field}_fields") or []
            values = json.loads(plain[field]) if plain[field] else {}
            plain[field] = {name: values.get(name) for name in names}
    return plain


def opened_history(rows: list[dict[str, Any]], subject: str | None, vault: Vault) -> list[dict[str, Any]]:
    """History rows with a sealed reason opened (None once the customer is erased)."""
    result = []
    for row in rows:
        reason = (row["facts"] or {}).get("reason")
        if isinstance(reason, dict):
            row = {
                **row,
                "facts": {**row["facts"], "reason": open_column(vault, subject, reason.get("sealed"))},
            }
        result.append(row)
    return result


def tenant_custom_statuses(conn: Connection, tenant_id: str) -> dict[str, CustomStatus]:
    statuses_id = str(TenantStatuses.create_id(tenant_id))
    rows = conn.execute(
        sa.select(custom_statuses).where(custom_statuses.c.statuses_id == statuses_id)
    ).mappings()
    return {
        row["status"]: CustomStatus(row["status"], row["label"], row["locks_inventory"], row["active"])
        for row in rows
    }


# Built once, as the listing's: the read path runs them on every request.
_BOOKING_ROW = sa.select(bookings).where(bookings.c.booking_id == sa.bindparam("booking_id"))
_HISTORY_ROWS = (
    sa.select(booking_history)
    .where(booking_history.c.booking_id == sa.bindparam("booking_id"))
    .order_by(booking_history.c.version)
)


def booking_row(conn: Connection, booking_id: UUID) -> dict[str, Any] | None:
    row = conn.execute(_BOOKING_ROW, {"booking_id": str(booking_id)}).mappings().first()
    return dict(row) if row is not None else None


def booking_version(conn: Connection, booking_id: UUID) -> int | None:
    return conn.execute(
        sa.select(bookings.c.version).where(bookings.c.booking_id == str(booking_id))
    ).scalar()


def history_rows(conn: Connection, booking_id: UUID) -> list[dict[str, Any]]:
    """A booking's history rows (`history.recorded`), oldest first."""
    return [dict(row) for row in conn.execute(_HISTORY_ROWS, {"booking_id": str(booking_id)}).mappings()]


def customer_account(conn: Connection, account_id: UUID) -> dict[str, Any] | None:
    query = sa.select(customer_accounts).where(customer_accounts.c.account_id == str(account_id))
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def tenant_rules(conn: Connection, tenant_id: str) -> dict[str, Any] | None:
    query = sa.select(tenant_policies).where(tenant_policies.c.tenant_id == tenant_id)
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def staff_bookings(
    conn: Connection,
    tenant_id: str,
    *,
    status: str | None = None,
    starts_from: Any = None,
    starts_before: Any = None,
    customer: str | None = None,
    customer_tokens: Sequence[str] = (),
    account: tuple[str, str | None] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A tenant's bookings for its staff, latest start first, filtered by status, start date
    and customer, or one account's; and how many match in all. Rows are sealed (`opened`).

    `customer` matches a part of the booking code or the account id; `customer_tokens`
    (`BlindIndex.query_tokens` of the same text) the beginnings of words of the customer's name
    or email (all of them). `account` is an account id and the blind-index token of its address:
    the bookings made under the account, or with that address."""
    tenant = bookings.c.tenant_id == tenant_id
    # One account's bookings name the tenant inside each side of their OR instead (below).
    where = [tenant] if account is None else []
    if status:
        where.append(bookings.c.status == status)
    if starts_from is not None:
        where.append(bookings.c.starts_at >= starts_from)
    if starts_before is not None:
        where.append(bookings.c.starts_at < starts_before)
    if customer:
        text = customer.strip()
        matches = [
            sa.func.lower(bookings.c.code).like(f"%{text.lower()}%", escape="\\"),
            bookings.c.account_id == text,
        ]
        if customer_tokens:
            named = (
                sa.select(search_tokens.c.booking_id)
                .where(search_tokens.c.tenant_id == tenant_id, search_tokens.c.token.in_(customer_tokens))
                .group_by(search_tokens.c.booking_id)
                .having(sa.func.count(sa.distinct(search_tokens.c.token)) == len(set(customer_tokens)))
            )
            matches.append(bookings.c.booking_id.in_(named))
        where.append(sa.or_(*matches))
    if account is not None:  # one customer's: made under the account, or with its address
        account_id, email_token = account
        # The tenant in each side of the OR, not beside it: each side one index's search (as
        # in `_customer_bookings_query`), never every booking of the tenant.
        mine = sa.and_(tenant, bookings.c.account_id == account_id)
        where.append(
            sa.or_(mine, sa.and_(tenant, bookings.c.email_token == email_token)) if email_token else mine
        )
    total = conn.execute(sa.select(sa.func.count()).select_from(bookings).where(*where)).scalar() or 0
    rows = conn.execute(
        sa.select(bookings).where(*where).order_by(bookings.c.starts_at.desc()).limit(limit).offset(offset)
    ).mappings()
    return [dict(row) for row in rows], int(total)
