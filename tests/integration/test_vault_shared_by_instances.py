"""Several instances of a service share one vault (PostgreSQL; or one SQLite file) and create a
new subject's key on first use. Two of them may do it at the same moment: each reads no key,
and each writes one. The second write then breaks the table's primary key, and before the fix
it failed: in tests/integration/test_scale_out.py two notifier instances sealed the tenant's
staff address (a subject of its own) for the first cancellations of the burst, one of them
failed, and its inbox dead-lettered that `BookingCancelled`: two cancellation emails never
queued. Each test below performs that race, deterministically: while the first vault's
transaction has read and not yet written, the second one creates the same key (it commits in
between, on a connection of its own, as another instance would). The first must then use the
key the second one created, never fail, never create a second key."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from backbone.personal import Vault

pytestmark = pytest.mark.integration


@pytest.fixture
def instances(database):
    """Two instances of the notifier's vault on one database."""
    first, second = Vault(database, "notifier"), Vault(database, "notifier")
    yield first, second
    first.close()
    second.close()


def before_its_first_key_is_written(vault: Vault, meanwhile) -> list[str]:
    """Run `meanwhile()` once, just before `vault` sends its first INSERT into the keys table
    (after it read the table in the same transaction). Returns the statements that ran it."""
    seen: list[str] = []

    def interleave(conn, cursor, statement, parameters, context, executemany):
        if not seen and statement.lstrip().upper().startswith("INSERT INTO SUBJECT_KEYS"):
            seen.append(statement)
            meanwhile()

    sa.event.listen(vault.engine, "before_cursor_execute", interleave)
    return seen


def keys_in_table(vault: Vault, subject: uuid.UUID) -> int:
    with vault.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM subject_keys WHERE subject_id = :s AND service = 'notifier'"),
            {"s": str(subject)},
        ).scalar_one()


def test_two_instances_sealing_a_new_subject_at_once_share_one_key(instances):
    first, second = instances
    staff = uuid.uuid4()  # as `Tenant.staff_subject`: the same id in every instance
    raced = before_its_first_key_is_written(first, lambda: second.seal(staff, "desk@harbour.example"))

    sealed = first.seal(staff, "desk@harbour.example")  # raised IntegrityError before the fix

    assert raced, "the second instance did not write in the middle of the first one's transaction"
    assert first.key_for(staff) == second.key_for(staff)
    assert str(second.open(sealed)) == "desk@harbour.example"
    assert keys_in_table(first, staff) == 1


def test_a_batch_of_new_subjects_takes_the_key_another_instance_created_meanwhile(instances):
    first, second = instances
    subjects = [uuid.uuid4() for _ in range(3)]
    raced = before_its_first_key_is_written(first, lambda: second.key_for(subjects[1]))

    first.create_keys(subjects)  # one transaction for the batch; raised IntegrityError before

    assert raced
    assert first.key(subjects[1]) == second.key(subjects[1])
    assert all(first.key(s) is not None and first.key(s) == second.key(s) for s in subjects)
    assert [keys_in_table(first, s) for s in subjects] == [1, 1, 1]


def test_two_instances_accepting_one_copied_key_at_once_keep_it_once(instances):
    first, second = instances
    owner = Vault("sqlite+pysqlite:///:memory:", "accounts")
    customer = uuid.uuid4()
    owner.key_for(customer)
    (record,) = owner.unpublished()  # as the owner's keys topic carries it
    raced = before_its_first_key_is_written(first, lambda: second.accept(record))

    first.accept(record)

    assert raced
    assert first.key(customer) == second.key(customer) == owner.key(customer)
    assert keys_in_table(first, customer) == 1
    owner.close()
