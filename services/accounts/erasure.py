"""Making sure a decided redaction destroys the subject's key, whatever happens meanwhile.

`Accounts.redact` records `Account.Redacted` and then erases the key at once. A process killed
between the two leaves a recorded decision and a live key; this follower reads every
`Redacted` event of the log and erases the key (again: erasing is idempotent), and moves its
position only after that, so the key is gone by the time it has caught up, retrying as long as
the vault refuses.
"""

from __future__ import annotations

from collections.abc import Sequence

from backbone.eventstore import ServiceApplication
from backbone.follower import Follower, Recorded
from backbone.logging import get_logger
from services.accounts.domainmodel import Account

log = get_logger(__name__)


class Eraser(Follower):
    name = "accounts.eraser"

    def __init__(self, app: ServiceApplication, batch_size: int = 500):
        super().__init__(app, batch_size)

    async def handle(self, batch: Sequence[Recorded]) -> None:
        await self.blocking(self.apply, batch)

    def apply(self, batch: Sequence[Recorded]) -> None:
        for recorded in batch:
            if isinstance(recorded.event, Account.Redacted):
                self.app.erase_subject(recorded.event.originator_id)
                log.info("subject erased", subject_id=str(recorded.event.originator_id))
        self.commit_position(batch[-1].position)
