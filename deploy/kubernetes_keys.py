"""The keys Job of the Kubernetes deployment (deploy/k8s/keys-job.yaml):

    python -m deploy.kubernetes_keys <secret-name>

Creates the Secret holding the keys the services share (the files `deploy/keys.py` makes),
unless it exists: keys are made once and never replaced by this Job. Two Jobs racing both
see "absent", and the API server lets only one create it (409 for the other: fine).

It talks to the API server from inside the pod, with the pod's service account (its token,
CA and namespace are mounted at the standard path), over plain HTTPS with httpx: nothing here
needs a Kubernetes client library.
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from deploy.keys import main as make_keys

ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API = "https://kubernetes.default.svc"


def secret_files(folder: Path) -> dict[str, bytes]:
    """Every key file `deploy/keys.py` made in `folder`, by its key in the Secret: the path with
    dots for slashes (`bus/accounts.key` -> `bus.accounts.key`), and a trusted bus key by its
    service only (`bus/trusted/accounts.<key id>.pub` -> `bus.trusted.accounts.pub`), so that
    the Deployments can name it; mounted back as `bus/trusted/<service>.current.pub`."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        parts = path.relative_to(folder).parts
        if parts[:2] == ("bus", "trusted"):
            key = f"bus.trusted.{parts[-1].split('.', 1)[0]}.pub"
        else:
            key = ".".join(parts)
        files[key] = path.read_bytes()
    return files


def secret_manifest(name: str, folder: Path) -> dict[str, Any]:
    """The Secret of every key file in `folder` (see `secret_files`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "booking-accounts"}},
        "type": "Opaque",
        "data": {key: base64.b64encode(data).decode() for key, data in secret_files(folder).items()},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    name = argv[0]
    namespace = (ACCOUNT / "namespace").read_text().strip()
    headers = {"Authorization": f"Bearer {(ACCOUNT / 'token').read_text().strip()}"}
    with httpx.Client(base_url=API, headers=headers, verify=str(ACCOUNT / "ca.crt"), timeout=30) as api:
        url = f"/api/v1/namespaces/{namespace}/secrets"
        existing = api.get(f"{url}/{name}")
        if existing.status_code == 200:
            print(f"secret {name} exists: keys kept")
            return 0
        if existing.status_code != 404:
            existing.raise_for_status()
        with tempfile.TemporaryDirectory() as tmp:
            make_keys([tmp])
            created = api.post(url, json=secret_manifest(name, Path(tmp)))
        if created.status_code == 409:
            print(f"secret {name} was created meanwhile: keys kept")
            return 0
        created.raise_for_status()
        print(f"secret {name} created")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
