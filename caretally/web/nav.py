"""The main navigation: page names (a contract) and the permission each page needs.

The names are what browser and acceptance tests look for, exactly. Who may open a page
is not decided here: each page names the service permission that guards it (the strings
of ``caretally.services.permissions.Permission``), and the caller passes the role check
(``permissions.allowed``). The route that answers 403 and the layout that hides the link
ask the same question, so a link is never shown for a page that would refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from caretally.web.viewmodels import NavLink

#: ``allowed(role, permission)``: the service's role check.
RoleCheck = Callable[[str, str], bool]


@dataclass(frozen=True)
class Page:
    key: str
    label: str
    href: str
    permission: str  # a ``caretally.services.permissions.Permission`` value


PAGES: tuple[Page, ...] = (
    Page("worklist", "Worklist", "/worklist", "worklist:read"),
    Page("patients", "Patients", "/patients", "patients:read"),
    Page("alerts", "Alerts", "/alerts", "alerts:read"),
    Page("month_close", "Month close", "/month-close", "runs:read"),
    Page("leakage", "Leakage", "/leakage", "leakage:read"),
    Page("compliance", "Compliance", "/compliance", "compliance:read"),
    Page("audit", "Audit", "/audit", "audit:read"),
    Page("admin", "Admin", "/admin", "admin:users"),
)
BY_KEY = {p.key: p for p in PAGES}

ROLE_LABELS: dict[str, str] = {
    "admin": "Administrator",
    "care_staff": "Care staff",
    "biller": "Biller",
    "auditor": "Auditor",
    "integration": "Integration",
}


def may_view(role: str, page: str, allowed: RoleCheck) -> bool:
    """Whether ``role`` may open ``page``; a page that does not exist is an error."""
    try:
        needed = BY_KEY[page].permission
    except KeyError:
        raise KeyError(f"no page {page!r}; pages are {', '.join(BY_KEY)}") from None
    return allowed(role, needed)


def navigation(role: str, allowed: RoleCheck, current: str | None = None) -> tuple[NavLink, ...]:
    """The links ``role`` may follow, in the fixed order, with the current page marked."""
    return tuple(NavLink(p.label, p.href, p.key == current) for p in PAGES if allowed(role, p.permission))


def home_for(role: str, allowed: RoleCheck) -> str | None:
    """Where a role lands after signing in: its first page; ``None`` when it has no page."""
    links = navigation(role, allowed)
    return links[0].href if links else None
