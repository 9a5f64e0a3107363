"""The role check the web pages are built with in these tests.

The service's ``caretally.services.permissions.allowed`` is the one matrix (issue 11).
Until that branch is merged here, ``GRANTS`` repeats the page permissions it grants, so
the web's tests can run; once it is merged the real check is used and ``GRANTS`` is only
compared against it (tests/web/test_nav.py), so the two cannot drift apart unseen.
"""

from __future__ import annotations

from collections.abc import Callable

#: Page permissions per role, as issue 11's matrix grants them (docs/api.md).
GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {
            "worklist:read",
            "patients:read",
            "alerts:read",
            "runs:read",
            "leakage:read",
            "audit:read",
            "admin:users",
            "compliance:read",
        }
    ),
    "care_staff": frozenset({"worklist:read", "patients:read", "alerts:read"}),
    "biller": frozenset({"runs:read", "leakage:read", "compliance:read"}),
    "auditor": frozenset(
        {"worklist:read", "patients:read", "alerts:read", "runs:read", "leakage:read", "audit:read"}
        | {"compliance:read"}
    ),
    "integration": frozenset(),
}


def _from_grants(role: str, permission: str) -> bool:
    return permission in GRANTS.get(role, frozenset())


def service_check() -> Callable[[str, str], bool] | None:
    try:
        from caretally.services.permissions import allowed
    except ImportError:  # issue 11's service is not on this branch yet
        return None
    return allowed


allowed: Callable[[str, str], bool] = service_check() or _from_grants
