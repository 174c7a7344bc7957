"""How fast the notifier's sender delivers: prints emails/s and notifier CPU per email (a
benchmark, not a test).

    python -m benchmarks.notifier_sender                      # 3,000 emails, SQLite store
    python -m benchmarks.notifier_sender --emails 5000 --connections 1 --connections 4

It queues N emails in a fresh SQLite store (as the inbox would, in batches), starts a mail
catcher in a separate process (so that the SMTP server does not share our interpreter), and
times the real sender, projection included, from the first attempt to the last "sent" in the
read model, and the CPU time the notifier's process spent on it (the machine's other load
changes that figure much less than emails/s). The mail catcher counts what it received, so a
run also shows that each email arrived once.

Then, as a ceiling measured in the same run against the same server: the same number of
messages, rendered once beforehand, sent by a bare aiosmtplib client over the same number of
connections ("SMTP pipe"). The sender's rate is printed as a fraction of that pipe's, and the
pipe's CPU per email is what the SMTP client alone costs.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from backbone.credentials import load_or_create_sealing_keys
from backbone.eventstore import store_env
from backbone.personal import Personal, Vault
from backbone.readmodel import Projection, ReadModel
from backbone.settings import StoreSettings
from deploy.local._proc import free_ports
from services.notifier import views
from services.notifier.application import Notifier
from services.notifier.domainmodel import CUSTOMER, Email
from services.notifier.rendering import Branding, Renderer
from services.notifier.sender import Sender
from services.notifier.settings import NotifierSettings
from services.notifier.smtp import Mailer

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100, help="SEND_BATCH_SIZE")
    parser.add_argument("--connections", type=int, action="append", help="SMTP_CONNECTIONS (repeatable)")
    args = parser.parse_args()
    for connections in args.connections or [4]:
        rate, cpu, (received, copies), pipe_rate, pipe_cpu = asyncio.run(
            run(args.emails, args.batch, connections)
        )
        print(
            f"notifier sender: {args.emails} emails, batch {args.batch}, {connections} SMTP "
            f"connection(s): {rate:.0f} emails/s, {cpu * 1000 / args.emails:.2f} ms of notifier CPU "
            f"per email ({received} received by the SMTP server, {copies} of them twice); "
            f"{rate / pipe_rate:.0%} of the SMTP pipe, {pipe_rate:.0f} emails/s at "
            f"{pipe_cpu * 1000 / args.emails:.2f} ms of client CPU per email",
            flush=True,
        )


async def run(n: int, batch: int, connections: int) -> tuple[float, float, tuple[int, int], float, float]:
    root = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
    port = free_ports(1)[0]
    catcher = _start_mail_catcher(port, root / "mail")
    try:
        store = StoreSettings(kind="sqlite", data_dir=root)
        vault = Vault(store.vault_url("notifier"), "notifier")
        notifier = Notifier(env=store_env(store, "notifier"), vault=vault)
        read_model = ReadModel(store.views_url("notifier"), views.metadata)
        read_model.create()
        _queue(notifier, vault, n)
        settings = NotifierSettings(smtp_port=port, data_dir=root, smtp_connections=connections)
        private_key, _ = load_or_create_sealing_keys(root / "sealing.key")
        projection = Projection(notifier, read_model, "notifier.views", views.projector(vault))
        sender = Sender(
            notifier,
            read_model,
            projection,
            Mailer(settings),
            Renderer(settings.mail_from),
            private_key,
            batch_size=batch,
            connections=connections,
        )
        following = asyncio.create_task(projection.run())
        await projection.caught_up.wait()  # every email queued and in the read model
        started, cpu = time.perf_counter(), time.process_time()
        sending = asyncio.create_task(sender.run())
        while await asyncio.to_thread(_sent, read_model) < n:  # noqa: ASYNC110 - polls the store
            await asyncio.sleep(0.1)  # (each look costs the process a query: not too often)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        sending.cancel()
        projection.stop()
        await asyncio.gather(sending, following, return_exceptions=True)
        notifier.close()
        read_model.close()
        files = list((root / "mail").glob("*.eml"))
        copies = len(files) - len({_message_id(path) for path in files})
        pipe_rate, pipe_cpu = await _smtp_pipe(n, connections, Mailer(settings))
        return n / elapsed, cpu, (len(files), copies), pipe_rate, pipe_cpu
    finally:
        catcher.kill()
        catcher.wait()


def _queue(notifier: Notifier, vault: Vault, n: int) -> None:
    emails = []
    for i in range(n):
        subject = uuid.uuid4()
        emails.append(
            Email(
                source_event_id=uuid.uuid4(),
                template="booking_cancelled",
                tenant_id="bench",
                audience=CUSTOMER,
                recipient=vault.personal(subject, f"guest{i}@example.com"),
                language="en",
                data={
                    "name": Personal(subject, f"Guest {i}"),
                    "booking_code": f"C-{i:06d}",
                    "lines": [],
                    "amount_paid": "80.00",
                    "refund_due": "80.00",
                    "currency": "EUR",
                    "cancelled_by_kind": "customer",
                    "cancelled_by_id": str(subject),
                    "reason": None,
                },
                account_id=None,
                booking_id=subject,
                erase_recipient_when_done=False,
            )
        )
    for i in range(0, n, 500):
        notifier.save(*emails[i : i + 500])


async def _smtp_pipe(n: int, connections: int, mailer: Mailer) -> tuple[float, float]:
    """A bare client's rate and CPU time for `n` messages rendered beforehand."""
    renderer = Renderer(mailer.settings.mail_from)
    raw = renderer.render(
        kind="booking_cancelled",
        language="en",
        data={
            "name": "Guest",
            "booking_code": "C-000000",
            "lines": [],
            "amount_paid": "80.00",
            "refund_due": "80.00",
            "currency": "EUR",
            "cancelled_by_kind": "customer",
            "cancelled_by_id": "x",
            "reason": None,
        },
        branding=Branding(renderer.default_name),
        recipient="pipe@example.com",
        message_id="<pipe@booking-accounts.notifier>",
        date=datetime.now(UTC),
    ).raw
    left = [n]

    async def client() -> None:
        smtp = await mailer.connect()
        while left[0] > 0:
            left[0] -= 1
            await mailer.send(smtp, renderer.sender_address, "pipe@example.com", raw)
        await mailer.close(smtp)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(connections)))
    return n / (time.perf_counter() - started), time.process_time() - cpu


def _message_id(path: Path) -> str:
    with path.open("rb") as file:
        return str(BytesHeaderParser().parse(file).get("Message-ID"))


def _sent(read_model: ReadModel) -> int:
    with read_model.engine.connect() as conn:
        return views.count_by_status(conn)["sent"]


def _start_mail_catcher(port: int, directory: Path) -> subprocess.Popen[bytes]:
    code = (
        "import time\n"
        "from deploy.local.mailcatcher import MailCatcher\n"
        f"MailCatcher(port={port}, directory={str(directory)!r}).start()\n"
        "while True: time.sleep(3600)\n"
    )
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the mail catcher did not start")


if __name__ == "__main__":
    main()
