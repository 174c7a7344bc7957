"""The staff directory read model, on a real SQLite file: filters, search, and a redaction that
leaves nothing of the customer in the file, even in freed pages or the write-ahead log."""

from __future__ import annotations

from backbone.follower import read_log
from backbone.readmodel import Projection, ReadModel
from services.accounts import views
from tests.unit.accounts.conftest import TENANT


def project_all(world, read_model):
    projection = Projection(world.app, read_model, "accounts.views", views.apply, erases=views.erases)
    position = read_model.position(projection.name)
    while batch := read_log(world.app, position, 100):
        projection.apply(batch)
        position = batch[-1].position


def listing(read_model, status="all", search=None):
    with read_model.engine.connect() as conn:
        total, rows = views.directory(conn, TENANT, status, search, 50, 0)
    return total, [row["email"] for row in rows]


def test_claimed_unclaimed_archived_and_search(world, tmp_path):
    read_model = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}", views.metadata)
    read_model.create()
    world.claimed("verified@example.com")
    world.app.claim_account(TENANT, "pending@example.com", "Pending Person", None)
    staff_made = world.app.create_account(
        TENANT, "invited@example.com", "Invited Ivan", {"phone": "+49 30 123456"}
    )
    archived = world.claimed("archived@example.com")
    world.app.archive(TENANT, archived.id)
    project_all(world, read_model)

    assert listing(read_model, "claimed") == (1, ["verified@example.com"])
    assert sorted(listing(read_model, "unclaimed")[1]) == ["invited@example.com", "pending@example.com"]
    assert listing(read_model, "archived") == (1, ["archived@example.com"])
    assert listing(read_model)[0] == 4
    assert listing(read_model, search="IVAN")[1] == ["invited@example.com"]
    assert listing(read_model, search="30 123")[1] == ["invited@example.com"]
    assert listing(read_model, search="%")[0] == 0  # a wildcard is a character here
    with read_model.engine.connect() as conn:
        assert views.account_row(conn, "another-tenant", staff_made) is None
    read_model.close()


def test_a_redaction_leaves_no_trace_in_the_file_and_a_rebuild_brings_nothing_back(world, tmp_path):
    path = tmp_path / "views.sqlite3"
    read_model = ReadModel(f"sqlite+pysqlite:///{path}", views.metadata)
    read_model.create()
    for i in range(30):  # neighbours on the same pages
        world.claimed(f"neighbour{i}@example.com")
    account = world.claimed("zoe.erasable@example.com")
    project_all(world, read_model)
    assert b"zoe.erasable@example.com" in path.read_bytes() + _wal(path)

    world.app.redact(TENANT, account.id)
    project_all(world, read_model)
    assert listing(read_model, "redacted") == (1, [None])
    for secret in (b"zoe.erasable@example.com", b"Zoe"):
        assert secret not in path.read_bytes() + _wal(path)
    assert listing(read_model, search="neighbour1")[0] == 11  # the others are untouched

    read_model.drop()
    read_model.create()
    project_all(world, read_model)
    assert listing(read_model, "redacted") == (1, [None])
    assert b"zoe.erasable@example.com" not in path.read_bytes() + _wal(path)
    read_model.close()


def _wal(path):
    wal = path.with_name(path.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""
