"""`./deploy/up` (python -m deploy.local up) as far as it can be checked without starting it:
what each service is started with, and the operator tool's config file written from that."""

from __future__ import annotations

import os
import stat

from deploy.local.__main__ import SERVICES, mail_line, service_env, write_ops_config
from ops.config import Deployment
from ops.registry import settings_class

CALLER = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/root",
    "STORE": "postgres",
    "POSTGRES_HOST": "db.internal",
    "POSTGRES_PORT": "6543",
    "POSTGRES_USER": "booking",
    "POSTGRES_PASSWORD": "p@ss/word",
    "TOPIC_NAMESPACE": "staging",
    "SMTP_TLS": "starttls",
    "BOOKING_ACCOUNTS_ADMIN_TOKEN": "not-a-setting",
}


SECRETS = {
    "accounts": {"NOTIFIER_PUBLIC_KEY": "a2V5", "SESSION_SIGNING_KEY_FILE": "/keys/signing.pem"},
    "bookings": {"SESSION_PUBLIC_KEY_FILE": "/keys/signing.pub.pem"},
    "notifier": {"SEALING_KEY_FILE": "/keys/sealing.key"},
}


def started_with(tmp_path, caller=CALLER):
    return {
        spec.name: service_env(spec, "127.0.0.1:9092", caller, tmp_path, SECRETS[spec.name])
        for spec in SERVICES
        if spec.name in SECRETS  # the portal has no store: the operator tool has no use for it
    }


def test_the_ops_config_holds_every_setting_the_services_start_with_the_callers_included(tmp_path):
    envs = started_with(tmp_path)
    path = write_ops_config("127.0.0.1:9092", envs, tmp_path / "ops.toml")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    deployment = Deployment.load(path)
    for spec in SERVICES:
        if spec.name not in envs:
            continue
        cls = settings_class(spec.name)
        in_file = deployment.settings(spec.name, cls).model_dump()
        # What the service itself reads from the environment it is started with.
        as_started = Deployment(common=envs[spec.name]).settings(spec.name, cls).model_dump()
        assert in_file == as_started
        assert in_file["store"] == "postgres" and in_file["postgres_host"] == "db.internal"
        assert in_file["postgres_port"] == 6543 and in_file["topic_namespace"] == "staging"
        assert in_file["postgres_password"].get_secret_value() == "p@ss/word"
    text = path.read_text()
    assert "PATH" not in text and "HOME" not in text and "BOOKING_ACCOUNTS_ADMIN_TOKEN" not in text
    assert 'SMTP_TLS = "starttls"' in text  # the notifier's setting, in its table only
    assert text.count("SMTP_TLS") == 1


CATCHER = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": "1025"}  # what `up` gives the notifier by default


def notifier_env(tmp_path, caller):
    [spec] = [s for s in SERVICES if s.name == "notifier"]
    return service_env(spec, "127.0.0.1:9092", caller, tmp_path, {**SECRETS["notifier"], **CATCHER})


def test_the_callers_mail_server_wins_and_the_banner_says_so(tmp_path):
    env = notifier_env(tmp_path, {"SMTP_HOST": "smtp.example.com", "SMTP_PORT": "2525"})
    assert (env["SMTP_HOST"], env["SMTP_PORT"]) == ("smtp.example.com", "2525")
    assert "sends to smtp.example.com:2525" in mail_line(env, 1025)
    assert "not to the mail catcher" in mail_line(env, 1025)
    # One of the two is enough to mean "my mail server": the other is not the catcher's.
    env = notifier_env(tmp_path, {"SMTP_HOST": "smtp.example.com"})
    assert env["SMTP_HOST"] == "smtp.example.com" and "SMTP_PORT" not in env
    env = notifier_env(tmp_path, {"SMTP_PORT": "2526"})
    assert env["SMTP_PORT"] == "2526" and "SMTP_HOST" not in env
    assert "sends to 127.0.0.1:2526" in mail_line(env, 1025)


def test_without_a_mail_server_the_notifier_sends_to_the_mail_catcher(tmp_path):
    env = notifier_env(tmp_path, {"PATH": "/usr/bin"})
    assert (env["SMTP_HOST"], env["SMTP_PORT"]) == ("127.0.0.1", "1025")
    assert mail_line(env, 1025) == "Mail (SMTP)    127.0.0.1:1025, the mail catcher"


def test_the_callers_settings_win_over_ups_defaults_but_not_over_what_up_decides(tmp_path):
    caller = {**CALLER, "PUBLIC_BASE_URL": "https://accounts.example", "HTTP_PORT": "9999", "DATA_DIR": "/x"}
    envs = started_with(tmp_path, caller)
    assert envs["accounts"]["PUBLIC_BASE_URL"] == "https://accounts.example"
    # One broker, a port and a data directory per service: up's own.
    assert [envs[s.name]["HTTP_PORT"] for s in SERVICES if s.name in envs] == ["8001", "8002", "8003"]
    assert envs["bookings"]["DATA_DIR"] == str(tmp_path / "data" / "bookings")
