"""Admin and access log pages: users, tokens (shown once), practitioner links, the audit search."""

from __future__ import annotations

import re
from html import unescape

from caretally.services import accounts, audit
from caretally.services.context import cli_actor
from tests.web.webapp import ORG, PASSWORD, CareWorld, WebWorld, csrf_of, email_of


def _user_id(world: WebWorld, email: str) -> int:
    return next(u.user_id for u in accounts.list_users(world.engine, ORG) if u.email == email)


def test_admin_adds_a_user_who_can_then_sign_in(web: WebWorld) -> None:
    admin = web.signed_in("admin")
    page = admin.get("/admin")
    assert page.status_code == 200 and ">Add user</button>" in page.text
    token = csrf_of(page.text)
    weak = admin.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "email": "new@clinic.example",
            "display_name": "New",
            "role": "auditor",
            "password": "short",
        },
    )
    assert weak.status_code == 422 and 'aria-invalid="true"' in weak.text and "15 characters" in weak.text
    assert _selected(weak.text, "Role") == ["auditor"]  # the choice survives the refusal
    added = admin.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "email": "new@clinic.example",
            "display_name": "New Nurse",
            "role": "care_staff",
            "password": PASSWORD,
        },
    )
    assert added.status_code == 303
    fresh = web.client()
    form = fresh.get("/signin")
    signed = fresh.post(
        "/signin",
        data={"email": "new@clinic.example", "password": PASSWORD, "csrf_token": csrf_of(form.text)},
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/worklist"


def test_admin_changes_a_role_and_deactivates_which_signs_the_user_out(web: WebWorld) -> None:
    admin = web.signed_in("admin")
    auditor = web.signed_in("auditor")
    assert auditor.get("/audit").status_code == 200
    token = csrf_of(admin.get("/admin").text)
    uid = _user_id(web, email_of("auditor"))
    changed = admin.post(f"/admin/users/{uid}/role", data={"csrf_token": token, "role": "biller"})
    assert changed.status_code == 303
    assert auditor.get("/audit").status_code == 403  # the new role applies at the next request
    gone = admin.post(f"/admin/users/{uid}/deactivate", data={"csrf_token": token})
    assert gone.status_code == 303
    assert auditor.get("/audit").status_code == 303  # signed out: back to sign-in
    me = _user_id(web, email_of("admin"))
    refused = admin.post(f"/admin/users/{me}/deactivate", data={"csrf_token": token})
    assert refused.status_code == 409 and "your own account" in refused.text


def test_a_token_is_shown_once_and_can_be_revoked(web: WebWorld) -> None:
    admin = web.signed_in("admin")
    token = csrf_of(admin.get("/admin").text)
    made = admin.post(
        "/admin/tokens", data={"csrf_token": token, "name": "Tenovi webhook", "role": "integration"}
    )
    assert made.status_code == 200 and "shown only once" in made.text
    secret = re.search(r'id="new-token" class="mono" value="([^"]+)"', made.text)
    assert secret is not None and secret.group(1).startswith(accounts.TOKEN_PREFIX)
    api = web.client()
    me = {"Authorization": f"Bearer {unescape(secret.group(1))}"}
    assert api.get("/api/v1/auth/me", headers=me).status_code == 200
    again = admin.get("/admin").text
    assert secret.group(1) not in again and "Tenovi webhook" in again
    token_id = re.search(r'action="/admin/tokens/([0-9]+)/revoke"', again)
    assert token_id is not None
    assert (
        admin.post(f"/admin/tokens/{token_id.group(1)}/revoke", data={"csrf_token": token}).status_code == 303
    )
    assert f'action="/admin/tokens/{token_id.group(1)}/revoke"' not in admin.get("/admin").text
    assert api.get("/api/v1/auth/me", headers=me).status_code == 401


def test_only_admins_reach_admin(web: WebWorld) -> None:
    for role in ("care_staff", "biller", "auditor"):
        client = web.signed_in(role)
        answer = client.get("/admin")
        assert answer.status_code == 403, role
        assert ">Admin</a>" not in answer.text


def test_the_access_log_searches_by_patient_user_and_date(web: WebWorld) -> None:
    auditor = web.signed_in("auditor")
    audit.record(web.engine, cli_actor(ORG), "patient.read", "patients/P-1", patient_ids=["P-1"])
    audit.record(web.engine, cli_actor(ORG), "patient.read", "patients/P-2", patient_ids=["P-2"])
    found = auditor.get("/audit", params={"patient": "P-1"}).text
    assert "patients/P-1" in found and "patients/P-2" not in found
    mine = auditor.get("/audit", params={"user": email_of("auditor")}).text
    assert "audit.read" in mine and "patients/P-1" not in mine
    assert "No events match." in auditor.get("/audit", params={"from": "2001-01-01", "to": "2001-01-02"}).text
    assert web.signed_in("care_staff").get("/audit").status_code == 403


def _selected(html: str, label: str) -> list[str]:
    """The values selected in the select labelled ``label``."""
    fid = re.search(rf'<label for="([^"]+)"[^>]*>{re.escape(label)}</label>', html)
    assert fid, f"no control labelled {label!r}"
    body = re.search(rf'<select id="{fid.group(1)}"[^>]*>(.*?)</select>', html, re.S)
    assert body, f"{label!r} is not a select"
    return re.findall(r'<option value="([^"]*)" selected', body.group(1))


def test_admin_forms_start_on_the_least_privilege_and_show_who_logs_time_as_whom(
    care_world: CareWorld,
) -> None:
    admin = care_world.signed_in("admin")
    html = admin.get("/admin").text
    assert _selected(html, "Role") == ["care_staff"]
    assert _selected(html, "Token role") == ["integration"]
    # no Deactivate for the signed-in admin's own account; the others have one
    assert f'Deactivate<span class="visually-hidden"> {email_of("admin")}</span>' not in html
    assert f'Deactivate<span class="visually-hidden"> {email_of("biller")}</span>' in html
    # the users table says which practitioner each user logs time as
    assert ">Practitioner</th>" in html
    rows = {
        unescape(re.sub(r"<[^>]+>", " ", r)).split()[1]: unescape(re.sub(r"<[^>]+>", " ", r))
        for r in re.findall(r"<tr>\s*<th scope=\"row\">(.*?)</tr>", html, re.S)
        if "@" in r
    }
    nurse = next(text for text in rows.values() if email_of("care_staff") in text)
    assert care_world.nurse_practitioner in nurse
    admin_row = next(text for text in rows.values() if email_of("admin") in text)
    assert "Not linked (cannot log time)" in admin_row
    biller = next(text for text in rows.values() if email_of("biller") in text)
    assert "Not linked" not in biller  # a biller never logs time: nothing to link
