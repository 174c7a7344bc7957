"""Lower: exception text skipped the log scrubber.

Fields of a log line were scrubbed (secrets dropped, addresses masked) before the exception
was formatted into it: an exception whose message carried an address or a link's token (a
failed send, a driver's error quoting a query) reached the log as it was."""

from __future__ import annotations

import json
import logging

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.logging import configure, get_logger


def test_an_exceptions_text_goes_through_the_scrubber(capsys):
    saved_config, root = structlog.get_config(), logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure("security-test", fmt="json")
        log = get_logger("security-test")
        try:
            raise RuntimeError(
                "cannot send to victim@example.com: https://a.example/magic-link?token=SECRETTOKEN123&x=1 "
                'with {"password": "hunter2-hunter2"} and Authorization: Bearer eyJsecret.jwt.value'
            )
        except RuntimeError:
            log.exception("send failed", recipient="victim@example.com")
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        structlog.configure(**saved_config)
        root.handlers[:], root.level = saved_handlers, saved_level
    entry = json.loads(line)
    assert "RuntimeError" in entry["exception"]  # the traceback is still there
    for secret in ("victim@example.com", "SECRETTOKEN123", "hunter2-hunter2", "eyJsecret"):
        assert secret not in line, secret
    assert "v***@example.com" in entry["exception"] and "token=[redacted]" in entry["exception"]


# The scrubber skips its substitutions for text in which they cannot match (no "@", none of
# the words a secret follows): it must redact exactly what the substitutions alone redact.
_WORDS = ["token", "ToKeN", "password", "SECRET", "authorization", "Api_Key", "bearer", "BEARER", "x", "@"]


@given(
    st.lists(
        st.one_of(
            st.sampled_from([*_WORDS, "=", ": ", '"', " ", "a.b", "ada@example.com", "Bearer abc.def"]),
            st.text(max_size=6),
        ),
        max_size=12,
    ).map("".join)
)
@settings(max_examples=400, deadline=None)
def test_the_scrubbers_shortcut_redacts_what_the_substitutions_do(text):
    from backbone import logging as scrubbing

    everything = scrubbing._EMAIL.sub(
        r"\1***@\2",
        scrubbing._SECRET_IN_TEXT.sub(r"\1\2[redacted]", scrubbing._BEARER.sub("Bearer [redacted]", text)),
    )
    assert scrubbing.scrub_text(text) == everything
