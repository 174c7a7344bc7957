"""A rebuild gives exactly the rows the live projection gives: over a mixed history (placements,
payments, changes of lines and customer, statuses custom and not, cancellations, voids, an
erased customer, accounts learned, verified, revoked, archived, activated and redacted, the
tenant's rules changed), the service's projection kept current after every command is compared
with the same log rebuilt by `ops.rebuild` in pages (small and odd, then large)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from backbone.readmodel import Projection, ReadModel
from ops.rebuild import Rebuild
from services.bookings import views
from tests.support.bookings import command, line, pay, place
from tests.unit.bookings.conftest import TENANT


async def mixed_history(harness) -> None:
    week = harness.now + timedelta(days=7)
    await harness.hear(harness.accounts.settings(allow_cancel=True, allow_modify=True))
    ada = await harness.customer("ada@example.com")
    await harness.customer("bob@example.com")
    await harness.send(
        command("DefineCustomStatus", TENANT, status="POSTPONED", label="Postponed", locks_inventory=False)
    )
    placed = []
    for n in range(12):
        email = ("ada@example.com", "bob@example.com", f"guest-{n}@example.org")[n % 3]
        body = place(TENANT, email, starts_at=week, account_id=str(ada.account_id) if n % 4 == 0 else None)
        await harness.send(body)
        assert harness.outcome(body)["outcome"] == "accepted", harness.outcome(body)
        placed.append(uuid.UUID(body["booking_id"]))
    first, second, third, fourth, fifth, sixth, *_ = placed
    await harness.send(pay(TENANT, first, "30.00"), pay(TENANT, first, "75.00"), pay(TENANT, second, "5.00"))
    modify = command(
        "ModifyBooking",
        TENANT,
        second,
        lines=[line("Kayak for two", week, "80.00", hours=3)],
        customer={"name": "Bob Builder", "email": "robert@example.net"},
        override_customer_rules=True,
    )
    await harness.send(modify)
    await harness.send(command("ChangeBookingStatus", TENANT, third, status="POSTPONED", reason="storm"))
    await harness.send(command("RetireCustomStatus", TENANT, status="POSTPONED"))
    await harness.send(command("ChangeBookingStatus", TENANT, fourth, status="HOLD"))
    await harness.send(
        command("CancelBooking", TENANT, fifth, reason="ill", override_customer_rules=True, refund_due="0.00")
    )
    await harness.send(command("VoidBooking", TENANT, sixth, reason="test booking"))
    booking = harness.booking(third)  # the customer's details erased (as the eraser does)
    booking.erase_customer()
    harness.app.save(booking)
    harness.project()
    await harness.hear(harness.accounts.sessions_revoked(ada.account_id, harness.now))
    await harness.hear(harness.accounts.archived(ada.account_id), harness.accounts.activated(ada.account_id))
    await harness.hear(harness.accounts.redacted(ada.account_id))
    await harness.hear(harness.accounts.settings(allow_cancel=False))


def rows(read_model: ReadModel, vault) -> dict[str, list[tuple]]:
    """Every table's rows, sealed columns opened (each sealing has a fresh nonce: two
    projections of the same log hold different ciphertexts of the same values)."""

    def plain(table, row):
        if table is views.bookings:
            return views.opened(dict(row), vault)
        if table is views.booking_history:
            [opened] = views.opened_history([dict(row)], row["booking_id"], vault)
            return opened
        return dict(row)

    with read_model.engine.connect() as conn:
        return {
            table.name: sorted(
                tuple(map(str, plain(table, row).values()))
                for row in conn.execute(sa.select(table)).mappings()
            )
            for table in views.metadata.sorted_tables
        }


@pytest.mark.parametrize("page", [7, 10_000])
async def test_a_rebuild_gives_the_rows_of_the_live_projection(harness, tmp_path, page):
    await mixed_history(harness)
    live = rows(harness.read_model, harness.app.vault)
    assert len(live["bookings"]) == 12 and len(live["customer_accounts"]) == 2
    assert len(live["booking_history"]) > 12 and live["booking_search_tokens"] and live["custom_statuses"]

    rebuilt = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}", views.metadata)
    try:
        projection = Projection(harness.app, rebuilt, "bookings.views", views.projector(harness.app.vault))
        report = Rebuild(harness.app, rebuilt, [projection], batch_size=page).run()
        assert report.switched and report.switched_at == harness.app.head()
        assert rows(rebuilt, harness.app.vault) == live
    finally:
        rebuilt.close()


async def test_a_rebuild_decodes_each_stored_event_as_the_mapper_does(harness):
    from backbone.follower import read_log
    from ops.rebuild import _Reader

    await mixed_history(harness)
    head = harness.app.head()
    harness.app.forget_erased([uuid.uuid4()])  # the events saved here are no longer in memory
    expected = read_log(harness.app, 0, head)
    decoded = _Reader(harness.app).read(0, head)
    assert [r.position for r in decoded] == [r.position for r in expected]
    for mine, theirs in zip(decoded, expected, strict=True):
        assert type(mine.event) is type(theirs.event)
        assert vars(mine.event) == vars(theirs.event)


async def test_a_rebuild_pauses_the_garbage_collector_for_each_page_only(harness, tmp_path):
    """Paused while a page is projected (`ops.rebuild._collector_paused`), on again between
    pages, after the rebuild, and after a projection that fails."""
    import gc

    for email in ("ada@example.com", "bob@example.com"):
        await harness.send(place(TENANT, email, starts_at=harness.now + timedelta(days=7)))
    project = views.projector(harness.app.vault)
    seen: list[bool] = []

    def watching(conn, recorded):
        seen.append(gc.isenabled())
        project(conn, recorded)

    def failing(conn, recorded):
        raise RuntimeError("a projection's bug")

    rebuilt = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}", views.metadata)
    try:
        assert gc.isenabled()
        broken = Projection(harness.app, rebuilt, "bookings.views", failing)
        crashing = Rebuild(harness.app, rebuilt, [broken], batch_size=1)
        with pytest.raises(RuntimeError, match="a projection's bug"):
            crashing.run(fresh=True)
        assert gc.isenabled()
        projection = Projection(harness.app, rebuilt, "bookings.views", watching)
        report = Rebuild(harness.app, rebuilt, [projection], batch_size=1).run(fresh=True)
        assert report.switched and report.applied >= 2
        assert seen and not any(seen) and gc.isenabled()
    finally:
        rebuilt.close()


def _indexes(read_model: ReadModel, path=None) -> set[str]:
    engine = read_model.engine if path is None else sa.create_engine(f"sqlite+pysqlite:///{path}")
    try:
        found = sa.inspect(engine)
        return {i["name"] for t in views.metadata.sorted_tables for i in found.get_indexes(t.name)}
    finally:
        if path is not None:
            engine.dispose()


async def test_the_indexes_only_queries_read_are_made_once_the_shadow_has_caught_up(harness, tmp_path):
    """A shadow is filled without the indexes marked `AFTER_REBUILD` (the bookings' by tenant and
    email token, by tenant and account); they are made from the whole table when it has caught
    up, so the switched-in tables have every index the code defines, also when a rebuild was
    interrupted between making them and switching, and resumed."""
    from backbone.readmodel import AFTER_REBUILD

    await mixed_history(harness)
    defined = {i.name for t in views.metadata.sorted_tables for i in t.indexes}
    after = {i.name for t in views.metadata.sorted_tables for i in t.indexes if i.info.get(AFTER_REBUILD)}
    assert after == {"ix_bookings_tenant_email_token", "ix_bookings_tenant_account"}

    rebuilt = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}", views.metadata)
    try:
        projection = Projection(harness.app, rebuilt, "bookings.views", views.projector(harness.app.vault))
        job = Rebuild(harness.app, rebuilt, [projection], batch_size=5)
        job.run(switch=False)  # the shadow caught up, not switched in
        shadow = job.shadow.where
        assert _indexes(rebuilt, shadow) == defined - after
        job._finish_shadow()  # then the process dies before the switch: resumed, it switches
        assert _indexes(rebuilt, shadow) == defined
        resumed = Rebuild(harness.app, rebuilt, [projection], batch_size=5).run()
        assert resumed.switched and resumed.applied == 0
        assert _indexes(rebuilt) == defined
        assert rows(rebuilt, harness.app.vault) == rows(harness.read_model, harness.app.vault)
    finally:
        rebuilt.close()


def _staging_tables(path) -> set[str]:
    engine = sa.create_engine(f"sqlite+pysqlite:///{path}")
    try:
        return {n for n in sa.inspect(engine).get_table_names() if n.startswith("rebuild_")}
    finally:
        engine.dispose()


async def test_the_staged_rows_are_kept_in_a_scratch_file_deleted_after_the_switch_and_by_a_discard(
    harness, tmp_path
):
    """On SQLite the staged search tokens (`ops.rebuild._Staging`) are in a file of their own
    beside the shadow, never in the shadow (whose pages the switch copies over the live file);
    the file is deleted once they are in their table, and by a discarded rebuild."""
    await mixed_history(harness)
    rebuilt = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}", views.metadata)
    try:
        projection = Projection(harness.app, rebuilt, "bookings.views", views.projector(harness.app.vault))
        job = Rebuild(harness.app, rebuilt, [projection], batch_size=5)
        scratch = tmp_path / "views.sqlite3.rebuild-staging"
        job.run(switch=False)
        assert scratch.exists() and _staging_tables(scratch) == {
            "rebuild_rows_booking_search_tokens",
            "rebuild_replaced_booking_search_tokens",
        }
        assert _staging_tables(job.shadow.where) == {"rebuild_state"}  # nothing staged in the shadow
        assert job.discard() and not scratch.exists() and job.shadow_position() is None

        report = Rebuild(harness.app, rebuilt, [projection], batch_size=5).run()
        assert report.switched and report.applied == harness.app.head()
        assert not scratch.exists() and not (tmp_path / "views.sqlite3.rebuild").exists()
        assert sorted(p.name for p in tmp_path.iterdir() if "rebuild" in p.name) == []
        assert rows(rebuilt, harness.app.vault) == rows(harness.read_model, harness.app.vault)
    finally:
        rebuilt.close()


async def test_a_rebuild_killed_between_its_two_files_commits_resumes_with_each_token_once(harness, tmp_path):
    """A page commits the scratch file first, then the shadow: a run that dies in between (the
    shadow's commit never happens) leaves that page's staged rows in the scratch file; the next
    run deletes them, projects the page again, and the tables come out as the live projection's
    (a token staged twice would break the table's primary key, or come back after an erasure)."""
    await mixed_history(harness)
    rebuilt = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}", views.metadata)
    try:
        projection = Projection(harness.app, rebuilt, "bookings.views", views.projector(harness.app.vault))
        job = Rebuild(harness.app, rebuilt, [projection], batch_size=5)
        pages, apply = 0, job._apply_to_shadow

        def killed(conn):
            raise RuntimeError("killed")

        def dies_at_the_fourth_page_s_shadow_commit(batch, previous):
            nonlocal pages
            pages += 1
            if pages == 4:
                sa.event.listen(job.shadow.read_model.engine, "commit", killed, once=True)
            apply(batch, previous)

        job._apply_to_shadow = dies_at_the_fourth_page_s_shadow_commit
        with pytest.raises(RuntimeError, match="killed"):
            job.run()
        job.shadow.read_model.close()  # as a killed process's connections are
        scratch = tmp_path / "views.sqlite3.rebuild-staging"
        assert job.shadow_position() == 15
        with sa.create_engine(f"sqlite+pysqlite:///{scratch}").connect() as conn:
            staged = conn.exec_driver_sql(
                "SELECT max(seq) FROM rebuild_replaced_booking_search_tokens"
            ).scalar()
        with job.shadow.read_model.engine.connect() as conn:
            recorded = conn.execute(sa.text("SELECT value FROM rebuild_state WHERE key = 'staged'")).scalar()
        assert staged > int(recorded)  # the fourth page's rows, which the shadow does not account for

        resumed = Rebuild(harness.app, rebuilt, [projection], batch_size=5).run()
        assert resumed.resumed_from == 15 and resumed.switched and not scratch.exists()
        assert rows(rebuilt, harness.app.vault) == rows(harness.read_model, harness.app.vault)
    finally:
        rebuilt.close()


async def test_a_rebuild_resumed_after_its_finish_writes_what_came_since_into_the_tables(harness, tmp_path):
    """Interrupted after the staged rows were put in their tables, before the switch, and
    resumed once more events came (a booking placed, a customer's details erased): those pages
    are not staged (their rows would be put in next to the ones already there), they go into
    the tables, as a live projection's do."""
    await mixed_history(harness)
    rebuilt = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}", views.metadata)
    try:
        projection = Projection(harness.app, rebuilt, "bookings.views", views.projector(harness.app.vault))
        job = Rebuild(harness.app, rebuilt, [projection], batch_size=5)
        job.run(switch=False)
        job._finish_shadow()  # then the process dies before the switch
        assert not (tmp_path / "views.sqlite3.rebuild-staging").exists()

        await harness.send(place(TENANT, "carol@example.com", starts_at=harness.now + timedelta(days=7)))
        with harness.read_model.engine.connect() as conn:  # a booking whose tokens were staged
            [kept] = conn.execute(
                sa.select(views.bookings.c.booking_id)
                .where(views.bookings.c.customer_erased.is_(False), views.bookings.c.code != "")
                .order_by(views.bookings.c.placed_position)
                .limit(1)
            ).scalars()
        booking = harness.booking(uuid.UUID(kept))
        booking.erase_customer()
        harness.app.save(booking)
        harness.project()

        resumed = Rebuild(harness.app, rebuilt, [projection], batch_size=5).run()
        assert resumed.switched and resumed.applied >= 2
        live = rows(harness.read_model, harness.app.vault)
        assert rows(rebuilt, harness.app.vault) == live
    finally:
        rebuilt.close()


async def test_a_rebuild_whose_scratch_file_was_deleted_is_refused_until_started_afresh(harness, tmp_path):
    """The shadow's pages count on the staged rows in the scratch file: without it, resuming
    would switch in a table short of search tokens, so it is refused; `fresh` starts again."""
    from ops.config import OpsError

    await mixed_history(harness)
    rebuilt = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}", views.metadata)
    try:
        projection = Projection(harness.app, rebuilt, "bookings.views", views.projector(harness.app.vault))
        Rebuild(harness.app, rebuilt, [projection], batch_size=5).run(switch=False)
        (tmp_path / "views.sqlite3.rebuild-staging").unlink()
        with pytest.raises(OpsError, match="are gone: start again with --fresh"):
            Rebuild(harness.app, rebuilt, [projection], batch_size=5).run()
        report = Rebuild(harness.app, rebuilt, [projection], batch_size=5).run(fresh=True)
        assert report.switched and report.resumed_from is None
        assert rows(rebuilt, harness.app.vault) == rows(harness.read_model, harness.app.vault)
    finally:
        rebuilt.close()
