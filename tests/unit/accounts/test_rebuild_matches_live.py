"""A rebuild of the accounts read model gives exactly the rows of the live projection, over a
mixed history: accounts claimed (verified or not), made by staff, archived, activated and
redacted; addresses blocked and unblocked; staff members added and removed."""

from __future__ import annotations

import pytest

from backbone.readmodel import ReadModel
from services.accounts import views
from tests.support import rebuilds
from tests.unit.accounts.conftest import TENANT


def plain(vault):
    def opened(table, row):
        return views.opened(row, vault) if table is views.accounts else row

    return opened


@pytest.mark.parametrize("page", [3, 10_000])
def test_a_rebuild_gives_the_rows_of_the_live_projection(world, tmp_path, page):
    app = world.app
    live = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'live.sqlite3'}", views.metadata)
    live.create()
    project = views.projector(app.vault)

    def step(action, *args):
        result = action(*args)
        rebuilds.live(app, live, "accounts.views", project)
        return result

    step(world.claimed, "ada@example.com")
    step(app.claim_account, TENANT, "pending@example.com", "Pending Person", None)
    made = step(app.create_account, TENANT, "ivan@example.com", "Invited Ivan", {"phone": "+49 30 123456"})
    archived = step(world.claimed, "archived@example.com")
    step(app.archive, TENANT, archived.id)
    step(app.activate, TENANT, archived.id)
    step(app.archive, TENANT, archived.id)
    redacted = step(world.claimed, "gone@example.com")
    step(app.redact, TENANT, redacted.id)
    step(app.redact, TENANT, made)
    entry = step(app.block_email, TENANT, "spam@example.com")
    step(app.unblock_email, TENANT, entry)
    staff_id, _ = step(app.add_staff_member, TENANT, "Anna at the desk")
    step(app.add_staff_member, TENANT, "Ben")
    step(app.remove_staff_member, TENANT, staff_id)

    try:
        expected = rebuilds.rows(live, views.metadata, plain(app.vault))
        assert len(expected["accounts"]) == 5 and expected["account_search_tokens"]
        assert expected["blocklist"] and len(expected["staff_members"]) == 2
        found = rebuilds.rebuilt(
            app, views.metadata, "accounts.views", project, tmp_path / "re", page, plain(app.vault)
        )
        assert found == expected
    finally:
        live.close()
