"""The staff search's tokens (`backbone.blindindex.BlindIndex.search_tokens`): every prefix (up
to 24 characters) of every word of the values, each hashed once however often it appears."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.blindindex import MAX_PREFIX, BlindIndex, words
from backbone.personal import Vault


@pytest.fixture(scope="module")
def index():
    vault = Vault("sqlite+pysqlite:///:memory:", "bookings")
    yield BlindIndex(vault)
    vault.close()


def by_definition(index: BlindIndex, tenant: str, *values: str | None, phone: str | None = None) -> set[str]:
    """The module docstring's rule, word by word and prefix by prefix, nothing shared."""
    texts = [v for v in values if v]
    if phone:
        texts += [phone, "".join(ch for ch in phone if ch.isdigit())]
    return {
        index._token(tenant, "prefix", word[:n])
        for text in texts
        if text
        for word in words(text)
        for n in range(1, min(len(word), MAX_PREFIX) + 1)
    }


@pytest.mark.parametrize(
    ("name", "email", "phone"),
    [
        ("Ada Lovelace", "ada.lovelace@example.com", None),  # the name's words again in the email
        ("Guest 12", "guest-12@example.com", "+43 660 123"),
        ("Zoë Ångström-Øberg", "ZOE_ANGSTROM+Oberg@Example.ORG", None),
        ("a" * 30 + " " + "a" * 26, "b" * 40 + "@x.io", "0660"),  # past MAX_PREFIX, and one another's prefix
        (None, None, None),
    ],
)
def test_search_tokens_are_every_prefix_of_every_word(index, name, email, phone):
    assert index.search_tokens("tenant-1", name, email, phone=phone) == by_definition(
        index, "tenant-1", name, email, phone=phone
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=3), st.one_of(st.none(), st.text(max_size=20)))
def test_search_tokens_match_the_definition_for_any_text(index, values, phone):
    assert index.search_tokens("t", *values, phone=phone) == by_definition(index, "t", *values, phone=phone)


def test_a_query_finds_the_row_by_the_beginnings_of_its_words(index):
    row = index.search_tokens("t", "Ada Lovelace", "ada.lovelace@example.com")
    assert set(index.query_tokens("t", "ada lov")) <= row
    assert set(index.query_tokens("t", "lovelace@exa")) <= row
    assert not set(index.query_tokens("t", "velace")) <= row
    assert not set(index.query_tokens("t2", "ada")) <= row  # another tenant: other tokens
