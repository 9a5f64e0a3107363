"""The served web app's foundation: sign-in, cookie sessions, CSRF, roles, expiry, error pages.

Each test runs against ``create_app`` on SQLite and on PostgreSQL, signing in through the
real form; no service is replaced.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text, update

from caretally.services import audit
from caretally.services.context import cli_actor
from caretally.services.permissions import Role, allowed
from caretally.store import schema
from caretally.web.app import is_web_path
from caretally.web.nav import PAGES
from caretally.web.routes.common import SESSION_COOKIE
from tests.web.webapp import PASSWORD, WebWorld, build_web_world, csrf_of, email_of


def _cookie_header(answer: object, name: str) -> str:
    headers = answer.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    found = [h for h in headers if h.startswith(f"{name}=")]
    assert found, f"no {name} cookie set; got {headers}"
    return found[0]


def test_sign_in_page_has_the_named_fields_and_a_token(web: WebWorld) -> None:
    client = web.client()
    answer = client.get("/signin")
    assert answer.status_code == 200
    html = answer.text
    assert 'for="f-email">Email<' in html and 'for="f-password">Password<' in html
    assert ">Sign in</button>" in html
    assert csrf_of(html)
    assert answer.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_signing_in_sets_an_httponly_lax_cookie_and_lands_on_the_roles_first_page(web: WebWorld) -> None:
    client = web.client()
    answer = web.sign_in(client, "auditor")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/worklist"
    cookie = _cookie_header(answer, SESSION_COOKIE).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    # over https the cookie is Secure
    secure = web.client(base_url="https://testserver")
    cookie = _cookie_header(web.sign_in(secure, "auditor"), SESSION_COOKIE).lower()
    assert "secure" in cookie
    page = client.get("/audit")
    assert page.status_code == 200
    assert "Test auditor" in page.text and "Riverside Clinic" in page.text


def test_a_wrong_password_is_one_line_and_no_session(web: WebWorld) -> None:
    client = web.client()
    answer = web.sign_in(client, "care_staff", password="not the password at all")
    assert answer.status_code == 401
    assert "do not match" in answer.text and "Traceback" not in answer.text
    assert SESSION_COOKIE not in client.cookies


def test_sign_in_without_its_token_is_refused(web: WebWorld) -> None:
    client = web.client()
    client.get("/signin")
    answer = client.post("/signin", data={"email": email_of("admin"), "password": PASSWORD})
    assert answer.status_code == 403
    assert "security token" in answer.text
    assert SESSION_COOKIE not in client.cookies
    # a token from another browser (another nonce) does not pass either
    other = web.client()
    token = csrf_of(other.get("/signin").text)
    forged = client.post(
        "/signin", data={"email": email_of("admin"), "password": PASSWORD, "csrf_token": token}
    )
    assert forged.status_code == 403


def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(web: WebWorld) -> None:
    client = web.client()
    answer = client.get("/audit?patient=p1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Faudit%3Fpatient%3Dp1"
    form = client.get(answer.headers["location"])
    assert 'name="next" value="/audit?patient=p1"' in form.text
    signed = client.post(
        "/signin",
        data={
            "email": email_of("admin"),
            "password": PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": "/audit?patient=p1",
        },
    )
    assert signed.headers["location"] == "/audit?patient=p1"
    # another site is never a place to go back to
    evil = web.client()
    form = evil.get("/signin")
    answer = evil.post(
        "/signin",
        data={
            "email": email_of("admin"),
            "password": PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": "//evil.example/x",
        },
    )
    assert answer.headers["location"] == "/worklist"


def test_nav_shows_only_allowed_links_and_a_refused_page_is_a_403_page_and_audited(web: WebWorld) -> None:
    nurse = web.signed_in("care_staff")
    answer = nurse.get("/audit")
    assert answer.status_code == 403
    html = answer.text
    assert "Not allowed" in html and "Traceback" not in html
    nav = html.split('aria-label="Main"', 1)[1].split("</nav>", 1)[0]
    for page in PAGES:
        shown = f">{page.label}</a>" in nav
        assert shown == allowed("care_staff", page.permission), page.label
    events, _ = audit.list_events(web.engine, cli_actor("clinic"), audit.EventFilter(action="access.denied"))
    assert any(e.resource == "/audit" and e.outcome == "denied" for e in events)


def test_every_post_needs_the_sessions_csrf_token(web: WebWorld) -> None:
    client = web.signed_in("admin")
    page = client.get("/audit")
    token = csrf_of(page.text)
    refused = client.post("/signout", data={})
    assert refused.status_code == 403 and "security token" in refused.text
    wrong = client.post("/signout", data={"csrf_token": "0" * 64})
    assert wrong.status_code == 403
    assert client.get("/audit").status_code == 200  # still signed in: nothing was done
    out = client.post("/signout", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert client.get("/audit").status_code == 303  # the session is over


def test_a_session_idle_past_the_limit_is_sent_to_sign_in_with_expired(web: WebWorld) -> None:
    client = web.signed_in("auditor")
    assert client.get("/audit").status_code == 200
    # The session's last activity is moved back past the 15-minute limit in the database.
    with web.engine.begin() as conn:
        conn.execute(
            update(schema.auth_sessions).values(last_seen_at=datetime.now(UTC) - timedelta(minutes=16))
        )
    answer = client.get("/audit")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/signin?expired=1")
    assert "15 minutes without activity" in client.get("/signin?expired=1").text


def test_a_short_idle_setting_is_the_layouts_and_the_servers(sqlite_url: str) -> None:
    world = build_web_world(sqlite_url, session_idle_minutes=2)
    try:
        client = world.signed_in("auditor")
        html = client.get("/audit").text
        assert 'data-idle-seconds="120"' in html and 'data-sign-in-url="/signin"' in html
        with world.engine.begin() as conn:
            conn.execute(
                update(schema.auth_sessions).values(last_seen_at=datetime.now(UTC) - timedelta(seconds=150))
            )
        assert client.get("/audit").headers["location"].startswith("/signin?expired=1")
    finally:
        world.close()


def test_error_pages_are_html_without_traceback_and_the_api_keeps_problem_json(web: WebWorld) -> None:
    client = web.signed_in("admin")
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "Page not found" in missing.text and 'aria-label="Main"' in missing.text
    bad = client.get("/audit?from=yesterday")
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text
    api = client.get("/api/v1/no-such-route")
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"
    assert is_web_path("/worklist") and not is_web_path("/api/v1/patients") and not is_web_path("/healthz")


def test_an_unexpected_failure_is_a_500_page_with_the_request_id(web: WebWorld) -> None:
    """A table the page reads has gone: a real failure no route handles."""
    client = web.signed_in("admin")
    with web.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_event_patients RENAME TO audit_event_patients_gone"))
    answer = web.client(raise_server_exceptions=False)
    answer.cookies.update(client.cookies)
    failed = answer.get("/audit")
    assert failed.status_code == 500
    assert failed.headers["content-type"].startswith("text/html")
    assert "request id" in failed.text and "Traceback" not in failed.text and "sqlalchemy" not in failed.text


def test_static_files_are_served(web: WebWorld) -> None:
    answer = web.client().get("/static/app.css")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/css")


def test_the_front_door_sends_each_role_to_its_first_page(web: WebWorld) -> None:
    assert web.client().get("/").headers["location"] == "/signin"
    assert web.signed_in("biller").get("/").headers["location"] == "/month-close"
    assert web.signed_in("admin").get("/").headers["location"] == "/worklist"


def test_an_integration_account_has_no_pages(web: WebWorld) -> None:
    client = web.client()
    answer = web.sign_in(client, Role.INTEGRATION.value)
    assert answer.status_code == 403 and "API use only" in answer.text
    with web.engine.connect() as conn:
        open_sessions = conn.execute(
            select(schema.auth_sessions.c.session_id).where(schema.auth_sessions.c.revoked_at.is_(None))
        ).all()
    assert open_sessions == []
