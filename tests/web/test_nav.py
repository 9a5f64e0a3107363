"""The main navigation: exact page names, and links only for pages the role may open."""

from __future__ import annotations

import pytest

from caretally.web.nav import PAGES, home_for, may_view, navigation
from tests.web import roles

NAMES = ["Worklist", "Patients", "Alerts", "Month close", "Leakage", "Compliance", "Audit", "Admin"]


def test_page_names_are_the_contract() -> None:
    assert [p.label for p in PAGES] == NAMES


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("admin", NAMES),
        ("care_staff", ["Worklist", "Patients", "Alerts"]),
        ("biller", ["Month close", "Leakage", "Compliance"]),
        ("auditor", ["Worklist", "Patients", "Alerts", "Month close", "Leakage", "Compliance", "Audit"]),
        ("integration", []),
        ("no-such-role", []),
    ],
)
def test_each_role_sees_the_pages_its_permissions_open(role: str, expected: list[str]) -> None:
    links = navigation(role, roles.allowed)
    assert [link.label for link in links] == expected
    for page in PAGES:
        assert may_view(role, page.key, roles.allowed) is (page.label in expected)


def test_a_nurse_cannot_reach_month_close() -> None:
    assert not may_view("care_staff", "month_close", roles.allowed)
    assert "Month close" not in [link.label for link in navigation("care_staff", roles.allowed)]


def test_the_current_page_is_marked() -> None:
    links = navigation("admin", roles.allowed, current="leakage")
    assert [link.label for link in links if link.current] == ["Leakage"]


def test_an_unknown_page_is_an_error_not_a_no() -> None:
    with pytest.raises(KeyError, match="no page"):
        may_view("admin", "reports", roles.allowed)


def test_home_is_the_first_page_a_role_may_open() -> None:
    assert home_for("biller", roles.allowed) == "/month-close"
    assert home_for("integration", roles.allowed) is None


def test_the_page_grants_agree_with_the_service_matrix() -> None:
    """Once issue 11's permissions are on this branch, the test table must equal them."""
    service = roles.service_check()
    if service is None:
        pytest.skip("caretally.services.permissions is not on this branch yet (issue 11)")
    for role, grants in roles.GRANTS.items():
        for page in PAGES:
            assert service(role, page.permission) is (page.permission in grants), (role, page.key)
