"""The personal-data vault: sealing per subject, erasure, and keys travelling between services."""

from __future__ import annotations

import json
import uuid

import pytest

from backbone.eventstore import store_env
from backbone.personal import Personal, UnknownSubject, Vault
from backbone.settings import StoreSettings
from services.bookings.application import Bookings
from services.bookings.customers import CustomerAccount


def vault(service: str = "accounts") -> Vault:
    return Vault("sqlite+pysqlite:///:memory:", service)


def test_a_value_opens_with_its_subjects_key_and_never_after_erasure():
    owner, subject = vault(), uuid.uuid4()
    sealed = owner.seal(subject, "ada@example.com")
    assert "ada" not in sealed.ciphertext
    assert owner.open(sealed) == Personal(subject, "ada@example.com")
    owner.erase(subject)
    assert owner.open(sealed) == Personal(subject, None)
    with pytest.raises(KeyError):
        owner.seal(subject, "new data about an erased subject")


def test_keys_and_erasures_travel_to_other_services_and_erasure_is_final():
    owner, reader, subject = vault("accounts"), vault("bookings"), uuid.uuid4()
    sealed = owner.seal(subject, "Ada")
    with pytest.raises(UnknownSubject):  # not arrived yet: the reader must wait, not give up
        reader.open(sealed)
    [key_record] = owner.unpublished()
    reader.accept(key_record)
    assert reader.open(sealed).value == "Ada"
    owner.mark_published([key_record])
    owner.erase(subject)
    [erasure] = owner.unpublished()
    assert erasure.key is None and erasure.erased_at is not None
    reader.accept(erasure)
    reader.accept(key_record)  # a late or replayed copy of the key does not bring it back
    assert reader.open(sealed).erased


def test_a_value_sealed_with_another_subjects_key_does_not_open():
    owner = vault()
    sealed = owner.seal(uuid.uuid4(), "Ada")
    tampered = sealed.model_copy(update={"subject_id": uuid.uuid4()})
    owner.seal(tampered.subject_id, "someone else")
    with pytest.raises(ValueError, match="does not open"):
        owner.open(tampered)


def test_the_store_holds_ciphertext_and_reads_back_erased_after_erasure():
    app = Bookings(env=store_env(StoreSettings(kind="memory"), "bookings"), vault=vault("bookings"))
    account_id = uuid.uuid4()
    account = CustomerAccount(
        account_id=account_id, tenant_id="acme", email=Personal(account_id, "ada@example.com")
    )
    app.save(account)
    [stored] = app.recorder.select_notifications(start=1, limit=10)
    assert b"ada@example.com" not in stored.state
    assert app.repository.get(account.id).email.value == "ada@example.com"
    app.erase_subject(account_id)
    reread = app.repository.get(account.id)
    assert reread.email.erased and str(reread.email) == "[erased]"
    # Whatever arrives about the subject afterwards is stored erased, not in the clear.
    reread.email_verified(email=Personal(account_id, "ada@example.com"))
    app.save(reread)
    assert app.repository.get(account.id).verified is not None
    assert app.repository.get(account.id).verified.erased


def test_a_stored_value_goes_out_on_the_bus_with_its_stored_ciphertext_and_erased_after_erasure():
    app = Bookings(env=store_env(StoreSettings(kind="memory"), "bookings"), vault=vault("bookings"))
    account_id = uuid.uuid4()
    email = Personal(account_id, "ada@example.com")
    app.save(CustomerAccount(account_id=account_id, tenant_id="acme", email=email))
    [stored] = app.recorder.select_notifications(start=1, limit=10)
    in_store = json.loads(stored.state)["email"]["_data_"]["c"]
    # As saved (the relay takes saved events from memory) and as read back from the store:
    # the same ciphertext, no new seal; it opens with the subject's key like any other.
    read_back = app.mapper.to_domain_event(stored).email
    for value in (email, read_back):
        sealed = app.sealed(value)
        assert sealed.ciphertext == in_store
        assert app.vault.open(sealed) == Personal(account_id, "ada@example.com")
    # A value that never went through the store is sealed afresh (a new nonce).
    assert app.sealed(Personal(account_id, "ada@example.com")).ciphertext not in ("", in_store)
    # Equality and repr see the subject and the value only.
    assert email == read_back == Personal(account_id, "ada@example.com")
    assert "_stored" not in repr(email)
    # Once the subject is erased, what goes out is erased, whatever was stored.
    app.erase_subject(account_id)
    assert app.sealed(email).ciphertext == ""
    assert app.sealed(read_back).ciphertext == ""
