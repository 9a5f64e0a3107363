"""Admin → Practice settings (``/admin/practice``): the 837P identity, locality, payer overlays.

Stored per organization by ``services.practice`` (checked by the practice-file loader
before saving). A refused form is shown again with the fault under its field (422).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from caretally.services import practice
from caretally.services.errors import InvalidInput
from caretally.web import pages
from caretally.web.routes.common import (
    PostedForm,
    ServiceDep,
    SettingsAdmin,
    form_text,
    page_response,
    redirect,
)
from caretally.web.templating import when

router = APIRouter(include_in_schema=False)
URL = "/admin/practice"
_FIELD_OF = {
    "invalid_identity": "identity_toml",
    "invalid_locality": "locality",
    "invalid_overlay": "payer_overlays",
}


def _render(
    request: Request,
    viewer: SettingsAdmin,
    service: ServiceDep,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    stored = practice.get_settings(service.engine, viewer.actor)
    name = None
    source = "nowhere: 837P and FHIR downloads are refused until an identity is saved"
    if stored.has_identity:
        name = practice.parse_identity(stored.identity_toml or "").name
        source = "these settings"
    elif service.settings.practice_file:
        from caretally.services.closing import practice_identity

        found = practice_identity(service.settings.practice_file, viewer.actor.org_id)
        if found is not None:
            name, source = found.name, "the server's practice file (CARETALLY_PRACTICE_FILE)"
    overlays = "\n".join(f"{k}={v}" for k, v in sorted(stored.payer_overlays.items()))
    shown = values or {
        "identity_toml": stored.identity_toml or "",
        "locality": stored.locality or "",
        "payer_overlays": overlays,
    }
    page = pages.practice_settings_page(
        identity_toml=shown["identity_toml"],
        locality=shown["locality"],
        payer_overlays=shown["payer_overlays"],
        identity_name=name,
        source=source,
        updated=f"{when(stored.updated_at)} by {stored.updated_by}" if stored.updated_at else None,
        errors=errors,
        action=URL,
    )
    layout = viewer.layout(
        "Practice settings", current="admin", breadcrumbs=(("Admin", "/admin"), ("Practice settings", None))
    )
    return page_response(request, "practice_settings", layout, page, status=422 if errors else 200)


@router.get(URL)
def practice_settings(request: Request, viewer: SettingsAdmin, service: ServiceDep) -> HTMLResponse:
    return _render(request, viewer, service)


@router.post(URL, response_model=None)
def save_practice_settings(
    request: Request, viewer: SettingsAdmin, service: ServiceDep, form: PostedForm
) -> HTMLResponse | RedirectResponse:
    values = {k: form_text(form, k) for k in ("identity_toml", "locality", "payer_overlays")}
    try:
        practice.save_settings(service.engine, viewer.actor, **values)
    except InvalidInput as exc:
        field = _FIELD_OF.get(exc.code or "", "identity_toml")
        return _render(request, viewer, service, values, {field: exc.message})
    return redirect(request, URL, flash="Practice settings saved.")
