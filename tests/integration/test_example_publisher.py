"""The example publisher that the README points other teams to works, and a command sent three
times is applied once and answered three times the same."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.system import REPO, System

pytestmark = pytest.mark.integration


def test_example_publisher_gets_three_identical_outcomes(tmp_path, kafka_bootstrap_servers, mail_server):
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port).start("bookings")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.publish_booking",
            "--kafka",
            kafka_bootstrap_servers,
            "--namespace",
            system.namespace,
            "--tenant",
            "demo",
            "--email",
            "ada@example.com",
            "--repeat",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    system.stop()
    assert run.returncode == 0, run.stderr
    outcomes = [line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("outcome")]
    assert outcomes == ["accepted version=1 reason=None"] * 3
