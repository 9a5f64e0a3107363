"""Every web route declares exactly one access rule, and it is the one in this table.

The web twin of ``tests/api/routes_table.py``: a page added without an entry here (and
so without a decided rule) fails, and so does an entry whose page no longer exists.
"""

from __future__ import annotations

from caretally.api.deps import declared_access
from caretally.services.permissions import Permission as P
from caretally.web.app import is_web_path
from caretally.web.nav import PAGES
from tests.web.webapp import WebWorld

PUBLIC, AUTHENTICATED = "public", "authenticated"

WEB_ROUTES: dict[tuple[str, str], str | P] = {
    ("GET", "/"): PUBLIC,
    ("GET", "/signin"): PUBLIC,
    ("POST", "/signin"): PUBLIC,  # checks its own pre-session CSRF token
    ("POST", "/signout"): AUTHENTICATED,
    ("GET", "/audit"): P.AUDIT_READ,
    ("GET", "/worklist"): P.WORKLIST_READ,
    ("GET", "/patients"): P.PATIENTS_READ,
    ("GET", "/patients/{patient_id}"): P.EXPLAIN_READ,
    ("GET", "/patients/{patient_id}/time"): P.TIME_WRITE,
    ("POST", "/patients/{patient_id}/time"): P.TIME_WRITE,
    ("POST", "/patients/{patient_id}/timer"): P.TIME_WRITE,
    ("GET", "/time-entries/{entry_id}"): P.TIME_WRITE,
    ("POST", "/time-entries/{entry_id}"): P.TIME_WRITE,
    ("GET", "/alerts"): P.ALERTS_READ,
    ("POST", "/alerts/{alert_id}/acknowledge"): P.ALERTS_WRITE,
    ("POST", "/alerts/thresholds"): P.ALERTS_WRITE,
    ("POST", "/alerts/thresholds/{threshold_id}/remove"): P.ALERTS_WRITE,
    ("GET", "/admin"): P.ADMIN_USERS,
    ("POST", "/admin/users"): P.ADMIN_USERS,
    ("POST", "/admin/users/{user_id}/role"): P.ADMIN_USERS,
    ("POST", "/admin/users/{user_id}/deactivate"): P.ADMIN_USERS,
    ("POST", "/admin/practitioner-links"): P.ADMIN_USERS,
    ("POST", "/admin/tokens"): P.ADMIN_TOKENS,
    ("POST", "/admin/tokens/{token_id}/revoke"): P.ADMIN_TOKENS,
    # Billing (h-webbill): month close, leakage, packets, practice settings.
    ("GET", "/month-close"): P.RUNS_READ,
    ("GET", "/month-close/jobs/{job_id}"): P.RUNS_READ,
    ("POST", "/month-close/{month}/runs"): P.RUNS_WRITE,
    ("POST", "/month-close/{month}/lock"): P.RUNS_LOCK,
    ("GET", "/month-close/{month}/claims"): P.CLAIMS_EXPORT,
    ("GET", "/month-close/{month}/explanations"): P.CLAIMS_EXPORT,
    ("GET", "/leakage"): P.LEAKAGE_READ,
    ("GET", "/claims/{run_id}/lines/{number}"): P.RUNS_READ,
    ("GET", "/claims/{run_id}/lines/{number}/packet.json"): P.RUNS_READ,
    ("GET", "/claims/{run_id}/packet"): P.RUNS_READ,
    ("GET", "/admin/practice"): P.ADMIN_SETTINGS,
    ("POST", "/admin/practice"): P.ADMIN_SETTINGS,
    ("GET", "/compliance"): P.COMPLIANCE_READ,
    ("GET", "/compliance/scan.json"): P.COMPLIANCE_READ,
}


def _rule(rules: list) -> str | P:  # type: ignore[type-arg]
    (only,) = rules
    return only.permission if only.kind == "permission" else only.kind


def test_every_web_route_declares_the_rule_in_the_table(web: WebWorld) -> None:
    declared = {k: v for k, v in declared_access(web.app).items() if is_web_path(k[1])}
    assert set(declared) == set(WEB_ROUTES), (
        f"web routes without a rule here: {sorted(set(declared) - set(WEB_ROUTES))}; "
        f"stale entries: {sorted(set(WEB_ROUTES) - set(declared))}"
    )
    for key, rules in declared.items():
        assert len(rules) == 1, f"{key} declares {len(rules)} access rules"
        assert _rule(rules) == WEB_ROUTES[key], (
            f"{key}: declares {_rule(rules)}, table says {WEB_ROUTES[key]}"
        )


def test_each_nav_page_that_exists_is_guarded_by_the_permission_the_nav_names() -> None:
    for page in PAGES:
        rule = WEB_ROUTES.get(("GET", page.href))
        if rule is not None:
            assert rule == P(page.permission), page.label
