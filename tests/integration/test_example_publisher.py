"""The example publisher that the publisher guide points other teams to works for every command,
and a command sent three times is applied once and answered three times the same."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from tests.support.system import REPO, System

pytestmark = pytest.mark.integration


def test_example_publisher_gets_three_identical_outcomes(tmp_path, kafka_bootstrap_servers, mail_server):
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port).start("bookings")
    key = tmp_path / "example-publisher.key"
    common = ["--kafka", kafka_bootstrap_servers, "--namespace", system.namespace, "--tenant", "demo"]
    common += ["--key", str(key)]

    def example(*args: str, exit_code: int = 0) -> list[str]:
        run = subprocess.run(
            [sys.executable, "-m", "examples.publish_booking", *args, *common],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == exit_code, run.stdout + run.stderr  # 1: the command was rejected
        return run.stdout.splitlines()

    def outcomes(lines: list[str]) -> list[str]:
        return [line.split(": ", 1)[1] for line in lines if line.startswith("outcome")]

    # Its key is made on first use; until the operator registers it, its commands are refused.
    refused = example("--email", "ada@example.com", exit_code=1)
    assert outcomes(refused)[0].startswith("rejected version=None reason=unknown_signing_key")
    created = next(line for line in refused if line.startswith("created the publisher key"))
    public_key = base64.b64decode(created.rsplit(": ", 1)[1])
    system.register_publisher(
        "example-storefront", public_key, ["demo"], ["place", "pay", "modify", "cancel", "override"]
    )

    # Its first form (no sub-command) still places a booking.
    placed = example("--email", "ada@example.com", "--repeat", "3")
    assert outcomes(placed) == ["accepted version=1 reason=None"] * 3
    booking_id = placed[0].rsplit("(key ", 1)[1].rstrip(")")
    paid = example("pay", "--booking", booking_id, "--amount", "20.00", "--repeat", "3")
    assert outcomes(paid) == ["accepted version=3 reason=None"] * 3  # the payment, then PART
    status = example("status", "--booking", booking_id, "--status", "PAID", "--repeat", "3", exit_code=1)
    assert [o.split(" (")[0] for o in outcomes(status)] == [
        "rejected version=None reason=status_follows_payments"
    ] * 3

    lifecycle = example("lifecycle", "--email", "eve@example.com", "--staff", "anna")
    assert [o.split(" ")[0] for o in outcomes(lifecycle)] == ["accepted"] * 5
    system.stop()
    assert system.bookings.errors() == []
