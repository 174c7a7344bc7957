"""A read model rebuilt while its projection keeps running and events keep coming, on SQLite and
on a real PostgreSQL: interrupted, resumed, switched in; the tables come out identical to a
rebuild from scratch, and the running projection carries on from the switched position."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from backbone import context
from backbone.eventstore import store_env
from backbone.follower import PositionMoved, read_log
from backbone.personal import Personal, Vault
from backbone.readmodel import Projection, ReadModel
from backbone.settings import StoreSettings
from ops.rebuild import Rebuild
from services.bookings import views
from services.bookings.application import Bookings
from services.bookings.domainmodel import Booking

pytestmark = pytest.mark.integration


def store(request, tmp_path, name: str) -> StoreSettings:
    if request.param == "sqlite":
        (tmp_path / name).mkdir(exist_ok=True)
        return StoreSettings(kind="sqlite", data_dir=tmp_path / name)
    postgres = request.getfixturevalue("postgres")
    prefix = f"rebuild_{name}_{uuid.uuid4().hex[:8]}"  # POSTGRES_DBNAME: <prefix>_bookings
    postgres.create_database(f"{prefix}_bookings")
    return StoreSettings(
        kind="postgres",
        postgres_host=postgres.host,
        postgres_port=postgres.port,
        postgres_user=postgres.user,
        postgres_password=SecretStr(postgres.password),
        postgres_dbname=prefix,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def live(request, tmp_path):
    settings = store(request, tmp_path, "live")
    app = Bookings(
        env=store_env(settings, "bookings"), vault=Vault(settings.vault_url("bookings"), "bookings")
    )
    read_model = ReadModel(settings.views_url("bookings"), views.metadata)
    read_model.create()
    reference = ReadModel(store(request, tmp_path, "reference").views_url("bookings"), views.metadata)
    reference.create()
    yield app, read_model, reference
    app.close()
    read_model.close()
    reference.close()


STATUS = list(views.bookings.c.keys()).index("status")


def place(app: Bookings, count: int, cancel_every: int = 3) -> None:
    with context.caused_by("service:storefront", "lakeside"):
        bookings = []
        for n in range(count):
            booking_id = uuid.uuid4()
            booking = Booking(
                id=booking_id,
                tenant_id="lakeside",
                code=f"B-{n}",
                customer={
                    "email": Personal(booking_id, f"guest-{n}@example.com"),
                    "name": Personal(booking_id, "Guest"),
                    "phone": None,
                },
                account_id=None,
                lines=[
                    {
                        "kind": "item",
                        "ref": "kayak",
                        "name": "Kayak",
                        "quantity": 1,
                        "unit_price": Decimal("40.00"),
                        "starts_at": datetime.now(UTC) + timedelta(days=9),
                        "ends_at": datetime.now(UTC) + timedelta(days=9, hours=2),
                    }
                ],
                currency="EUR",
                status="PEND",
                amount_paid=Decimal("12.50"),
                total=Decimal("40.00"),
                terms={},
            )
            if n % cancel_every == 0:
                booking.record_cancellation(
                    status_before="PEND",
                    refund_due=Decimal("12.50"),
                    reason=None,
                    cancelled_at=datetime.now(UTC),
                )
            bookings.append(booking)
        app.save(*bookings)


def rows(read_model: ReadModel, vault) -> dict[str, list[tuple]]:
    """Every table's rows, with sealed columns opened (each sealing has a fresh nonce, so two
    projections of the same log hold different ciphertexts of the same values)."""

    def plain(table, row):
        row = dict(row)
        return views.opened(row, vault) if table is views.bookings else row

    with read_model.engine.connect() as conn:
        return {
            table.name: sorted(
                tuple(map(str, plain(table, row).values()))
                for row in conn.execute(sa.select(table)).mappings()
            )
            for table in views.metadata.sorted_tables
        }


class HeldProjection(Projection):
    """The service's projection, except that the test decides when a batch may go in (to have
    it behind, with a batch in hand, at the moment of the switch)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.go = threading.Event()  # (a projection handles its batches in its own thread)
        self.go.set()
        self.moved = 0

    def handle_in_thread(self, batch):
        self.go.wait()
        try:
            super().handle_in_thread(batch)
        except PositionMoved:
            self.moved += 1
            raise


async def test_a_rebuild_is_interrupted_resumed_and_switched_in_while_the_projection_runs(live):
    app, read_model, reference = live
    projection = HeldProjection(app, read_model, "bookings.views", views.projector(app.vault), batch_size=50)
    running = asyncio.create_task(projection.run())
    for _ in range(3):
        place(app, 100)  # 133 bookings cancelled: 400 events
    await asyncio.wait_for(projection.caught_up.wait(), 60)

    # A first attempt dies half-way (a crash, Ctrl-C): what it built stays, at a batch boundary.
    apply = views.projector(app.vault)

    def crashing(conn, recorded):
        if recorded.position == 301:
            raise RuntimeError("interrupted")
        apply(conn, recorded)

    interrupted = Rebuild(app, read_model, [Projection(app, read_model, "bookings.views", crashing)], 100)
    with pytest.raises(RuntimeError, match="interrupted"):
        await asyncio.to_thread(interrupted.run)
    rebuild = Rebuild(app, read_model, [projection], batch_size=100)
    assert rebuild.shadow_position() == 300

    # Resumed while bookings keep coming in, the service's projection with a batch in hand.
    projection.go.clear()
    place(app, 60)
    writing = threading.Event()

    def keep_writing() -> None:
        # A steady trickle, not as fast as the machine allows: the rebuild must catch up with it
        # to switch, and on a machine busy with other work it may not outrun an unbounded writer.
        while not writing.wait(0.2):
            place(app, 10)

    writer = asyncio.create_task(asyncio.to_thread(keep_writing))
    report = await asyncio.to_thread(rebuild.run)
    writing.set()
    await writer
    projection.go.set()
    assert report.resumed_from == 300 and report.switched and report.switched_at >= 400
    assert rebuild.shadow_position() is None  # the shadow is gone

    head = app.recorder.max_notification_id()
    for _ in range(600):  # the projection found its position moved and carried on from it
        if projection.position == head and read_model.position("bookings.views") == head:
            break
        await asyncio.sleep(0.1)
    assert read_model.position("bookings.views") == head
    assert projection.moved == 1 and projection.failures == 0
    projection.stop()
    await running

    # The same tables as the plain projection gives, from scratch, of the same log.
    scratch = Projection(app, reference, "bookings.views", views.projector(app.vault))
    while batch := read_log(app, scratch.position, 500):
        scratch.apply(batch)
        scratch.position = batch[-1].position
    rebuilt = rows(read_model, app.vault)
    assert rebuilt == rows(reference, app.vault)
    assert len(rebuilt["bookings"]) >= 300
    assert sum(row[STATUS] == "STOP" for row in rebuilt["bookings"]) >= 100
