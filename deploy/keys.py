"""The keys a deployment's services share, created once in one directory (a compose volume):

    python -m deploy.keys /keys

* `sealing.key` (private) and `sealing.pub` (base64): the notifier's key pair; accounts seals
  the links it emails with the public key (NOTIFIER_PUBLIC_KEY), only the notifier opens them;
* `session-signing-key.pem` and `session-signing-key.pub.pem`: accounts signs customer
  sessions, bookings checks them with the public key;
* `bus/accounts.key`, `bus/bookings.key`, `bus/notifier.key` (private, one per service:
  BUS_KEY_FILE) and `bus/trusted/<service>.<key id>.pub` (BUS_TRUSTED_KEYS_DIR, every
  service's public key): each service signs what it publishes on the bus with its own key, and
  opens the subject keys sealed for it (backbone/signing.py, docs/security.md "The bus").

Existing keys are kept (rotating them ends every session and every link in flight).
`deploy/local` makes the same keys under .local/data for the no-Docker deployment.
"""

from __future__ import annotations

import sys
from pathlib import Path

from backbone.credentials import load_or_create_sealing_keys, load_or_create_signing_key, public_path
from backbone.signing import create_key
from contracts.topics import SERVICES


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[0])
    load_or_create_sealing_keys(folder / "sealing.key")
    signing = folder / "session-signing-key.pem"
    load_or_create_signing_key(signing)
    for service in SERVICES:
        create_key(folder / "bus", service)
    print(
        f"keys in {folder}: sealing.key, sealing.pub, {signing.name}, {public_path(signing).name}, "
        f"bus/<service>.key, bus/trusted/*.pub"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
