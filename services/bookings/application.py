"""The bookings service's use cases for customers (commands from other services arrive
through `handlers`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from backbone.eventstore import ServiceApplication
from backbone.http import NotFound
from backbone.personal import Vault
from services.bookings.domainmodel import Booking, CustomerAccount, TenantPolicy

Clock = Callable[[], datetime]


class NotVerified(Exception):
    """The session's account is unknown here or its email is not verified (yet)."""


class Bookings(ServiceApplication):
    name = "bookings"
    snapshotting_intervals = {Booking: 50}  # noqa: RUF012

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        vault: Vault | None = None,
    ):
        super().__init__(env, vault)
        self.clock = clock

    def customer(self, account_id: UUID, tenant_id: str) -> CustomerAccount:
        account = self._get(CustomerAccount, CustomerAccount.create_id(account_id))
        if account is None or account.tenant_id != tenant_id or account.verified_email is None:
            raise NotVerified("This account is not verified yet.")
        return account

    def policy(self, tenant_id: str) -> TenantPolicy:
        return self._get(TenantPolicy, TenantPolicy.create_id(tenant_id)) or TenantPolicy.default(tenant_id)

    def customer_booking(self, account_id: UUID, tenant_id: str, booking_id: UUID) -> Booking:
        """A booking the customer may see; NotFound otherwise (never "forbidden": whether
        someone else's booking exists is not theirs to learn)."""
        customer = self.customer(account_id, tenant_id)
        booking = self._get(Booking, booking_id)
        if booking is None or not customer.owns(booking):
            raise NotFound("No such booking.")
        return booking

    def cancel_by_customer(
        self, account_id: UUID, tenant_id: str, booking_id: UUID, reason: str | None
    ) -> Booking:
        booking = self.customer_booking(account_id, tenant_id, booking_id)
        booking.cancel_by_customer(self.policy(tenant_id), self.clock(), reason)
        self.save(booking)  # a concurrent change makes this fail: the caller may retry
        return booking

    def _get(self, cls: type, aggregate_id: UUID):
        try:
            aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, cls) else None
