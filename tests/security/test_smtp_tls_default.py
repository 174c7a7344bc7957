"""Lower: SMTP_TLS defaulted to `none`: a deployment that only set SMTP_HOST to its provider
sent every email, login and reset links included, across the network in the clear."""

from __future__ import annotations

from services.notifier.settings import NotifierSettings


def test_a_remote_mail_server_gets_starttls_unless_told_otherwise():
    assert NotifierSettings(smtp_host="smtp.provider.example").smtp_tls_mode == "starttls"
    assert NotifierSettings(smtp_host="10.0.0.25").smtp_tls_mode == "starttls"
    assert NotifierSettings(smtp_host="smtp.provider.example", smtp_tls="tls").smtp_tls_mode == "tls"
    # Plain SMTP only for a server on this machine, or when said explicitly (a local catcher).
    for local in ("127.0.0.1", "localhost", "::1"):
        assert NotifierSettings(smtp_host=local).smtp_tls_mode == "none"
    assert NotifierSettings(smtp_host="mailpit", smtp_tls="none").smtp_tls_mode == "none"
