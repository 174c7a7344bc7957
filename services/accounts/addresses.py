"""Email addresses as keys: one account per address and tenant, and the tenant's blocklist.

Both aggregates have ids derived from (tenant, address) with a *keyed* hash (`AddressIndex`):
uniqueness is enforced by the event store itself (a second claim of an address collides on the
id), while someone holding a copy of the event store and a candidate address still cannot find
out whether that address was ever registered or blocked: the key lives in the service's vault,
not in the store.
"""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

from backbone.domain import Aggregate, event
from backbone.personal import Personal


class AddressIndex:
    """Derives the ids of `EmailAddress` and `BlockedEmail` from an address, with a secret."""

    def __init__(self, key: bytes):
        self._key = key

    def address_id(self, tenant_id: str, email: str) -> UUID:
        return self._derive("email-address", tenant_id, email)

    def blocklist_id(self, tenant_id: str, email: str) -> UUID:
        return self._derive("blocked-email", tenant_id, email)

    def pseudonym(self, tenant_id: str, email: str) -> str:
        """A stable stand-in for an address where one is needed as a key (rate limits)."""
        return self._derive("pseudonym", tenant_id, email).hex

    def _derive(self, kind: str, tenant_id: str, email: str) -> UUID:
        digest = hmac.new(self._key, f"{kind}\x00{tenant_id}\x00{email}".encode(), hashlib.sha256).digest()
        return UUID(bytes=digest[:16], version=5)


class EmailAddress(Aggregate):
    """Reserves an address for one account within one tenant; released when the address
    changes or the account is redacted, and then free to be claimed again."""

    id: UUID  # AddressIndex.address_id(tenant, email)

    @event("Reserved")
    def __init__(self, tenant_id: str, email: Personal, account_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.email: Personal | None = email
        self.account_id: UUID | None = account_id

    @property
    def is_free(self) -> bool:
        return self.account_id is None

    @event("Released")
    def release(self) -> None:
        self.email = None
        self.account_id = None

    @event("ReservedAgain")
    def reserve(self, email: Personal, account_id: UUID) -> None:
        self.email = email
        self.account_id = account_id


class BlockedEmail(Aggregate):
    """An address the tenant does not want to see claimed. Only the keyed id and a masked hint
    (`j***@example.com`) are kept, never the address itself."""

    id: UUID  # AddressIndex.blocklist_id(tenant, email)

    @event("Blocked")
    def __init__(self, tenant_id: str, hint: str) -> None:
        self.tenant_id = tenant_id
        self.hint = hint
        self.blocked = True

    def unblock(self) -> None:
        if self.blocked:
            self.record_unblocked()

    @event("Unblocked")
    def record_unblocked(self) -> None:
        self.blocked = False

    def block(self) -> None:
        if not self.blocked:
            self.record_blocked_again()

    @event("BlockedAgain")
    def record_blocked_again(self) -> None:
        self.blocked = True
