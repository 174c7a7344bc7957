"""`./deploy/up` (python -m deploy.local up) as far as it can be checked without starting it:
what each service is started with, and the operator tool's config file written from that."""

from __future__ import annotations

import os
import stat

from deploy.local.__main__ import SERVICES, service_env, write_ops_config
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
    }


def test_the_ops_config_holds_every_setting_the_services_start_with_the_callers_included(tmp_path):
    envs = started_with(tmp_path)
    path = write_ops_config("127.0.0.1:9092", envs, tmp_path / "ops.toml")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    deployment = Deployment.load(path)
    for spec in SERVICES:
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
