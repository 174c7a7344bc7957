"""The accounts service's application: one event store, the use cases of customers
(`customers.py`) and of staff (`backoffice.py`) on top of its foundations (`core.py`)."""

from __future__ import annotations

from services.accounts.backoffice import StaffCases
from services.accounts.core import AccountsConfig, LoginsDisabled

__all__ = ["Accounts", "AccountsConfig", "LoginsDisabled"]


class Accounts(StaffCases):
    """Customer accounts, the settings of each tenant, and its staff members."""
