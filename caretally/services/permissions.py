"""Roles as data: what each role may do, and nothing else decides it.

The API declares one ``Permission`` per route (``caretally.api.deps.require``); the web
app will show a link only when ``allowed(role, permission)``. ``docs/api.md`` carries the
table that ``matrix_markdown()`` prints (a test holds them equal), so the documented
matrix is the enforced one.

Run ``python -m caretally.services.permissions`` to print the table.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    PATIENTS_READ = "patients:read"  # patients, enrollments, devices, readings, time entries
    EXPLAIN_READ = "explain:read"  # a patient-month's decisions and evidence
    WORKLIST_READ = "worklist:read"
    ALERTS_READ = "alerts:read"
    ALERTS_WRITE = "alerts:write"
    READINGS_WRITE = "readings:write"  # JSON readings, FHIR Observations, device webhooks
    TIME_WRITE = "time:write"  # log and amend time entries
    IMPORTS_WRITE = "imports:write"  # bundles
    IMPORTS_READ = "imports:read"  # the list of import batches (counts only)
    RUNS_READ = "runs:read"  # runs, their summaries and month-run jobs
    RUNS_WRITE = "runs:write"  # start a month run
    RUNS_LOCK = "runs:lock"
    CLAIMS_EXPORT = "claims:export"
    LEAKAGE_READ = "leakage:read"
    AUDIT_READ = "audit:read"
    USERS_READ = "users:read"  # who has access: users and tokens, never secrets
    ADMIN_USERS = "admin:users"  # add, change and deactivate users
    ADMIN_TOKENS = "admin:tokens"  # create and revoke API tokens
    ADMIN_SETTINGS = "admin:settings"
    COMPLIANCE_READ = "compliance:read"  # the OIG measure scan (names patients and claim lines)


class Role(StrEnum):
    ADMIN = "admin"
    CARE_STAFF = "care_staff"
    BILLER = "biller"
    AUDITOR = "auditor"
    INTEGRATION = "integration"


P = Permission

#: Everything a role may do that is not a write: the auditor's whole grant.
_READS = frozenset(
    {
        P.PATIENTS_READ,
        P.EXPLAIN_READ,
        P.WORKLIST_READ,
        P.ALERTS_READ,
        P.IMPORTS_READ,
        P.RUNS_READ,
        P.LEAKAGE_READ,
        P.AUDIT_READ,
        P.USERS_READ,
        P.COMPLIANCE_READ,
    }
)

MATRIX: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.CARE_STAFF: frozenset(
        {
            P.PATIENTS_READ,
            P.EXPLAIN_READ,
            P.WORKLIST_READ,
            P.ALERTS_READ,
            P.ALERTS_WRITE,
            P.READINGS_WRITE,
            P.TIME_WRITE,
        }
    ),
    Role.BILLER: frozenset(
        {P.EXPLAIN_READ, P.RUNS_READ, P.RUNS_WRITE, P.RUNS_LOCK, P.CLAIMS_EXPORT, P.LEAKAGE_READ}
        | {P.COMPLIANCE_READ}
    ),
    Role.AUDITOR: _READS,
    # Ingest only: what it may read is the report of its own write, which the write returns.
    Role.INTEGRATION: frozenset({P.IMPORTS_WRITE, P.READINGS_WRITE, P.TIME_WRITE}),
}

#: One line per permission for the documentation table.
DESCRIPTIONS: dict[Permission, str] = {
    P.PATIENTS_READ: "patients, enrollments, devices, consent, readings, time entries",
    P.EXPLAIN_READ: "a patient-month's decisions with reasons and evidence",
    P.WORKLIST_READ: "the worklist",
    P.ALERTS_READ: "alerts",
    P.ALERTS_WRITE: "acknowledge alerts, set thresholds",
    P.READINGS_WRITE: "post readings (JSON, FHIR, device webhooks)",
    P.TIME_WRITE: "log and amend time entries",
    P.IMPORTS_WRITE: "import bundles",
    P.IMPORTS_READ: "list import batches (counts only)",
    P.RUNS_READ: "month runs, their summaries and jobs",
    P.RUNS_WRITE: "start a month run",
    P.RUNS_LOCK: "lock a month",
    P.CLAIMS_EXPORT: "download claims (CSV, JSON, 837P, FHIR)",
    P.LEAKAGE_READ: "leakage of a month",
    P.AUDIT_READ: "the audit trail",
    P.USERS_READ: "list users and API tokens (never a secret)",
    P.ADMIN_USERS: "add users, change roles, deactivate",
    P.ADMIN_TOKENS: "create and revoke API tokens",
    P.ADMIN_SETTINGS: "practice settings",
    P.COMPLIANCE_READ: "the OIG measure scan, with the patients and claim lines behind each finding",
}


def allowed(role: Role | str, permission: Permission | str) -> bool:
    """True when ``role`` grants ``permission``; an unknown role or permission grants nothing.

    Strings are accepted so callers that name permissions as text (the web app's page
    table) ask the same question as the API's dependencies.
    """
    try:
        return Permission(permission) in MATRIX[Role(role)]
    except ValueError:
        return False


def permissions_of(role: Role | str) -> frozenset[Permission]:
    try:
        return MATRIX[Role(role)]
    except ValueError:
        return frozenset()


def matrix_markdown() -> str:
    """The role matrix as a Markdown table (the one in docs/api.md)."""
    roles = list(Role)
    lines = [
        "| permission | what it covers | " + " | ".join(r.value for r in roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for perm in Permission:
        marks = " | ".join("✓" if perm in MATRIX[r] else "—" for r in roles)
        lines.append(f"| `{perm.value}` | {DESCRIPTIONS[perm]} | {marks} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(matrix_markdown(), end="")
