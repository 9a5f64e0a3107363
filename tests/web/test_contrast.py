"""Colours in the stylesheet meet WCAG AA: text 4.5:1, control borders and focus 3:1."""

from __future__ import annotations

import re

import pytest

from caretally.web import charts
from caretally.web.templating import STATIC_DIR

CSS = (STATIC_DIR / "app.css").read_text(encoding="utf-8")
VARS = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})\s*;", CSS))


def luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def ratio(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_ratio_is_the_wcag_formula() -> None:
    assert round(ratio("#000000", "#ffffff"), 1) == 21.0
    assert round(ratio("#777777", "#ffffff"), 2) == 4.48


TEXT_PAIRS = [
    ("ink", "paper"),
    ("ink", "page"),
    ("ink", "zebra"),
    ("ink", "head-bg"),
    ("muted", "paper"),
    ("muted", "page"),
    ("muted", "zebra"),
    ("link", "paper"),
    ("link", "zebra"),
    ("brand-ink", "brand"),
    ("brand-ink", "brand-dark"),
    ("brand-dark", "paper"),
    ("header-ink", "header"),
    ("good", "good-bg"),
    ("bad", "bad-bg"),
    ("pending", "pending-bg"),
    ("neutral", "neutral-bg"),
    ("info", "info-bg"),
    ("paper", "bad"),
]


@pytest.mark.parametrize(("fg", "bg"), TEXT_PAIRS)
def test_text_colours_pass_aa(fg: str, bg: str) -> None:
    assert ratio(VARS[fg], VARS[bg]) >= 4.5, (fg, VARS[fg], bg, VARS[bg])


@pytest.mark.parametrize(("fg", "bg"), [("control", "paper"), ("focus", "paper"), ("focus", "page")])
def test_controls_and_focus_ring_pass_three_to_one(fg: str, bg: str) -> None:
    assert ratio(VARS[fg], VARS[bg]) >= 3.0, (fg, bg)


@pytest.mark.parametrize(
    ("fg", "bg"),
    [
        (charts.INK, charts.PAPER),
        (charts.MUTED, charts.PAPER),
        (charts.PAPER, charts.TEAL),
        (charts.AMBER, charts.PAPER),
        (charts.AMBER, charts.AMBER_SOFT),
        (charts.INK, charts.SOFT),
        *((charts.PAPER, colour) for colour, _ in charts.LEAK_FILLS),
    ],
)
def test_chart_colours_pass_aa(fg: str, bg: str) -> None:
    assert ratio(fg, bg) >= 4.5, (fg, bg)


def test_the_chart_palette_matches_the_stylesheet() -> None:
    assert VARS["ink"] == charts.INK and VARS["muted"] == charts.MUTED and VARS["brand"] == charts.TEAL
