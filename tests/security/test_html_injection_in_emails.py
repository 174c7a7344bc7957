"""M3: HTML injection in emails.

Whoever names things that end up in an email (a storefront naming a booking line, a customer
naming themselves, a forged or buggy event carrying a link) must not get HTML or script into
it. Before the fix, the macros (`_macros.j2`) were compiled without autoescaping, so a line
name with `<script>` came out raw in the staff cancellation email, and links went into `href`
unescaped."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.notifier.rendering import KINDS, LANGUAGES, Branding, Renderer, UnsafeLink

WHEN = datetime(2026, 7, 14, 8, 30, tzinfo=UTC)
SCRIPT = "<script>alert(document.cookie)</script>"
HOSTILE = {
    "name": f"Ada {SCRIPT}",
    "link": 'https://accounts.example/verify-email?token=a.b"><script>alert(1)</script><a href="x',
    "expires_at": WHEN,
    "booking_code": f"LAKE-{SCRIPT}",
    "lines": [
        {
            "kind": "item",
            "name": f'Kayak {SCRIPT}<img src=x onerror="alert(2)">',
            "quantity": 2,
            "starts_at": WHEN,
            "ends_at": WHEN + timedelta(hours=3),
        }
    ],
    "amount_paid": Decimal("10.00"),
    "refund_due": Decimal("10.00"),
    "total": Decimal("20.00"),
    "balance_due": Decimal("10.00"),
    "currency": "EUR",
    "cancelled_by_kind": "customer",
    "cancelled_by_id": "c1",
    "reason": f"because {SCRIPT}",
    "customer_name": f"Mallory {SCRIPT}",
    "customer_email": "mallory@example.com",
    "status_before": "PAID",
    "rules_overridden": False,
    "changes": [f"Added {SCRIPT}"],
}


def html_of(kind: str, language: str, data: dict) -> str:
    rendered = Renderer("Bookings <no-reply@booking-accounts.local>").render(
        kind=kind,
        language=language,
        data=data,
        branding=Branding(business_name=f"Lakeside {SCRIPT}", footer=SCRIPT, reply_to=None),
        recipient="ada@example.com",
        message_id="<id@booking-accounts.notifier>",
        date=WHEN,
    )
    parsed = email.message_from_bytes(rendered.raw, policy=email.policy.default)
    return parsed.get_body(("html",)).get_content()


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_script_in_a_line_name_or_any_other_field_comes_out_escaped(kind, language):
    html = html_of(kind, language, HOSTILE)
    assert "<script" not in html and "<img" not in html and 'onerror="' not in html


def test_script_in_a_line_name_is_escaped_in_the_staff_cancellation_email():
    html = html_of("booking_cancelled_staff", "en", HOSTILE)
    assert "Kayak &lt;script&gt;alert(document.cookie)&lt;/script&gt;" in html


@pytest.mark.parametrize("kind", ["verify_email", "invitation", "verify_new_email", "magic_link", "password_reset"])
def test_a_hostile_link_cannot_leave_its_href(kind):
    html = html_of(kind, "en", HOSTILE)
    assert 'href="https://accounts.example/verify-email?token=a.b&#34;&gt;&lt;script&gt;' in html


@pytest.mark.parametrize("link", ["javascript:alert(1)", "data:text/html,<script>x</script>", "//evil.example/x"])
def test_a_link_that_is_not_http_is_never_sent(link):
    with pytest.raises(UnsafeLink):
        html_of("magic_link", "en", {**HOSTILE, "link": link})
