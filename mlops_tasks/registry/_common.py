"""What every part of the registry shares: the production alias's name, the retry budgets, the
clock and digest it stamps documents with, and the rule for a change's reason."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from mlops_tasks.errors import UsageError

PRODUCTION = "production"
_RESTORE = (
    "restore the object from a backup (docs/operations.md); `mlops verify {model}` lists "
    "every problem of this model"
)
_CAS_ATTEMPTS = 50
_AUDIT_ATTEMPTS = 200


#: Audit actions that move the production alias (replayed to check and repair it).
_ALIAS_MOVES = ("promote", "rollback", "repair_alias", "withdraw")


#: The fewest characters (blanks around it do not count) of the reason that every change of
#: production, and a quarantined batch's release, must give: what the Models view asks too.
MIN_REASON = 3


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_reason(reason: Any, change: str) -> str:
    """The reason given for `change` without the blanks around it; UsageError when there is
    none or it is shorter than `MIN_REASON` characters. The audit trail keeps the reason, and
    an empty one tells whoever reads it nothing."""
    text = reason.strip() if isinstance(reason, str) else ""
    if len(text) < MIN_REASON:
        raise UsageError(
            f"{change} needs a reason of at least {MIN_REASON} characters, not counting "
            f"blanks (it is kept in the audit trail); got {reason!r}",
            reason=reason,
        )
    return text
