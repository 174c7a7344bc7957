"""Does a stored position fit its partition? (backbone.topiclife, a table of cases)"""

from __future__ import annotations

from uuid import uuid4

import pytest

from backbone.topiclife import (
    ACCEPT_LOG_START,
    BELOW_START,
    BEYOND_END,
    FITS,
    REPLAY_FROM_START,
    TOPIC_CHANGED,
    PartitionLife,
    check,
    life_suffix,
)

A, B = uuid4(), uuid4()


@pytest.mark.parametrize(
    ("position", "bound_to", "topic_id", "start", "end", "status"),
    [
        (None, None, A, 0, 0, FITS),  # nothing applied yet: read from the start
        (None, None, None, 5, 9, FITS),
        (4, A, A, 0, 4, FITS),  # caught up
        (4, A, A, 4, 9, FITS),  # at the log start
        (4, None, A, 0, 9, FITS),  # positions from before topic ids were stored: adopted
        (4, A, B, 0, 9, TOPIC_CHANGED),  # deleted and created again: offsets alone look fine
        (None, A, B, 0, 0, TOPIC_CHANGED),
        (4, A, A, 0, 1, BEYOND_END),  # the log went back
        (4, None, None, 0, 1, BEYOND_END),  # no topic ids: the offsets still tell
        (4, A, A, 7, 9, BELOW_START),  # retention passed it
        (4, A, None, 0, 9, FITS),  # topic id unknown now: offsets only
    ],
)
def test_a_stored_position_fits_or_says_why_not(position, bound_to, topic_id, start, end, status):
    verdict = check(position, bound_to, topic_id, start, end)
    assert verdict.status == status
    assert verdict.fits == (status == FITS)
    assert bool(verdict.detail) == (status != FITS)


def test_decisions_start_new_position_keys_and_replay_keeps_the_dedupe_marks():
    life = PartitionLife("accounts.inbox", "bookings.events", 0, A)
    assert (life.offsets_life, life.marks_life) == (0, 0) and life_suffix(0) == ""
    life.decide(REPLAY_FROM_START, B, TOPIC_CHANGED, 4, 0, 1, None)
    assert (life.topic_id, life.offsets_life, life.marks_life) == (B, 1, 0)
    life.decide(ACCEPT_LOG_START, B, BELOW_START, 2, 7, 9, "retention")
    assert (life.offsets_life, life.marks_life) == (2, 2) and life_suffix(2) == "~2"
    with pytest.raises(ValueError, match="unknown decision"):
        life.decide("reset", B, BELOW_START, 2, 7, 9, None)
