"""The customers' read path, in memory: answered from the read model without replaying any
aggregate, the same after the read model is rebuilt from the log, and its cache of accounts and
tenant rules kept current by the projection, also when another instance or an operator's
rebuild moved the projection's position."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from backbone.follower import PositionMoved, read_log
from services.bookings import views
from services.bookings.application import CustomerRefused
from services.bookings.reads import CustomerReads, ReadCache
from tests.support.bookings import command, pay, place
from tests.unit.bookings.conftest import COMMANDS, TENANT


async def a_booking_with_a_history(harness, http, session):
    """Placed, paid in part, modified and cancelled by its customer."""
    body = place(TENANT, "ada@example.com", starts_at=harness.now + timedelta(days=9))
    await harness.send(body)
    booking_id = body["booking_id"]
    await harness.send(pay(TENANT, booking_id, "30.00"))
    headers = http.headers_for(session)
    changes = {"contact": {"phone": "+43 660 1234567"}, "form": {"diet": "vegetarian"}}
    preview = (
        await http.post(f"/v1/me/bookings/{booking_id}/modification-preview", headers=headers, json=changes)
    ).json()
    body = {**changes, "booking_version": preview["booking_version"]}
    modified = await http.post(f"/v1/me/bookings/{booking_id}/modification", headers=headers, json=body)
    assert modified.status_code == 200, modified.text
    quote = (await http.get(f"/v1/me/bookings/{booking_id}/cancellation-quote", headers=headers)).json()
    confirm = {**quote["confirm"]["body"], "reason": "rain"}
    cancelled = await http.post(quote["confirm"]["href"], headers=headers, json=confirm)
    assert cancelled.status_code == 200, cancelled.text
    return booking_id


async def answers(http, session, booking_id):
    headers = http.headers_for(session)
    listing = await http.get("/v1/me/bookings", headers=headers)
    detail = await http.get(f"/v1/me/bookings/{booking_id}", headers=headers)
    assert listing.status_code == detail.status_code == 200, (listing.text, detail.text)
    return listing.json(), detail.json()


async def test_reads_replay_no_aggregate_and_show_what_the_customer_did_at_once(harness, http, monkeypatch):
    await harness.hear(
        harness.accounts.settings(
            allow_cancel=True,
            cancel_cutoff={"amount": 2, "unit": "days"},
            allow_modify=True,
            modify_cutoff={"amount": 2, "unit": "days"},
        )
    )
    ada = await harness.customer()
    booking_id = await a_booking_with_a_history(harness, http, ada)
    another = place(
        TENANT, "ada@example.com", starts_at=harness.now + timedelta(days=3), account_id=ada.account_id
    )
    await harness.send(another)

    touched = []
    for name in ("get",):
        real = getattr(harness.app.repository, name)
        monkeypatch.setattr(
            harness.app.repository, name, lambda *a, _r=real, **k: touched.append(a) or _r(*a, **k)
        )
    real_events = harness.app.events.get
    monkeypatch.setattr(harness.app.events, "get", lambda *a, **k: touched.append(a) or real_events(*a, **k))

    listing, detail = await answers(http, ada, booking_id)
    assert touched == []  # neither the listing nor the booking replayed or read anything of the store

    assert [b["booking_id"] for b in listing] == [booking_id, another["booking_id"]]  # latest start first
    # The customer's own modification and cancellation show at once (the routes waited for them).
    assert (detail["status"], detail["version"]) == ("STOP", harness.booking(booking_id).version)
    assert detail["contact"] == {
        "email": "ada@example.com",
        "name": "Test Customer",
        "phone": "+43 660 1234567",
    }
    assert detail["form"] == {"pickup": "Harbour gate", "diet": "vegetarian"}
    assert [(e["what"], e["by"]["label"]) for e in detail["history"]] == [
        ("placed", "the business's systems"),
        ("payment_recorded", "the business's systems"),
        ("status_changed", "the business's systems"),  # PART, after the payment
        ("modified", "you"),
        ("cancelled", "you"),
    ]
    assert detail["history"][-1]["summary"].endswith("Your reason: rain")
    assert [e["version"] for e in detail["history"]] == list(range(1, detail["version"] + 1))


async def test_a_read_model_rebuilt_from_the_log_answers_the_same(harness, http):
    await harness.hear(
        harness.accounts.settings(
            allow_cancel=True,
            cancel_cutoff={"amount": 2, "unit": "days"},
            allow_modify=True,
            modify_cutoff={"amount": 1, "unit": "days"},
        )
    )
    ada = await harness.customer()
    booking_id = await a_booking_with_a_history(harness, http, ada)
    await harness.send(place(TENANT, "ada@example.com", status="PART", paid="10.00"))
    before = await answers(http, ada, booking_id)

    harness.read_model.drop()
    harness.read_model.create()
    assert harness.projection.load_position() == 0  # a restart: the cache starts afresh too
    harness.projection.apply(read_log(harness.app, 0, 10_000))
    assert await answers(http, ada, booking_id) == before


async def test_the_cache_follows_what_the_projection_applies(harness, http):
    accounts = harness.accounts
    await harness.hear(accounts.settings(allow_cancel=True))
    ada = await harness.customer()
    booking_id = await a_booking(harness)
    headers = http.headers_for(ada)
    assert (await http.get("/v1/me/bookings", headers=headers)).status_code == 200
    assert len(harness.reads.cache) == 3  # ada's account, the tenant's rules and its statuses

    await harness.hear(accounts.settings(allow_cancel=False))
    [summary] = (await http.get("/v1/me/bookings", headers=headers)).json()
    assert summary["cancel"]["reason_code"] == "setting_off"

    define = command(
        "DefineCustomStatus", TENANT, status="POSTPONED", label="Postponed", locks_inventory=False
    )
    await harness.send(define)
    staff = {"kind": "staff", "id": "s1"}
    await harness.send(
        command("ChangeBookingStatus", TENANT, booking_id, status="POSTPONED", on_behalf_of=staff)
    )
    detail = (await http.get(f"/v1/me/bookings/{booking_id}", headers=headers)).json()
    assert detail["status_label"] == "Postponed"
    await harness.send({**define, "command_id": str(uuid.uuid4()), "label": "Moved to a later date"})
    detail = (await http.get(f"/v1/me/bookings/{booking_id}", headers=headers)).json()
    assert detail["status_label"] == "Moved to a later date"
    assert detail["history"][-1]["summary"] == "Status changed from Pending to Moved to a later date."

    await harness.hear(accounts.archived(ada.account_id))
    archived = await http.get(f"/v1/me/bookings/{booking_id}", headers=headers)
    assert (archived.status_code, archived.json()["code"]) == (403, "account_archived")


async def test_a_projection_whose_position_moved_forgets_everything_it_cached(harness):
    """Two instances of the service on one read model: the other one applied the events."""
    await harness.hear(harness.accounts.settings(allow_cancel=True))
    ada = await harness.customer()
    here = CustomerReads(harness.read_model, harness.app.clock, ReadCache(), vault=harness.app.vault)
    projection_here = here.projection(harness.app, "bookings.views")
    booking_id = uuid.UUID(await a_booking(harness))
    projection_here.position = projection_here.load_position()
    assert here.account(ada.account_id).archived is False  # cached
    assert len(here.my_booking(ada, booking_id).history) == 1  # cached: the row and its history

    await harness.send(pay(TENANT, str(booking_id), "10.00"))  # applied by the other instance
    assert len(here.my_booking(ada, booking_id).history) == 1  # not heard of here yet
    await harness.hear(harness.accounts.archived(ada.account_id))  # also by the other instance
    assert here.account(ada.account_id).archived is False  # this cache has not heard of it yet
    batch = read_log(harness.app, projection_here.position, 100)
    with pytest.raises(PositionMoved):
        projection_here.apply(batch, previous=projection_here.position)
    projection_here.position = projection_here.load_position()  # what its follower does then
    assert here.account(ada.account_id).archived is True
    assert len(here.bookings) == 0  # the booking's row and history too
    with pytest.raises(CustomerRefused, match="archived"):
        here.my_bookings(ada)


def test_a_value_loaded_while_the_projection_forgot_it_is_not_kept():
    cache = ReadCache(size=10)
    key = uuid.uuid4()
    read_before_the_commit = threading.Event()

    def load():
        read_before_the_commit.set()
        cache.forget([key])  # the projection commits and forgets meanwhile
        return "old"

    assert cache.get(key, load) == "old"  # answered, but not kept
    assert cache.get(key, lambda: "new") == "new"
    assert cache.get(key, lambda: "newer") == "new"  # kept until forgotten
    for i in range(20):
        cache.get(uuid.uuid4(), lambda i=i: i)
    assert len(cache) == 10  # the least recently used went


async def test_waiting_for_the_read_model_gives_up_after_a_while(harness):
    await harness.hear(harness.accounts.settings(allow_cancel=True))
    booking_id = uuid.UUID(await a_booking(harness))
    assert harness.reads.until_shown(booking_id, 1) is True
    assert harness.reads.until_shown(booking_id, 2, patience=0.05) is False  # not (yet) there
    with harness.read_model.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(views.booking_history)).scalar() == 1


async def a_booking(harness) -> str:
    body = place(TENANT, "ada@example.com", starts_at=harness.now + timedelta(days=7))
    await harness.send(body)
    assert harness.outcome(body)["outcome"] == "accepted", harness.outcome(body)
    return body["booking_id"]


async def test_a_cached_summary_is_answered_only_while_it_is_still_true(harness, http):
    """The listing's summaries are kept shaped and serialised (`reads.Summaries`): a payment, a
    change of the tenant's rules, the cut-off passing and the booking starting each give a new
    answer, with no event to tell the cache about the last two."""
    await harness.hear(
        harness.accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 2, "unit": "days"})
    )
    ada = await harness.customer()
    booking_id = await a_booking(harness)  # starts in 7 days
    headers = http.headers_for(ada)

    async def summary():
        listing = await http.get("/v1/me/bookings", headers=headers)
        detail = await http.get(f"/v1/me/bookings/{booking_id}", headers=headers)
        [shown] = listing.json()
        assert {k: v for k, v in detail.json().items() if k in shown} == shown  # one answer, both routes
        return shown

    first = await summary()
    assert (first["cancel"]["allowed"], first["amount_paid"]) == (True, "0.00")
    assert await summary() == first
    assert len(harness.reads.summaries) == 1

    await harness.send(pay(TENANT, booking_id, "30.00"))
    paid = await summary()
    assert paid["amount_paid"] == "30.00" and paid["version"] > first["version"]

    await harness.hear(
        harness.accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 1, "unit": "days"})
    )
    assert (await summary())["cancel"]["until"] != paid["cancel"]["until"]  # the tenant's new cut-off

    deadline = harness.reads.summaries._entries[booking_id].valid_until
    harness.now = deadline - timedelta(seconds=1)
    assert (await summary())["cancel"]["allowed"] is True
    harness.now = deadline
    assert (await summary())["cancel"]["reason_code"] == "cutoff_passed"
    harness.now += timedelta(days=7)
    assert (await summary())["cancel"]["reason_code"] == "already_started"


async def test_summaries_beyond_their_bound_are_forgotten_and_shaped_again_alike(harness, http):
    """`reads.Summaries` keeps at most `size` summaries, the least recently used going first:
    a listing of more bookings than that answers every one of them, and the same again, the
    forgotten ones shaped anew from the tables."""
    await harness.hear(harness.accounts.settings(allow_cancel=True))
    ada = await harness.customer()
    harness.reads.summaries.size = 2
    placed = []
    for day in (7, 8, 9):
        body = place(TENANT, "ada@example.com", starts_at=harness.now + timedelta(days=day))
        await harness.send(body)
        assert harness.outcome(body)["outcome"] == "accepted", harness.outcome(body)
        placed.append(body["booking_id"])
    await harness.send(pay(TENANT, placed[0], "30.00"))  # (one unlike the others)

    first = (await http.get("/v1/me/bookings", headers=http.headers_for(ada))).json()
    assert sorted(b["booking_id"] for b in first) == sorted(placed)
    assert len(harness.reads.summaries) == 2  # the third was shaped, answered, not kept
    forgotten = next(b for b in placed if b not in harness.reads.summaries._entries)
    again = (await http.get("/v1/me/bookings", headers=http.headers_for(ada))).json()
    assert again == first
    assert len(harness.reads.summaries) == 2 and forgotten in harness.reads.summaries._entries
    detail = (await http.get(f"/v1/me/bookings/{placed[0]}", headers=http.headers_for(ada))).json()
    [listed] = [b for b in again if b["booking_id"] == placed[0]]
    assert {k: v for k, v in detail.items() if k in listed} == listed
    assert listed["amount_paid"] == "30.00"


async def test_a_customer_waiting_for_the_read_model_is_woken_by_the_running_projection(harness, monkeypatch):
    """Where the projection runs in this process, `until_shown` waits for its next batch: it
    does not look at the tables again and again (a confirm used to poll, holding a thread of
    the pool the projection needed)."""
    import asyncio
    from types import SimpleNamespace

    from services.bookings import reads

    await harness.hear(harness.accounts.settings(allow_cancel=True))
    booking_id = await a_booking(harness)

    def no_polling(_: float) -> None:
        raise AssertionError("until_shown polled")

    monkeypatch.setattr(reads, "time", SimpleNamespace(monotonic=time.monotonic, sleep=no_polling))
    harness.app._listeners.remove(harness.project)  # the service's projection, not the harness's
    harness.projection.poll_interval = 3600  # only the save can wake it in time
    running = asyncio.create_task(harness.projection.run())
    await asyncio.wait_for(harness.projection.caught_up.wait(), timeout=30)
    waiting = asyncio.create_task(asyncio.to_thread(harness.reads.until_shown, uuid.UUID(booking_id), 2, 30))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    paid = pay(TENANT, booking_id, "10.00")
    await harness.inbox.apply([harness._record(COMMANDS, paid)])  # its save wakes the projection
    assert await waiting is True
    harness.projection.stop()
    await running


async def test_the_shortcut_answers_exactly_as_the_routes_and_leaves_them_every_refusal(harness, http, monkeypatch):
    """`api.FastReads` answers the two hot reads and the cancellation quote before FastAPI's
    routing. Each answer must be the route's own, byte for byte; every answer that is not a
    success must come from the route (the shortcut declines it)."""
    from services.bookings import api

    both = {"allow_cancel": True, "allow_modify": True}
    await harness.hear(harness.accounts.settings(**both))
    ada, bob = await harness.customer("ada@example.com"), await harness.customer("bob@example.com")
    booking_id = await a_booking_with_a_history(harness, http, ada)
    other = place(TENANT, "bob@example.com", starts_at=harness.now + timedelta(days=3))
    await harness.send(other)
    open_one = place(TENANT, "ada@example.com", starts_at=harness.now + timedelta(days=5))
    await harness.send(open_one, pay(TENANT, open_one["booking_id"], "12.50"))
    expired = ada.__class__(
        ada.account_id, TENANT, ada.session_id, ada.issued_at - timedelta(days=2), ada.issued_at - timedelta(days=1)
    )

    answered_by: list[str] = []
    shortcut = http.shortcuts.handlers[0]
    assert isinstance(shortcut, api.FastReads)

    async def watched(scope):
        answer = await api.FastReads.__call__(shortcut, scope)
        answered_by.append("shortcut" if answer is not None else "route")
        return answer

    monkeypatch.setattr(http.shortcuts, "handlers", [watched])

    async def both_ways(path, headers):
        http.shortcuts.enabled = True
        answered_by.clear()
        fast = await http.get(path, headers=headers)
        by = answered_by[:]
        http.shortcuts.enabled = False
        ordinary = await http.get(path, headers=headers)
        http.shortcuts.enabled = True

        def shown(response):
            kept = {k: v for k, v in response.headers.items() if k.lower() != "x-correlation-id"}
            return response.status_code, kept, response.content

        assert shown(fast) == shown(ordinary), path
        return fast.status_code, by

    mine, theirs = f"/v1/me/bookings/{booking_id}", f"/v1/me/bookings/{other['booking_id']}"
    token = http.headers_for(ada)
    assert await both_ways("/v1/me/bookings", token) == (200, ["shortcut"])
    assert await both_ways(mine, token) == (200, ["shortcut"])
    assert await both_ways("/v1/me/bookings", http.headers_for(bob)) == (200, ["shortcut"])
    # Everything else is the route's to answer.
    assert await both_ways(theirs, token) == (404, ["route"])  # not hers: not found
    assert await both_ways(f"/v1/me/bookings/{str(booking_id).upper()}", token) == (200, ["shortcut"])
    assert await both_ways(mine.replace("-", ""), token) == (200, ["route"])  # (another spelling)
    assert await both_ways("/v1/me/bookings/not-a-uuid", token) == (422, ["route"])
    assert await both_ways("/v1/me/bookings", {}) == (401, ["route"])
    assert await both_ways("/v1/me/bookings", {"Authorization": "Basic abc"}) == (401, ["route"])
    assert await both_ways("/v1/me/bookings", {"Authorization": token["Authorization"] + "x"}) == (
        401,
        ["route"],
    )
    assert await both_ways(mine, http.headers_for(expired)) == (401, ["route"])
    assert await both_ways(f"{mine}/history", token) == (404, ["route"])  # no such route
    quote = f"/v1/me/bookings/{open_one['booking_id']}/cancellation-quote"
    assert await both_ways(quote, token) == (200, ["shortcut"])
    upper = f"/v1/me/bookings/{open_one['booking_id'].upper()}/cancellation-quote"
    assert await both_ways(upper, token) == (200, ["shortcut"])
    assert await both_ways(f"{mine}/cancellation-quote", token) == (409, ["route"])  # cancelled already
    assert await both_ways(f"{theirs}/cancellation-quote", token) == (404, ["route"])  # not hers
    assert await both_ways(quote, http.headers_for(expired)) == (401, ["route"])
    assert await both_ways(quote + "x", token) == (404, ["route"])
    assert await both_ways(quote.replace("-", "", 4), token) == (200, ["route"])  # (another spelling)
    await harness.hear(harness.accounts.settings(customer_logins_enabled=False, **both))  # refused
    assert await both_ways("/v1/me/bookings", token) == (403, ["route"])


async def test_the_quote_from_the_read_model_is_the_one_the_aggregate_gives(harness, http):
    """`reads.cancellation_quote` (what the API answers) against `Bookings.cancellation_quote`
    (the aggregate's): the same answer, or the same refusal, in every state a booking goes
    through: paid in part, modified, terms frozen then the tenant's rules changed, the cut-off
    passed, cancelled; and not found for a booking that is not the customer's."""
    from services.bookings import answers
    from services.bookings.application import CustomerRefused as Refused_
    from services.bookings.errors import Refused

    await harness.hear(
        harness.accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 2, "unit": "days"}, timezone="Europe/Vienna")
    )
    ada, bob = await harness.customer("ada@example.com"), await harness.customer("bob@example.com")
    booking_id = uuid.UUID(await a_booking(harness))
    others = place(TENANT, "bob@example.com", starts_at=harness.now + timedelta(days=9))
    await harness.send(others)

    def both(session, which=booking_id):
        def outcome(ask):
            try:
                return ask().model_dump(mode="json")
            except (Refused, Refused_) as refused:
                return ("refused", type(refused).__name__, getattr(refused, "code", None), str(refused))
            except Exception as error:  # NotFound and the like
                return ("error", type(error).__name__, str(error))

        from_aggregate = outcome(lambda: answers.quote_answer(harness.app.cancellation_quote(session, which)))
        from_read_model = outcome(lambda: harness.reads.cancellation_quote(session, which))
        assert from_read_model == from_aggregate
        return from_read_model

    assert both(ada)["amount_paid"] == "0.00"
    await harness.send(pay(TENANT, str(booking_id), "30.00"))
    quote = both(ada)
    assert (quote["amount_paid"], quote["refund_due"]) == ("30.00", "30.00")
    assert "Europe/Vienna" in quote["policy"]["text"]
    await harness.hear(harness.accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 5, "unit": "days"}))
    assert "the terms this booking was placed under" in both(ada)["policy"]["text"]  # frozen terms
    assert both(ada, uuid.UUID(others["booking_id"]))[:2] == ("error", "NotFound")  # not hers
    assert both(bob, uuid.UUID(others["booking_id"]))["code"]
    harness.now += timedelta(days=6)  # past the 2-day cut-off of a booking 7 days ahead
    assert both(ada)[0] == "refused"
    harness.now -= timedelta(days=6)
    quote = both(ada)
    cancelled = await http.post(quote["confirm"]["href"], headers=http.headers_for(ada), json=quote["confirm"]["body"])
    assert cancelled.status_code == 200, cancelled.text
    assert both(ada)[0] == "refused"  # cancelled already


async def test_a_standby_instance_forgets_what_the_leader_applied(harness):
    """Several instances on one read model: one leads the projection (here, the harness's),
    the others stand by and keep answering reads from their caches. A standby follows the
    stored position (`keep_caches_current`, a step every 0.25 s) and forgets what the leader
    applied: a payment shows on the booking's page, an archived account is refused, at the
    next step, not at the next restart."""

    class StandingBy:  # another instance holds the projection's lock (backbone.leadership)
        held, lease = False, None

    await harness.hear(harness.accounts.settings(allow_cancel=True))
    ada = await harness.customer()
    booking_id = uuid.UUID(await a_booking(harness))
    standby = CustomerReads(harness.read_model, harness.app.clock, ReadCache(), vault=harness.app.vault)
    keeper = standby.projection(harness.app, "bookings.views")
    keeper.lead_with(StandingBy())
    seen = keeper.forget_applied(0)  # (everything so far: what it cached at the start is current)
    assert len(standby.my_booking(ada, booking_id).history) == 1  # cached

    await harness.send(pay(TENANT, str(booking_id), "10.00"))  # the leader applies it
    paid = harness.reads.my_booking(ada, booking_id).model_dump()  # as the leader shows it
    assert len(paid["history"]) > 1
    assert len(standby.my_booking(ada, booking_id).history) == 1  # not heard of yet
    seen = keeper.forget_applied(seen)
    assert standby.my_booking(ada, booking_id).model_dump() == paid

    await harness.hear(harness.accounts.archived(ada.account_id))
    assert standby.account(ada.account_id).archived is False
    seen = keeper.forget_applied(seen)
    with pytest.raises(CustomerRefused, match="archived"):
        standby.my_bookings(ada)

    keeper.lead_with(harness.projection.leadership)  # leading: its own `apply` forgets
    assert keeper.forget_applied(seen) == seen
    assert keeper.forget_applied(seen - 1) == seen and len(standby.cache) > 0  # leader: no forgetting
    keeper.lead_with(StandingBy())
    keeper.forget_applied(seen + 1)  # the position went back (an operator's rebuild)
    assert len(standby.cache) == 0 and len(standby.bookings) == 0
