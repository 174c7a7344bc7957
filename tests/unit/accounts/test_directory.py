"""The staff directory read model, on a real SQLite file: filters, search through the blind
index, contact details that are never in the file in the clear (not even before an erasure),
and a redaction after which the sealed values read as erased."""

from __future__ import annotations

import sqlalchemy as sa

from backbone.blindindex import BlindIndex
from backbone.follower import read_log
from backbone.readmodel import Projection, ReadModel
from services.accounts import views
from tests.unit.accounts.conftest import TENANT


def project_all(world, read_model):
    projection = Projection(
        world.app, read_model, "accounts.views", views.projector(world.app.vault), erases=views.erases
    )
    position = read_model.position(projection.name)
    while batch := read_log(world.app, position, 100):
        projection.apply(batch)
        position = batch[-1].position


def listing(read_model, status="all", search=None, vault=None):
    tokens = BlindIndex(vault).query_tokens(TENANT, search) if search else None
    if tokens == []:
        return 0, []
    with read_model.engine.connect() as conn:
        total, rows = views.directory(conn, TENANT, status, tokens, 50, 0)
    return total, [views.opened(row, vault)["email"] for row in rows]


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

    vault = world.app.vault
    assert listing(read_model, "claimed", vault=vault) == (1, ["verified@example.com"])
    assert sorted(listing(read_model, "unclaimed", vault=vault)[1]) == [
        "invited@example.com",
        "pending@example.com",
    ]
    assert listing(read_model, "archived", vault=vault) == (1, ["archived@example.com"])
    assert listing(read_model, vault=vault)[0] == 4
    assert listing(read_model, search="IVAN", vault=vault)[1] == ["invited@example.com"]
    assert listing(read_model, search="Iv inv", vault=vault)[1] == ["invited@example.com"]
    assert listing(read_model, search="30 123", vault=vault)[1] == ["invited@example.com"]
    assert listing(read_model, search="4930123", vault=vault)[1] == ["invited@example.com"]
    assert listing(read_model, search="pending@exa", vault=vault)[1] == ["pending@example.com"]
    assert listing(read_model, search="vited", vault=vault)[0] == 0  # words' beginnings only
    assert listing(read_model, search="%", vault=vault)[0] == 0  # a wildcard is a character here
    # Nothing personal in the file, in the clear or as a guessable hash of the plain value.
    raw = (tmp_path / "views.sqlite3").read_bytes()
    for plain in (b"invited@example.com", b"Invited Ivan", b"123456", b"Pending Person"):
        assert plain not in raw
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
    vault = world.app.vault
    assert b"zoe.erasable@example.com" not in path.read_bytes() + _wal(path)  # sealed from the start
    assert listing(read_model, search="zoe.erasable", vault=vault)[1] == ["zoe.erasable@example.com"]
    with read_model.engine.connect() as conn:
        sealed_row = views.account_row(conn, TENANT, account.id)

    world.app.redact(TENANT, account.id)
    project_all(world, read_model)
    assert listing(read_model, "redacted", vault=vault) == (1, [None])
    assert listing(read_model, search="zoe", vault=vault)[0] == 0  # its tokens are gone
    # A copy of the row taken before the erasure (a backup, a replica, a WAL segment) no longer
    # opens: the key it was sealed with was destroyed.
    copy = views.opened(sealed_row, vault)
    assert copy["email"] is None and copy["name"] is None
    assert listing(read_model, search="neighbour1", vault=vault)[0] == 11  # the others are untouched

    read_model.drop()
    read_model.create()
    project_all(world, read_model)
    assert listing(read_model, "redacted", vault=vault) == (1, [None])
    assert b"zoe.erasable@example.com" not in path.read_bytes() + _wal(path)
    read_model.close()


def _wal(path):
    wal = path.with_name(path.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def test_a_directory_of_the_plaintext_era_is_dropped_and_rebuilt_sealed(world, tmp_path):
    # What an earlier version left on disk: the accounts table with the address in the clear.
    path = tmp_path / "accounts-views.sqlite3"
    account = world.claimed("old.timer@example.com")
    with sa.create_engine(f"sqlite+pysqlite:///{path}").begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE accounts (account_id VARCHAR(36) PRIMARY KEY, tenant_id VARCHAR(64),"
            " email VARCHAR(320), name VARCHAR(200), phone VARCHAR(32), address JSON,"
            " language VARCHAR(8), status VARCHAR(16), verified BOOLEAN, claimed_by VARCHAR(16),"
            " has_password BOOLEAN, created_at TIMESTAMP, verified_at TIMESTAMP,"
            " updated_at TIMESTAMP, version INTEGER)"
        )
        conn.exec_driver_sql(
            "INSERT INTO accounts (account_id, tenant_id, email, name, status, verified, claimed_by,"
            " has_password, version) VALUES (?, ?, 'old.timer@example.com', 'Ada Lovelace', 'active',"
            " 1, 'customer', 1, 2)",
            (str(account.id), TENANT),
        )

    # The service starts on it (ReadModel.create): tables of another shape are dropped, with
    # the projections' positions, and the projection rebuilds them sealed from the log.
    read_model = ReadModel(f"sqlite+pysqlite:///{path}", views.metadata)
    read_model.create()
    project_all(world, read_model)
    assert listing(read_model, search="old timer", vault=world.app.vault)[1] == ["old.timer@example.com"]
    read_model.purge()
    assert b"old.timer@example.com" not in path.read_bytes() + _wal(path)
    read_model.close()
