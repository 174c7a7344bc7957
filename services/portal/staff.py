"""The staff back office, under /staff/t/{tenant} (filled in below)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/staff/t/{tenant}", tags=["staff pages"], include_in_schema=False)
