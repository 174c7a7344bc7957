"""A certificate authority made on the spot with `openssl`, for the local secured Kafka.

    ca = OpensslCA(directory)              # ca.pem (give it to clients: KAFKA_SSL_CA_FILE), ca.key
    cert, key = ca.server("broker")        # broker.pem, broker.key: for 127.0.0.1 and localhost

EC P-256 keys, PKCS#8 PEM without a password (what Kafka's PEM keystore reads), files readable
by their owner only. An existing CA in `directory` is kept (a persistent local deployment
keeps trusting the same CA across restarts).
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from deploy.local._proc import ToolMissingError, run_checked

DAYS = "825"


def _openssl() -> str:
    path = shutil.which("openssl")
    if not path:
        raise ToolMissingError("`openssl` not found on PATH (Debian: apt-get install -y openssl).")
    return path


class OpensslCA:
    def __init__(self, directory: Path, name: str = "booking-accounts-local-ca"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ca_file = self.directory / "ca.pem"
        self.key_file = self.directory / "ca.key"
        if not (self.ca_file.exists() and self.key_file.exists()):
            self._run(
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(self.key_file), "-out", str(self.ca_file), "-days", DAYS,
                "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            )  # fmt: skip
            self.key_file.chmod(0o600)

    def server(self, name: str = "broker") -> tuple[Path, Path]:
        """A certificate (and its key) for 127.0.0.1 and localhost, signed by this CA."""
        cert, key, csr = (self.directory / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
        )
        self._run(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        )  # fmt: skip
        key.chmod(0o600)
        self._run(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(self.key_file),
            "-set_serial", str(secrets.randbits(63)),
            "-out", str(cert), "-days", DAYS, "-extfile", str(extensions),
        )  # fmt: skip
        csr.unlink()
        extensions.unlink()
        return cert, key

    def _run(self, *args: str) -> None:
        run_checked([_openssl(), *args], what=f"openssl {args[0]}", timeout=60)
