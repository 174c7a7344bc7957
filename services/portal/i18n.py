"""The portal's words in English and German, and amounts and dates the way each language
writes them (babel), in the tenant's time zone."""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_time
from babel.numbers import format_currency

LANGUAGES = ("en", "de")
LOCALES = {"en": "en_GB", "de": "de_DE"}

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "language.en": "English",
        "language.de": "Deutsch",
        "nav.bookings": "My bookings",
        "nav.logout": "Log out",
        "nav.login": "Log in",
        "nav.claim": "Create an account",
        "login.title": "Log in",
        "login.email": "Email address",
        "login.password": "Password",
        "login.submit": "Log in",
        "login.failed": "The email address or the password is wrong.",
        "login.link_instead": "Email me a login link instead",
        "login.forgot": "Forgot your password?",
        "login.no_account": "No account yet?",
        "link.title": "Log in with an emailed link",
        "link.intro": "We email you a link that logs you in. It works once, for a few minutes.",
        "link.submit": "Email me a login link",
        "link.open_title": "Log in",
        "link.open_intro": "Press the button to log in.",
        "link.open_submit": "Log me in",
        "link.missing": "This page needs the link from your email. Open the link again.",
        "claim.title": "Create your account",
        "claim.intro": "Use the email address you booked with: you will see every booking you made with it.",
        "claim.name": "Your name",
        "claim.submit": "Create my account",
        "forgot.title": "Forgotten password",
        "forgot.intro": "We email you a link to choose a new password.",
        "forgot.submit": "Email me a link",
        "verify.title": "Verify your email address",
        "verify.intro": "Press the button to confirm this is your email address.",
        "verify.submit": "Verify my email address",
        "verify.done": "Your email address is verified. You can log in now.",
        "verify.done_link": "Your email address is verified. A login link is on its way to it.",
        "verify.password": "Choose a password (optional: without one you log in with emailed links)",
        "confirm.title": "Confirm your new email address",
        "confirm.intro": "Press the button to use this address from now on.",
        "confirm.submit": "Confirm my new email address",
        "password.title": "Choose your password",
        "password.new": "New password",
        "password.submit": "Save my password",
        "password.done": "Your password is saved. Log in with it.",
        "bookings.title": "My bookings",
        "bookings.none": "You have no bookings yet.",
        "bookings.code": "Booking",
        "bookings.when": "When",
        "bookings.status": "Status",
        "bookings.total": "Total",
        "bookings.open": "View",
        "booking.title": "Booking {code}",
        "booking.status": "Status",
        "booking.items": "What you booked",
        "booking.quantity": "Quantity",
        "booking.amount": "Amount",
        "booking.total": "Total",
        "booking.paid": "Paid",
        "booking.balance": "Balance due",
        "booking.history": "History",
        "booking.cancel": "Cancel booking",
        "booking.cannot_cancel": "You cannot cancel this booking online:",
        "booking.back": "Back to my bookings",
        "booking.cancelled": "Your booking is cancelled.",
        "cancel.title": "Cancel booking {code}?",
        "cancel.paid": "You paid",
        "cancel.refund_due": "Refund due",
        "cancel.confirm": "Yes, cancel my booking",
        "cancel.keep": "No, keep my booking",
        "contact.title": "Contact",
        "error.title": "Something went wrong",
        "error.unavailable": "This page cannot be shown right now. Please try again in a minute.",
        "error.csrf": "This form has expired. Go back, reload the page and try again.",
        "error.not_found": "There is nothing here.",
        "sent": "Done.",
        "kind.item": "item",
        "kind.product": "product",
        "nav.details": "My details",
        "booking.change": "Change booking",
        "change.title": "Change booking {code}",
        "change.quantity": "Quantity",
        "change.starts": "Starts",
        "change.preview": "See what changes",
        "change.preview_title": "Your booking after the change",
        "change.confirm": "Confirm the change",
        "change.back": "Change something else",
        "change.done": "Your booking is changed.",
        "details.title": "My details",
        "details.name": "Name",
        "details.phone": "Phone (optional)",
        "details.save": "Save my details",
        "details.saved": "Your details are saved.",
        "details.email_title": "Change my email address",
        "details.email_intro": "We send a link to the new address; it takes effect once you follow it.",
        "details.new_email": "New email address",
        "details.current_password": "Current password (if you have one)",
        "details.email_submit": "Send the link",
        "details.email_sent": "A link is on its way to the new address. Follow it to make the change.",
        "details.pending": "Waiting to be verified:",
    },
    "de": {
        "language.en": "English",
        "language.de": "Deutsch",
        "nav.bookings": "Meine Buchungen",
        "nav.logout": "Abmelden",
        "nav.login": "Anmelden",
        "nav.claim": "Konto anlegen",
        "login.title": "Anmelden",
        "login.email": "E-Mail-Adresse",
        "login.password": "Passwort",
        "login.submit": "Anmelden",
        "login.failed": "E-Mail-Adresse oder Passwort sind falsch.",
        "login.link_instead": "Stattdessen einen Anmeldelink senden",
        "login.forgot": "Passwort vergessen?",
        "login.no_account": "Noch kein Konto?",
        "link.title": "Mit einem Link per E-Mail anmelden",
        "link.intro": "Wir senden Ihnen einen Link, der Sie anmeldet. Er gilt einmal, für einige Minuten.",
        "link.submit": "Anmeldelink senden",
        "link.open_title": "Anmelden",
        "link.open_intro": "Drücken Sie die Schaltfläche, um sich anzumelden.",
        "link.open_submit": "Jetzt anmelden",
        "link.missing": "Diese Seite braucht den Link aus Ihrer E-Mail. Öffnen Sie den Link erneut.",
        "claim.title": "Konto anlegen",
        "claim.intro": "Nutzen Sie die E-Mail-Adresse Ihrer Buchungen: Sie sehen dann alle Buchungen damit.",
        "claim.name": "Ihr Name",
        "claim.submit": "Konto anlegen",
        "forgot.title": "Passwort vergessen",
        "forgot.intro": "Wir senden Ihnen einen Link, um ein neues Passwort zu wählen.",
        "forgot.submit": "Link senden",
        "verify.title": "E-Mail-Adresse bestätigen",
        "verify.intro": "Drücken Sie die Schaltfläche, um Ihre E-Mail-Adresse zu bestätigen.",
        "verify.submit": "E-Mail-Adresse bestätigen",
        "verify.done": "Ihre E-Mail-Adresse ist bestätigt. Sie können sich jetzt anmelden.",
        "verify.done_link": "Ihre E-Mail-Adresse ist bestätigt. Ein Anmeldelink ist unterwegs.",
        "verify.password": "Passwort wählen (optional: ohne Passwort melden Sie sich per E-Mail-Link an)",
        "confirm.title": "Neue E-Mail-Adresse bestätigen",
        "confirm.intro": "Drücken Sie die Schaltfläche, um ab jetzt diese Adresse zu verwenden.",
        "confirm.submit": "Neue E-Mail-Adresse bestätigen",
        "password.title": "Passwort wählen",
        "password.new": "Neues Passwort",
        "password.submit": "Passwort speichern",
        "password.done": "Ihr Passwort ist gespeichert. Melden Sie sich damit an.",
        "bookings.title": "Meine Buchungen",
        "bookings.none": "Sie haben noch keine Buchungen.",
        "bookings.code": "Buchung",
        "bookings.when": "Wann",
        "bookings.status": "Status",
        "bookings.total": "Gesamt",
        "bookings.open": "Ansehen",
        "booking.title": "Buchung {code}",
        "booking.status": "Status",
        "booking.items": "Was Sie gebucht haben",
        "booking.quantity": "Anzahl",
        "booking.amount": "Betrag",
        "booking.total": "Gesamt",
        "booking.paid": "Bezahlt",
        "booking.balance": "Offen",
        "booking.history": "Verlauf",
        "booking.cancel": "Buchung stornieren",
        "booking.cannot_cancel": "Sie können diese Buchung nicht online stornieren:",
        "booking.back": "Zurück zu meinen Buchungen",
        "booking.cancelled": "Ihre Buchung ist storniert.",
        "cancel.title": "Buchung {code} stornieren?",
        "cancel.paid": "Bezahlt",
        "cancel.refund_due": "Zu erstatten",
        "cancel.confirm": "Ja, Buchung stornieren",
        "cancel.keep": "Nein, Buchung behalten",
        "contact.title": "Kontakt",
        "error.title": "Etwas ist schiefgegangen",
        "error.unavailable": "Diese Seite kann gerade nicht angezeigt werden. "
        "Bitte versuchen Sie es gleich noch einmal.",
        "error.csrf": "Dieses Formular ist abgelaufen. Gehen Sie zurück, laden Sie die Seite neu "
        "und versuchen Sie es erneut.",
        "error.not_found": "Hier gibt es nichts.",
        "sent": "Erledigt.",
        "kind.item": "Artikel",
        "kind.product": "Produkt",
        "nav.details": "Meine Daten",
        "booking.change": "Buchung ändern",
        "change.title": "Buchung {code} ändern",
        "change.quantity": "Anzahl",
        "change.starts": "Beginn",
        "change.preview": "Änderung ansehen",
        "change.preview_title": "Ihre Buchung nach der Änderung",
        "change.confirm": "Änderung bestätigen",
        "change.back": "Etwas anderes ändern",
        "change.done": "Ihre Buchung ist geändert.",
        "details.title": "Meine Daten",
        "details.name": "Name",
        "details.phone": "Telefon (optional)",
        "details.save": "Daten speichern",
        "details.saved": "Ihre Daten sind gespeichert.",
        "details.email_title": "E-Mail-Adresse ändern",
        "details.email_intro": "Wir senden einen Link an die neue Adresse; sie gilt, sobald Sie ihm folgen.",
        "details.new_email": "Neue E-Mail-Adresse",
        "details.current_password": "Aktuelles Passwort (falls vorhanden)",
        "details.email_submit": "Link senden",
        "details.email_sent": "Ein Link ist an die neue Adresse unterwegs. "
        "Folgen Sie ihm, um die Änderung abzuschließen.",
        "details.pending": "Wartet auf Bestätigung:",
    },
}

STATUS_LABELS = {
    "de": {
        "PRE": "Vorbuchung",
        "PEND": "Ausstehend",
        "HOLD": "Reserviert",
        "WAIT": "Wartend",
        "PART": "Anzahlung bezahlt",
        "PAID": "Bezahlt",
        "STOP": "Storniert",
        "VOID": "Ungültig",
    }
}

# Why a customer may not cancel (services/bookings/terms.py's refusal codes), in German; the
# English sentence comes from the bookings service itself.
REFUSALS_DE = {
    "already_closed": "Diese Buchung ist bereits storniert oder ungültig.",
    "setting_off": "Dieses Unternehmen erlaubt keine Online-Stornierung.",
    "status_blocks": "Buchungen in diesem Status können nicht online storniert werden; bitte wenden Sie "
    "sich an das Unternehmen.",
    "already_started": "Diese Buchung hat bereits begonnen.",
    "cutoff_passed": "Für eine Online-Stornierung ist es zu spät; bitte wenden Sie sich an das Unternehmen.",
}


def language_of(*candidates: str | None) -> str | None:
    for candidate in candidates:
        for part in (candidate or "").replace(" ", "").split(","):
            primary = part.split(";", 1)[0].split("-", 1)[0].lower()
            if primary in LANGUAGES:
                return primary
    return None


class Words:
    """What the templates call: `t("key")`, `money(...)`, `when(...)`, in one language and zone."""

    def __init__(self, language: str, timezone: str = "UTC"):
        self.language = language if language in LANGUAGES else "en"
        self.locale = LOCALES[self.language]
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = ZoneInfo("UTC")

    def t(self, key: str, **values: Any) -> str:
        text = MESSAGES[self.language].get(key) or MESSAGES["en"].get(key, key)
        return text.format(**values) if values else text

    def money(self, amount: Any, currency: str) -> str:
        return _money(str(amount), currency, self.locale)

    def when(self, value: datetime | str) -> str:
        return _when(value, self.zone, self.locale)

    def status(self, code: str, label: str) -> str:
        return STATUS_LABELS.get(self.language, {}).get(code, label)

    def refusal(self, code: str | None, sentence: str | None) -> str:
        if self.language == "de" and code in REFUSALS_DE:
            return REFUSALS_DE[code]
        return sentence or ""


# Remembered: a page shows the same few amounts and instants on every view, and babel's
# formatting (a locale looked up, a pattern parsed) was a tenth of a page's CPU time.
@functools.lru_cache(maxsize=8192)
def _money(amount: str, currency: str, locale: str) -> str:
    return format_currency(Decimal(amount), currency, locale=locale)


@functools.lru_cache(maxsize=8192)
def _when(value: datetime | str, zone: ZoneInfo, locale: str) -> str:
    instant = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = instant.astimezone(zone)
    day = format_date(local, "medium", locale=locale)
    return f"{day}, {format_time(local, 'short', locale=locale)} ({zone.key})"
