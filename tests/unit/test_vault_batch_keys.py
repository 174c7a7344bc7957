"""New subjects' keys are created in one vault transaction per save, with the same rules as
sealing one value at a time: a copy of another service's key is used, an erased subject is
never given a new key."""

from __future__ import annotations

import uuid

import pytest

from backbone.personal import Personal, Vault, subjects_in
from contracts.personal import SubjectKey


def test_create_keys_creates_only_what_was_never_seen():
    vault = Vault("sqlite+pysqlite:///:memory:", "bookings")
    other = Vault("sqlite+pysqlite:///:memory:", "accounts")
    own, copied, erased, new = (uuid.uuid4() for _ in range(4))
    own_key = vault.key_for(own)
    other.key_for(copied)
    for record in other.unpublished():
        vault.accept(record)
    vault.accept(SubjectKey(subject_id=erased, owner="accounts", key=None))
    vault._cache.clear()  # as after a restart

    vault.create_keys([own, copied, erased, new, new])

    assert vault.key(own) == own_key
    assert vault.key(copied) == other.key(copied)
    assert vault.key(erased) is None
    assert vault.key(new) is not None
    assert {r.subject_id for r in vault.unpublished()} == {own, new}  # ours, to publish
    with pytest.raises(KeyError):
        vault.seal(erased, "nothing new about an erased subject")


def test_the_subjects_of_an_event_are_found_wherever_they_are():
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    state = {
        "customer": {"email": Personal(a, "x@example.com"), "phone": None},
        "form": [Personal(b, "vegan")],
        "gone": Personal(c, None),  # erased: nothing to seal
        "total": 3,
    }
    assert set(subjects_in(state)) == {a, b}
