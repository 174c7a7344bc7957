"""Events stored before `CustomerAccount`, `TenantPolicy` and `TenantStatuses` moved out of
`domainmodel` name it in their topics: they still resolve, to the classes where they live now."""

from __future__ import annotations

from eventsourcing.utils import resolve_topic

import services.bookings.application  # noqa: F401 - registers the old topics
from services.bookings.customers import CustomerAccount
from services.bookings.tenants import TenantPolicy, TenantStatuses


def test_the_old_topics_resolve_to_the_aggregates_where_they_live_now():
    old = "services.bookings.domainmodel"
    assert resolve_topic(f"{old}:CustomerAccount.Learned") is CustomerAccount.Learned
    assert resolve_topic(f"{old}:TenantPolicy") is TenantPolicy
    assert resolve_topic(f"{old}:TenantStatuses.Defined") is TenantStatuses.Defined


def test_the_domain_model_no_longer_imports_them_back():
    import services.bookings.domainmodel as domainmodel

    assert not hasattr(domainmodel, "CustomerAccount")
