"""Every kind of email in every language, with a tenant's branding; nothing injectable."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.notifier.rendering import KINDS, LANGUAGES, TEMPLATES, Branding, Renderer, supported_language

WHEN = datetime(2026, 7, 14, 8, 30, tzinfo=UTC)
DATA = {
    "name": "Ada <script>alert(1)</script>",
    "link": "https://accounts.example/verify-email?token=abc.def",
    "expires_at": WHEN,
    "booking_code": "LAKE-0042",
    "lines": [
        {
            "kind": "item",
            "name": "Kayak for two",
            "quantity": 2,
            "starts_at": WHEN,
            "ends_at": WHEN + timedelta(hours=3),
        }
    ],
    "amount_paid": Decimal("1234.50"),
    "refund_due": Decimal("1234.50"),
    "total": Decimal("2000.00"),
    "balance_due": Decimal("765.50"),
    "currency": "EUR",
    "cancelled_by_kind": "customer",
    "cancelled_by_id": "c1",
    "reason": "rain",
    "customer_name": "Ada",
    "customer_email": "ada@example.com",
    "status_before": "PAID",
    "rules_overridden": True,
    "changes": ["Picnic lunch added"],
}
BRANDING = Branding(
    business_name="Lakeside Tours",
    reply_to="help@lakeside.example",
    footer="Lakeside Tours GmbH\nSeestrasse 1, Gmunden",
    timezone="Europe/Vienna",
)


def render(kind, language="en", branding=BRANDING, data=DATA, recipient="ada@example.com"):
    """The rendered email, and its message as a receiving server parses it."""
    rendered = Renderer("Bookings <no-reply@booking-accounts.local>").render(
        kind=kind,
        language=language,
        data=data,
        branding=branding,
        recipient=recipient,
        message_id="<id@booking-accounts.notifier>",
        date=WHEN,
    )
    return rendered, email.message_from_bytes(rendered.raw, policy=email.policy.default)


def test_every_kind_exists_in_every_language_as_text_and_html():
    for language in LANGUAGES:
        for kind in KINDS:
            for part in ("txt", "html"):
                assert (TEMPLATES / language / f"{kind}.{part}.j2").exists(), (language, kind, part)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_each_email_has_a_subject_a_text_and_an_html_part_with_the_branding(kind, language):
    rendered, parsed = render(kind, language)
    assert parsed["Subject"] == rendered.subject and rendered.subject.strip()
    assert parsed["From"] == "Lakeside Tours <no-reply@booking-accounts.local>"
    assert parsed["Reply-To"] == "help@lakeside.example"
    assert parsed["Message-ID"] == "<id@booking-accounts.notifier>"
    assert parsed["Content-Language"] == language and parsed["Auto-Submitted"] == "auto-generated"
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Lakeside Tours" in part and "Seestrasse 1, Gmunden" in part
        assert "help@lakeside.example" in part
    assert "<script>" not in html  # names are escaped in HTML
    assert f'<html lang="{language}">' in html
    if kind in ("verify_email", "invitation", "verify_new_email", "magic_link", "password_reset"):
        assert DATA["link"] in text and DATA["link"] in html


def test_amounts_and_dates_follow_the_language_and_the_tenants_time_zone():
    _, english = render("booking_cancelled", "en")
    _, german = render("booking_cancelled", "de")
    en_text = english.get_body(("plain",)).get_content()
    de_text = german.get_body(("plain",)).get_content()
    assert "1,234.50 EUR" in en_text and "1.234,50 EUR" in de_text
    assert "14 July 2026, 10:30 (CEST)" in en_text  # 08:30 UTC in Vienna, summer time
    assert "14. Juli 2026, 10:30 Uhr (CEST)" in de_text
    assert "Refunds are not automatic" in en_text and "nicht automatisch" in de_text
    assert english["Subject"] == "Your booking LAKE-0042 is cancelled"
    assert german["Subject"] == "Ihre Buchung LAKE-0042 ist storniert"


def test_the_staff_notice_says_who_cancelled_what_was_paid_the_refund_and_overrides():
    text = render("booking_cancelled_staff")[1].get_body(("plain",)).get_content()
    assert "Customer: Ada <ada@example.com>" in text
    assert "Cancelled by: the customer" in text and "Status before: PAID" in text
    assert "Refund due: 1,234.50 EUR" in text and "rules were overridden" in text
    staff = render(
        "booking_cancelled_staff", data={**DATA, "cancelled_by_kind": "staff", "rules_overridden": False}
    )
    text = staff[1].get_body(("plain",)).get_content()
    assert "Cancelled by: staff (c1)" in text and "overridden" not in text


def test_without_branding_the_deployments_name_is_used_and_nothing_is_left_blank():
    rendered, parsed = render("welcome", branding=Branding(business_name="Bookings"))
    assert parsed["From"] == "Bookings <no-reply@booking-accounts.local>"
    assert parsed["Reply-To"] is None
    assert rendered.subject == "Welcome to Bookings"


def test_no_header_can_be_injected_through_the_business_name_or_data():
    hostile = Branding(business_name="Evil\r\nBcc: victim@example.com", reply_to=None)
    _, parsed = render("welcome", branding=hostile, data={**DATA, "name": "x\r\nBcc: v@example.com"})
    assert parsed["Bcc"] is None
    assert "\n" not in parsed["From"] and "\n" not in parsed["Subject"]


def test_a_non_ascii_address_needs_smtputf8_and_an_ascii_one_is_7bit_clean():
    german, parsed = render("welcome", "de", branding=Branding(business_name="Ötztal Touren"))
    assert not german.smtputf8 and german.raw.isascii()  # umlauts travel encoded
    assert parsed["From"] == "Ötztal Touren <no-reply@booking-accounts.local>"
    assert parsed["Subject"] == "Willkommen bei Ötztal Touren"
    foreign, parsed = render("welcome", recipient="jörg@example.com")
    assert foreign.smtputf8 and parsed["To"] == "jörg@example.com"


def test_supported_language_takes_the_first_we_write_in():
    assert supported_language(None, "fr", "de-AT", "en") == "de"
    assert supported_language("EN") == "en"
    assert supported_language(None, "") is None


def test_a_copy_sent_again_is_the_same_bytes_and_long_headers_are_folded_and_read_back_whole():
    long_name = "Seeblick Kajak- und Bootsverleih am Traunsee bei Gmunden in Oberösterreich"
    branding = Branding(business_name=long_name, reply_to="help@lakeside.example")
    first, parsed = render("welcome", "de", branding=branding)
    again, _ = render("welcome", "de", branding=branding)
    assert first.raw == again.raw  # same Message-ID, same content: the same message
    header = first.raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in header.split(b"\r\n"))  # RFC 5322's limit
    assert b"\r\n =?utf-8?q?" in header.split(b"Subject: ", 1)[1]  # the long subject is folded
    assert parsed["From"] == f"{long_name} <no-reply@booking-accounts.local>"
    assert parsed["Subject"] == first.subject == f"Willkommen bei {long_name}"
    boundary = parsed.get_boundary()
    assert boundary.startswith("=_")  # never in quoted-printable text
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed.get_body(("plain",)).get_content().count(long_name) >= 1
