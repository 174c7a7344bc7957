"""Lower: key files were written first and chmodded after: between the two, with a usual
umask, another local user could open the private key (and keep the file descriptor)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from backbone.credentials import load_or_create_sealing_keys, load_or_create_signing_key


def test_a_private_key_file_is_never_readable_by_others_even_for_a_moment(tmp_path, monkeypatch):
    previous = os.umask(0)  # the most permissive umask: only the creation mode protects the file
    modes_while_written = []
    real_replace = os.replace

    def replace(source, target):
        modes_while_written.append(stat.S_IMODE(os.stat(source).st_mode))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "chmod", lambda *_, **__: pytest.fail("a key file was chmodded after writing"))
    try:
        load_or_create_signing_key(tmp_path / "accounts" / "session-signing-key.pem")
        load_or_create_sealing_keys(tmp_path / "notifier" / "sealing.key")
    finally:
        os.umask(previous)
    assert modes_while_written == [0o600, 0o600]
    for private in (tmp_path / "accounts" / "session-signing-key.pem", tmp_path / "notifier" / "sealing.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file left behind
