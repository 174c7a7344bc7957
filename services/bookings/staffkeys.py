"""Staff members' API keys, as accounts announces them (StaffMemberAdded/Removed on
accounts.events, the key's hash only), so that the staff API here (`api_staff.py`) admits the
keys accounts issued without calling accounts. The notifier keeps the same kind of record
(`services.notifier.directory.StaffKey`): its stored topic names that module, so it stays."""

from __future__ import annotations

import hmac
from uuid import UUID

from backbone.domain import Aggregate, event
from backbone.unitofwork import UnitOfWork
from contracts import accounts


class StaffKey(Aggregate):
    """A staff member's key: the hash of its secret and the tenant it opens. Its id is the
    staff member's id (the key names it)."""

    id: UUID

    @event("Accepted")
    def __init__(self, tenant_id: str, key_hash: str):
        self.tenant_id = tenant_id
        self.key_hash = key_hash
        self.active = True

    def admits(self, key_hash: str) -> bool:
        return self.active and hmac.compare_digest(self.key_hash, key_hash)

    def revoke(self) -> None:
        if self.active:
            self._record_revocation()

    @event("Revoked")
    def _record_revocation(self) -> None:
        self.active = False
        self.key_hash = ""


def when_staff_member_added(event: accounts.StaffMemberAdded, uow: UnitOfWork) -> None:
    if uow.get(StaffKey, event.staff_id) is None:
        uow.add(StaffKey(id=event.staff_id, tenant_id=event.tenant_id, key_hash=event.key_hash))


def when_staff_member_removed(event: accounts.StaffMemberRemoved, uow: UnitOfWork) -> None:
    key = uow.get(StaffKey, event.staff_id)
    if key is not None:
        key.revoke()


HANDLERS = {
    accounts.StaffMemberAdded: when_staff_member_added,
    accounts.StaffMemberRemoved: when_staff_member_removed,
}
