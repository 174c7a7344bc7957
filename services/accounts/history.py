"""An aggregate's history as staff read it: who did what, when, read from the event store
itself (not from a read model), so it is the record. Personal values show as `[erased]` once
their subject is erased; secrets (password and token hashes, sealed links) never show."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backbone.context import Cause
from backbone.personal import Personal

# What staff see of each event's fields; anything not listed (hashes, sealed links) stays out.
VISIBLE: dict[str, tuple[str, ...]] = {
    "Claimed": ("claimed_by", "email", "name", "phone", "address", "language"),
    "ClaimRenewed": (),
    "VerificationLinkReissued": ("link",),
    "MagicLinkIssued": ("link",),
    "PasswordResetLinkIssued": ("link",),
    "EmailChangeRequested": ("new_email", "link"),
    "EmailCorrected": ("email", "link"),
    "EmailVerified": ("email", "first_time"),
    "PasswordSet": ("via",),
    "MagicLinkUsed": (),
    "SessionsRevoked": ("reason",),
    "ProfileChanged": ("changes", "source"),
    "Archived": (),
    "Activated": (),
    "Redacted": (),
    "Initialised": ("tenant_id",),
    "Changed": ("changes",),
}


def entry(event: Any) -> dict[str, Any]:
    kind = type(event).__name__
    details = {name: shown(getattr(event, name, None)) for name in VISIBLE.get(kind, ())}
    return {
        "at": event.timestamp,
        "event": kind,
        "actor": Cause.from_meta(getattr(event, "meta", None)).actor,
        "version": event.originator_version,
        "details": {k: v for k, v in details.items() if v is not None},
    }


def shown(value: Any) -> Any:
    if isinstance(value, Personal):
        return str(value)  # "[erased]" once the subject's key is gone
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown(v) for v in value]
    if hasattr(value, "purpose") and hasattr(value, "expires_at"):  # an emailed link
        return {"purpose": value.purpose, "expires_at": value.expires_at.isoformat()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value
