"""A batch's aggregates read in one query (`select_events_of`) on a SQLite store: every event
of the ids asked, by aggregate then version, each with its id as a UUID."""

from __future__ import annotations

import uuid

from backbone.eventstore import store_env
from backbone.personal import Personal, Vault
from backbone.settings import StoreSettings
from services.bookings.application import Bookings
from services.bookings.customers import CustomerAccount


def test_reads_every_event_of_the_ids_asked_in_order(tmp_path):
    store = StoreSettings(kind="sqlite", data_dir=tmp_path)
    app = Bookings(env=store_env(store, "bookings"), vault=Vault(store.vault_url("bookings"), "bookings"))
    try:
        accounts = []
        for _ in range(3):
            account_id = uuid.uuid4()
            account = CustomerAccount(
                account_id=account_id, tenant_id="t", email=Personal(account_id, "a@example.com")
            )
            account.email_verified(email=Personal(account_id, "a@example.com"))
            app.save(account)
            accounts.append(account)
        asked = [accounts[0].id, accounts[2].id, uuid.uuid4()]  # one never stored
        rows = app.recorder.select_events_of(asked)
        assert [(r.originator_id, r.originator_version) for r in rows] == sorted(
            (a.id, v) for a in (accounts[0], accounts[2]) for v in (1, 2)
        )
        assert all(type(r.originator_id) is uuid.UUID for r in rows)
        found = app.load_many(asked)
        assert set(found) == {accounts[0].id, accounts[2].id}
        assert found[accounts[2].id].verified == Personal(accounts[2].account_id, "a@example.com")
    finally:
        app.close()
