"""Running the operator tool (`booking-accounts`) against a test `System`, as an operator would:
a real process, pointed at the deployment by a config file with each service's settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.system import REPO, System


class Ops:
    def __init__(self, system: System, root: Path):
        self.system = system
        self.config = root / "ops.toml"
        lines = []
        for name, service in system.services.items():
            lines.append(f"[services.{name}.env]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in sorted(service.env.items())]
            lines.append("")
        self.config.write_text("\n".join(lines))

    def run(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "ops", "--config", str(self.config), *args],
            cwd=REPO,
            env={**os.environ, "BOOKING_ACCOUNTS_OPERATOR": "test-operator"},
            input=input,
            capture_output=True,
            timeout=240,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"booking-accounts {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout.decode()}\n{result.stderr.decode()}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)
