"""The web app's page routes, one module per area; ``ROUTERS`` is what ``mount_web`` includes.

How to write one: docs/web.md, section "Writing a page route".
"""

from __future__ import annotations

from fastapi import APIRouter

from caretally.web.routes import admin, alerts, audit, auth, billing, care, packets, practice
from caretally.web.routes import compliance as compliance_page

ROUTERS: tuple[APIRouter, ...] = (auth.router, care.router, alerts.router, audit.router, admin.router)
ROUTERS += (billing.router, packets.router, practice.router)
ROUTERS += (compliance_page.router,)
