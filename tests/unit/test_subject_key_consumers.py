"""`contracts.personal.SUBJECT_KEY_CONSUMERS` says whose keys topic each service consumes;
the vault's migration trusts it to know which copies of a key an owner's erasure reaches
(`backbone.personal._migrate_legacy`). Here it is checked against what the services' own
bootstraps subscribe to."""

from __future__ import annotations

import base64

from backbone.credentials import load_or_create_sealing_keys, load_or_create_signing_key, public_path
from backbone.signing import key_settings
from backbone.subjectkeys import SubjectKeyReceiver
from contracts.personal import SUBJECT_KEY_CONSUMERS, subject_keys_topic
from ops import registry
from ops.config import Deployment


def test_each_service_consumes_the_keys_topics_the_contract_says(tmp_path):
    _, notifier_public = load_or_create_sealing_keys(tmp_path / "sealing.key")
    signing = tmp_path / "session-signing-key.pem"
    load_or_create_signing_key(signing)
    deployment = Deployment(
        common={
            "DATA_DIR": str(tmp_path / "data"),
            "NOTIFIER_PUBLIC_KEY": base64.b64encode(notifier_public).decode(),
            "SESSION_PUBLIC_KEY_FILE": str(public_path(signing)),
            "SESSION_SIGNING_KEY_FILE": str(signing),
            "SEALING_KEY_FILE": str(tmp_path / "sealing.key"),
            **{k.upper(): str(v) for k, v in key_settings(tmp_path / "bus", "keys-test").items()},
        }
    )
    for name in registry.NAMES:
        settings = deployment.settings(name, registry.settings_class(name))
        handle = registry.ServiceHandle(name, registry._load(registry.entry(name).bootstrap)(settings))
        try:
            consumed = {
                topic for c in handle.consumers if isinstance(c, SubjectKeyReceiver) for topic in c.topics
            }
        finally:
            handle.close()
        owners = sorted(owner for owner, readers in SUBJECT_KEY_CONSUMERS.items() if name in readers)
        assert consumed == {settings.topic(subject_keys_topic(owner)) for owner in owners}, name
