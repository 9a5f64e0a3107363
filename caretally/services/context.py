"""Who is acting, for whom, and from where: what every audited service call is given.

The organization always comes from the credential that made the ``Actor``; no service
takes an organization from a URL or a body when acting for someone.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from caretally.services.permissions import Permission, Role, allowed


@dataclass(frozen=True, slots=True)
class Actor:
    org_id: str
    actor: str  # user:12 | token:3 | cli:<os user>
    role: Role | None  # None for the operator at the command line (trusted: holds the database)
    name: str | None = None  # the user's email or the token's name
    request_id: str | None = None
    client_address: str | None = None
    user_id: int | None = None
    token_id: int | None = None
    session_id: int | None = None

    def may(self, permission: Permission) -> bool:
        return self.role is None or allowed(self.role, permission)


def cli_actor(org_id: str) -> Actor:
    """The person at the terminal: whoever can run the CLI on the database holds it all."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        who = "unknown"
    return Actor(org_id=org_id, actor=f"cli:{who}"[:120], role=None, name=None, client_address="local")
