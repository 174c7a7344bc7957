"""A rebuild of the notifier's read model (its emails) gives exactly the rows of the live
projection, over a mixed history: emails queued, attempted, failed and retried, sent, parked
and retried by an operator, withdrawn; recipients released (erased) when done."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backbone.blindindex import open_column
from backbone.eventstore import store_env
from backbone.personal import Personal
from backbone.readmodel import ReadModel
from backbone.settings import StoreSettings
from services.notifier import views
from services.notifier.application import Notifier
from services.notifier.domainmodel import CUSTOMER, DeliveryPolicy, Email
from tests.support import rebuilds

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = DeliveryPolicy()


def queued(app: Notifier, erase: bool = False) -> Email:
    subject = uuid.uuid4()
    app.vault.create_keys({subject})
    return Email(
        source_event_id=uuid.uuid4(),
        template="welcome",
        tenant_id="acme",
        audience=CUSTOMER,
        recipient=Personal(subject, f"jo-{subject.hex[:6]}@example.com"),
        language="en",
        data={"name": "Jo"},
        account_id=uuid.uuid4(),
        booking_id=None,
        erase_recipient_when_done=erase,
    )


def plain(vault):
    def opened(table, row):
        if row.get("recipient_sealed"):  # each sealing has a nonce of its own
            row["recipient_sealed"] = open_column(vault, row["recipient_subject"], row["recipient_sealed"])
        return row

    return opened


@pytest.mark.parametrize("page", [2, 10_000])
def test_a_rebuild_gives_the_rows_of_the_live_projection(tmp_path, page):
    app = Notifier(env=store_env(StoreSettings(kind="memory"), "notifier"))
    live = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'live.sqlite3'}", views.metadata)
    live.create()
    project = views.projector(app.vault)

    def save(*emails):
        app.save(*emails)
        rebuilds.live(app, live, "notifier.views", project)

    try:
        sent, failing, parked, withdrawn, erased, stuck = (queued(app, erase=n == 4) for n in range(6))
        save(sent, failing, parked, withdrawn, erased, stuck)
        for email in (sent, failing, parked, erased, stuck):
            email.start_attempt(NOW, POLICY)
        stuck.fail(1, "550 mailbox full", True, NOW, POLICY)
        save(sent, failing, parked, erased, stuck)
        sent.mark_sent(1, "250 ok", "Welcome")
        erased.mark_sent(1, "250 ok", "Welcome")
        failing.fail(1, "421 busy", False, NOW, POLICY)
        parked.fail(1, "550 no such user", True, NOW, POLICY)
        withdrawn.withdraw("the link expired")
        save(sent, failing, parked, withdrawn, erased)
        failing.start_attempt(NOW + timedelta(minutes=5), POLICY)
        parked.retry("operator:anna")
        save(failing, parked)
        failing.mark_sent(2, "250 ok", "Welcome")
        save(failing)

        expected = rebuilds.rows(live, views.metadata, plain(app.vault))
        assert len(expected["emails"]) == 6
        statuses = {row[list(views.emails.c.keys()).index("status")] for row in expected["emails"]}
        assert statuses == {"queued", "sent", "parked", "withdrawn"}
        found = rebuilds.rebuilt(
            app, views.metadata, "notifier.views", project, tmp_path / "re", page, plain(app.vault)
        )
        assert found == expected
    finally:
        live.close()
        app.close()
