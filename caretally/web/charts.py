"""Charts as SVG drawn on the server: pure functions from typed inputs to escaped markup.

Why our own renderer: four small, fixed charts do not justify a plotting library or a
script bundle, and drawing them on the server means they work without JavaScript, print,
and can be tested as text. Every chart has a ``<title>`` and ``<desc>``, a one-sentence
summary and a table with every value it shows; nothing is told by colour alone — each
meaning also has a shape, a letter, a pattern or a label. Thresholds, tiers and bands are
always passed in (they are rule-year values or practice settings), never written here.

All text goes through ``markupsafe.escape``; numbers are formatted here. Ids inside a
chart are prefixed with its ``chart_id`` so several charts can share a page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal

from markupsafe import Markup, escape

from caretally.web.phrasing import count, day_and_time, money, short_date
from caretally.web.viewmodels import (
    Band,
    CalendarDay,
    Chart,
    Column,
    DataTable,
    DayMark,
    DayThreshold,
    LeakMonth,
    ReadingPoint,
    Tier,
)

# Colours: each passes WCAG AA (4.5:1) against what it is drawn on; meaning never rests
# on them alone. Kept in step with the custom properties of static/app.css.
INK = "#1b2733"
MUTED = "#4a5866"
GRID = "#c9d2da"
TEAL = "#0b6b69"
PAPER = "#ffffff"
SOFT = "#f3f6f8"
AMBER = "#8a4b00"
AMBER_SOFT = "#fdf1e1"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"

#: The words for each day mark: shown in the legend, the cell's tooltip and the table.
DAY_WORDS: dict[DayMark, str] = {
    DayMark.COUNTED: "counted",
    DayMark.MANUAL: "not counted: manual reading",
    DayMark.NON_MEDICAL: "not counted: not a medical device",
    DayMark.OUTSIDE_ASSIGNMENT: "not counted: outside the device's assignment",
    DayMark.BEFORE_CONSENT: "not counted: before consent",
    DayMark.OUTSIDE_ENROLLMENT: "not counted: outside the enrollment",
    DayMark.NO_DATA: "no data",
    DayMark.TO_COME: "still to come",
}
#: A letter for each kind of day that did not count, so cells read without colour.
DAY_LETTER: dict[DayMark, str] = {
    DayMark.MANUAL: "M",
    DayMark.NON_MEDICAL: "N",
    DayMark.OUTSIDE_ASSIGNMENT: "A",
    DayMark.BEFORE_CONSENT: "C",
    DayMark.OUTSIDE_ENROLLMENT: "E",
}
DAY_PATTERN: dict[DayMark, str] = {
    DayMark.MANUAL: "diag",
    DayMark.NON_MEDICAL: "dots",
    DayMark.OUTSIDE_ASSIGNMENT: "cross",
    DayMark.BEFORE_CONSENT: "hlines",
    DayMark.OUTSIDE_ENROLLMENT: "vlines",
}


def _n(x: float) -> str:
    """A coordinate: one decimal at most, no trailing zeros."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _attr(value: object) -> str:
    if isinstance(value, float):
        return _n(value)
    return str(value)


def _el(tag: str, content: str | None = None, **attrs: object) -> str:
    """One SVG element; every attribute value is escaped, ``fill_opacity`` → ``fill-opacity``."""
    text = " ".join(
        f'{k.rstrip("_").replace("_", "-")}="{escape(_attr(v))}"' for k, v in attrs.items() if v is not None
    )
    return f"<{tag} {text}/>" if content is None else f"<{tag} {text}>{content}</{tag}>"


def _text(
    x: float, y: float, content: str, *, size: float = 12, anchor: str = "start", **attrs: object
) -> str:
    return _el(
        "text", str(escape(content)), x=float(x), y=float(y), font_size=size, text_anchor=anchor, **attrs
    )


def _rect(x: float, y: float, w: float, h: float, **attrs: object) -> str:
    return _el("rect", x=float(x), y=float(y), width=float(w), height=float(h), **attrs)


def _line(x1: float, y1: float, x2: float, y2: float, **attrs: object) -> str:
    return _el("line", x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), **attrs)


def _circle(cx: float, cy: float, r: float, **attrs: object) -> str:
    return _el("circle", cx=float(cx), cy=float(cy), r=float(r), **attrs)


#: Pattern bodies on an 8×8 tile: diagonal, dots, cross-hatch, horizontal, vertical.
PATTERN_SHAPES = {
    "diag": ("path", {"d": "M-2,2 l4,-4 M0,8 l8,-8 M6,10 l4,-4"}),
    "dots": ("circle", {"cx": 4, "cy": 4, "r": 1.6}),
    "cross": ("path", {"d": "M0,0 L8,8 M8,0 L0,8"}),
    "hlines": ("path", {"d": "M0,2 H8 M0,6 H8"}),
    "vlines": ("path", {"d": "M2,0 V8 M6,0 V8"}),
}


def _pattern(pid: str, name: str, shape: str, ink: str, ground: str) -> str:
    tag, attrs = PATTERN_SHAPES[shape]
    paint = {"fill": ink} if tag == "circle" else {"stroke": ink, "stroke_width": 1.3}
    tile = _rect(0, 0, 8, 8, fill=ground) + _el(tag, **attrs, **paint)
    return _el("pattern", tile, id=f"{pid}-{name}", width=8, height=8, patternUnits="userSpaceOnUse")


def _patterns(pid: str, ink: str = AMBER, ground: str = AMBER_SOFT) -> str:
    """The five day patterns for this chart, amber on a light ground."""
    return "".join(_pattern(pid, name, name, ink, ground) for name in PATTERN_SHAPES)


#: A chart id becomes the prefix of ids inside the SVG and of ``aria-labelledby``.
CHART_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def _checked_id(chart_id: str) -> str:
    if not CHART_ID.fullmatch(chart_id):
        raise ValueError(f"chart id {chart_id!r} must be letters, digits, - or _, starting with a letter")
    return chart_id


def _svg(
    chart_id: str, width: float, height: float, title: str, desc: str, body: str, defs: str = ""
) -> Markup:
    cid = escape(chart_id)
    head = _el("title", str(escape(title)), id=f"{chart_id}-title") + _el(
        "desc", str(escape(desc)), id=f"{chart_id}-desc"
    )
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{cid}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" height="{_n(height)}" '
        f'role="img" aria-labelledby="{cid}-title {cid}-desc" font-family="{escape(FONT)}" fill="{INK}">'
        f"{head}<defs>{defs}</defs>{body}</svg>"
    )


def _check(cx: float, cy: float, size: float, colour: str) -> str:
    s = size / 2
    return _el(
        "path",
        d=f"M{_n(cx - s)},{_n(cy)} l{_n(s * 0.7)},{_n(s * 0.7)} l{_n(s * 1.3)},{_n(-s * 1.4)}",
        fill="none",
        stroke=colour,
        stroke_width=2.4,
        stroke_linecap="round",
        stroke_linejoin="round",
    )


def _open_circle(cx: float, cy: float, r: float, colour: str = INK) -> str:
    return _circle(cx, cy, r, fill="none", stroke=colour, stroke_width=1.6)


def _warning(cx: float, cy: float) -> str:
    """A triangle with an exclamation mark: "needs attention", told by shape."""
    return _el(
        "path", d=f"M{_n(cx)},{_n(cy - 9)} l9,16 h-18 z", fill=AMBER_SOFT, stroke=AMBER, stroke_width=1.5
    ) + (_text(cx, cy + 5, "!", size=11, anchor="middle", font_weight="700", fill=AMBER))


# --------------------------------------------------------------------------------------
# The 30-day day calendar
# --------------------------------------------------------------------------------------

CELL_W, CELL_H, GAP = 66, 52, 4
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _day_cell(d: CalendarDay, x: float, y: float, pid: str, today: date) -> str:
    mark = d.mark
    w, h = CELL_W, CELL_H
    cx, cy = x + w / 2, y + h * 0.64
    number_colour = INK
    parts = []
    if mark is DayMark.COUNTED:
        parts.append(_rect(x, y, w, h, rx=4, fill=TEAL))
        parts.append(_check(cx, cy, 16, PAPER))
        number_colour = PAPER
    elif mark in DAY_PATTERN:
        fill = f"url(#{pid}-{DAY_PATTERN[mark]})"
        parts.append(_rect(x, y, w, h, rx=4, fill=fill, stroke=AMBER, stroke_width=1))
        parts.append(_circle(cx, cy, 10, fill=PAPER, stroke=AMBER))
        parts.append(_text(cx, cy + 4.5, DAY_LETTER[mark], size=13, anchor="middle", font_weight="700"))
    elif mark is DayMark.NO_DATA:
        parts.append(_rect(x + 0.5, y + 0.5, w - 1, h - 1, rx=4, fill=PAPER, stroke=MUTED))
        parts.append(_text(cx, cy + 5, "–", size=16, anchor="middle", fill=MUTED))
    else:  # still to come
        parts.append(
            _rect(x + 0.5, y + 0.5, w - 1, h - 1, rx=4, fill=SOFT, stroke=MUTED, stroke_dasharray="3 3")
        )
    label = f"{d.day:%b} {d.day.day}" if d.day.day == 1 or d.day == today else str(d.day.day)
    parts.append(_text(x + 6, y + 15, label, size=12, fill=number_colour, font_weight="600"))
    if d.day == today:
        parts.append(_rect(x - 2, y - 2, w + 4, h + 4, rx=6, fill="none", stroke=INK, stroke_width=3))
        parts.append(_el("path", d=f"M{_n(x + w - 14)},{_n(y - 2)} h12 v12 z", fill=INK))
    tip = f"{d.day:%a %b} {d.day.day}: {DAY_WORDS[mark]}" + (" (today)" if d.day == today else "")
    if d.devices:
        tip += f"; device {', '.join(d.devices)}"
    return _el("g", _el("title", str(escape(tip))) + "".join(parts))


def _legend_swatch(mark: DayMark, x: float, y: float, pid: str) -> str:
    s = 18
    if mark is DayMark.COUNTED:
        return _rect(x, y, s, s, rx=3, fill=TEAL) + _check(x + s / 2, y + s / 2 + 1, 9, PAPER)
    if mark in DAY_PATTERN:
        fill = f"url(#{pid}-{DAY_PATTERN[mark]})"
        return _rect(x, y, s, s, rx=3, fill=fill, stroke=AMBER) + _text(
            x + s / 2, y + 13.5, DAY_LETTER[mark], size=11, anchor="middle", font_weight="700"
        )
    if mark is DayMark.NO_DATA:
        return _rect(x + 0.5, y + 0.5, s - 1, s - 1, rx=3, fill=PAPER, stroke=MUTED)
    return _rect(x + 0.5, y + 0.5, s - 1, s - 1, rx=3, fill=SOFT, stroke=MUTED, stroke_dasharray="3 3")


def day_calendar(
    days: Sequence[CalendarDay],
    *,
    today: date,
    thresholds: Sequence[DayThreshold],
    chart_id: str,
    title: str = "Days of readings in this 30-day period",
) -> Chart:
    """One cell per day of the period, Monday-first weeks, with each day's mark.

    The lines above the grid say how many days counted and, for each day minimum passed
    in, whether it is met or how many more days it needs — a threshold as words and as a
    tick on the progress strip, not as a colour change.
    """
    if not days:
        raise ValueError("a day calendar needs the days of its period")
    _checked_id(chart_id)
    ordered = sorted(days, key=lambda d: d.day)
    start, end = ordered[0].day, ordered[-1].day
    counted = sum(1 for d in ordered if d.mark is DayMark.COUNTED)
    to_come = sum(1 for d in ordered if d.mark is DayMark.TO_COME)
    pid = str(escape(chart_id))

    headline = f"{count(counted, 'day')} counted of {len(ordered)} · {count(to_come, 'day')} still to come"
    status_lines: list[tuple[bool, str]] = []
    for t in sorted(thresholds, key=lambda t: t.days):
        verb = "needs" if len(t.codes) == 1 else "need"
        if counted >= t.days:
            status_lines.append((True, f"{t.code_words} {verb} {count(t.days, 'day')}: met"))
        else:
            short = t.days - counted
            reach = "within reach" if short <= to_come else "out of reach this period"
            words = f"{t.code_words} {verb} {count(t.days, 'day')}: {short} more, {reach}"
            status_lines.append((False, words))

    grid_w = 7 * CELL_W + 6 * GAP
    left = 16
    body: list[str] = [_text(left, 22, headline, size=14, font_weight="700")]
    y = 44
    for met, words in status_lines:
        glyph = _check(left + 7, y - 4, 10, TEAL) if met else _open_circle(left + 7, y - 4, 5.5)
        body.append(glyph + _text(left + 20, y, words, size=13))
        y += 20

    # Progress strip: the count of days on a 0..period scale with each threshold as a tick.
    strip_y = y + 2
    scale = grid_w / len(ordered)
    body.append(_rect(left, strip_y, grid_w, 10, rx=5, fill=SOFT, stroke=MUTED))
    if counted:
        body.append(_rect(left, strip_y, min(counted, len(ordered)) * scale, 10, rx=5, fill=TEAL))
    for t in thresholds:
        tx = left + min(t.days, len(ordered)) * scale
        body.append(_line(tx, strip_y - 4, tx, strip_y + 14, stroke=INK, stroke_width=2))
        tick = f"{t.days} days · {', '.join(t.codes)}"
        body.append(
            _text(tx, strip_y + 27, tick, size=11, anchor="start" if tx < left + 40 else "middle", fill=MUTED)
        )

    top = strip_y + 46
    for i, name in enumerate(WEEKDAYS):
        wx = left + i * (CELL_W + GAP) + CELL_W / 2
        body.append(_text(wx, top, name, size=11, anchor="middle", fill=MUTED))
    top += 8
    offset = start.weekday()
    rows = 0
    for i, d in enumerate(ordered):
        slot = offset + i
        col, row = slot % 7, slot // 7
        rows = max(rows, row + 1)
        body.append(_day_cell(d, left + col * (CELL_W + GAP), top + row * (CELL_H + GAP), pid, today))
    grid_bottom = top + rows * (CELL_H + GAP)

    legend_x = left + grid_w + 28
    ly = top
    body.append(_text(legend_x, ly - 8, "Key", size=12, font_weight="700"))
    for mark in DayMark:
        body.append(_legend_swatch(mark, legend_x, ly, pid))
        body.append(_text(legend_x + 26, ly + 13.5, DAY_WORDS[mark], size=12))
        ly += 26
    body.append(_rect(legend_x - 1, ly, 20, 20, rx=4, fill="none", stroke=INK, stroke_width=3))
    body.append(_text(legend_x + 26, ly + 14.5, "today", size=12))
    ly += 26

    width = legend_x + 40 + 6.6 * max(len(w) for w in DAY_WORDS.values())
    height = max(grid_bottom, ly) + 12
    by_mark: dict[DayMark, int] = {}
    for d in ordered:
        by_mark[d.mark] = by_mark.get(d.mark, 0) + 1
    others = "; ".join(f"{DAY_WORDS[m]}: {n}" for m, n in by_mark.items() if m is not DayMark.COUNTED)
    summary = " ".join(
        [headline + ".", *(w + "." for _, w in status_lines), *([others + "."] if others else [])]
    )
    desc = f"Period {short_date(start)} to {short_date(end)}, today {short_date(today)}. {summary}"
    table = DataTable(
        caption=f"{title}, day by day",
        columns=(Column("Day"), Column("Counted?"), Column("Why"), Column("Device")),
        rows=tuple(
            (
                f"{d.day:%a %b} {d.day.day}" + (" (today)" if d.day == today else ""),
                "yes" if d.mark is DayMark.COUNTED else ("not yet" if d.mark is DayMark.TO_COME else "no"),
                DAY_WORDS[d.mark],
                ", ".join(d.devices) or "—",
            )
            for d in ordered
        ),
    )
    svg = _svg(chart_id, width, height, title, desc, "".join(body), _patterns(pid))
    return Chart(chart_id, title, svg, summary, table)


# --------------------------------------------------------------------------------------
# Minutes toward the month's tiers
# --------------------------------------------------------------------------------------


def _scale_end(top: float) -> int:
    """A round end for an axis a little past ``top`` (multiples of 10 up to 100, then 20)."""
    step = 10 if top <= 100 else 20
    return int(math.ceil((top * 1.08) / step) * step)


#: A tier's label starts this far left of its tick (the met/not-met mark comes first).
LABEL_LEAD = 26
#: Vertical distance between two rows of tier labels.
LABEL_ROW = 20
#: Space kept between two labels on one row.
LABEL_GAP = 8


def _label_width(code: str, size: float = 12) -> float:
    """A generous width for a tier label: the mark, then the code at ~0.62 em a character.

    Generous on purpose: the layout must never let labels touch, whatever font the
    browser picks from the ``system-ui`` stack.
    """
    return LABEL_LEAD + len(code) * size * 0.62


def _label_rows(spans: Sequence[tuple[float, float]]) -> list[int]:
    """A row for each label (``(left, width)``, in tick order): the first row it fits in.

    Codes that share a tick (99487 and 99437 at 60 minutes) or ticks close together
    (20, 30 and 40 on a 130-minute scale) would print over each other on one line, so
    a label that would touch one already placed goes down a row, with a leader line.
    """
    ends: list[float] = []  # per row, the right edge of its last label
    rows = []
    for left_edge, width in spans:
        for row, end in enumerate(ends):
            if left_edge >= end + LABEL_GAP:
                ends[row] = left_edge + width
                rows.append(row)
                break
        else:
            ends.append(left_edge + width)
            rows.append(len(ends) - 1)
    return rows


def minutes_bar(
    minutes: int,
    tiers: Sequence[Tier],
    *,
    interactive: bool | None,
    chart_id: str,
    title: str = "Minutes this month",
    call_for: str | None = None,
) -> Chart:
    """A bar of the month's minutes with a tick at each tier and the live-call state.

    ``tiers`` are the thresholds of the program's time codes from the rule-year (10/20/40/60
    for RPM in 2026, 20/40/60 for CCM staff time …). ``interactive`` is whether the month
    has its real-time call (``None`` when the codes need none). ``call_for`` names the
    code the call is required for, for the sentence.
    """
    _checked_id(chart_id)
    ordered = sorted(tiers, key=lambda t: (t.minutes, t.code))
    end = _scale_end(max([minutes, *(t.minutes for t in ordered)], default=10) or 10)
    left, bar_w, bar_y, bar_h = 16, 600, 58, 30
    scale = bar_w / end

    def x(m: float) -> float:
        return left + min(m, end) * scale

    reached = [t for t in ordered if minutes >= t.minutes]
    ahead = [t for t in ordered if minutes < t.minutes]
    headline = f"{count(minutes, 'minute')} this month"
    if ahead:
        nxt = ahead[0]
        headline += f" · {nxt.minutes - minutes} more for {nxt.code} at {nxt.minutes}"
    elif ordered:
        headline += " · every tier met"
    body = [_text(left, 24, headline, size=14, font_weight="700")]
    body.append(_rect(left, bar_y, bar_w, bar_h, rx=4, fill=SOFT, stroke=MUTED))
    if minutes:
        body.append(_rect(left, bar_y, x(minutes) - left, bar_h, rx=4, fill=TEAL))
    if x(minutes) - left > 80:  # short bars leave the number to the headline
        body.append(
            _text(
                x(minutes) - 8,
                bar_y + 20,
                f"{minutes} min",
                size=13,
                anchor="end",
                fill=PAPER,
                font_weight="700",
            )
        )
    for m in sorted({t.minutes for t in ordered}):
        tx = x(m)
        body.append(_line(tx, bar_y - 8, tx, bar_y + bar_h + 8, stroke=INK, stroke_width=2))
        body.append(_text(tx, bar_y - 14, f"{m}", size=12, anchor="middle", font_weight="600"))
    rows = _label_rows([(x(t.minutes) - LABEL_LEAD, _label_width(t.code)) for t in ordered])
    first_y = bar_y + bar_h + 24
    for t, row in zip(ordered, rows, strict=True):
        tx = x(t.minutes)
        mark_y = first_y + row * LABEL_ROW
        if row:  # a leader from the tick down to a label pushed to a lower row
            body.append(
                _line(
                    tx,
                    bar_y + bar_h + 8,
                    tx,
                    mark_y - 13,
                    stroke=MUTED,
                    stroke_width=1,
                    stroke_dasharray="2 2",
                )
            )
        met = minutes >= t.minutes
        body.append(_check(tx - 20, mark_y - 4, 9, TEAL) if met else _open_circle(tx - 20, mark_y - 4, 4.5))
        # a white halo keeps a leader line passing behind a label from crossing its letters
        body.append(
            _text(tx - 12, mark_y, t.code, size=12, stroke=PAPER, stroke_width=4, paint_order="stroke")
        )
    axis_y = first_y + (max(rows, default=0) + 1) * LABEL_ROW
    body.append(_text(left, axis_y, "0", size=11, fill=MUTED))
    body.append(_text(left + bar_w, axis_y, f"{end} min", size=11, anchor="end", fill=MUTED))

    cy = axis_y + 26
    if interactive is None:
        call = "No live call needed for these codes"
        icon = _open_circle(left + 8, cy - 4, 6, MUTED)
    elif interactive:
        call = "Live call this month: done"
        icon = _circle(left + 8, cy - 4, 8, fill=TEAL) + _check(left + 8, cy - 3, 8, PAPER)
    else:
        call = "Live call this month: not yet" + (f" — {call_for} needs one" if call_for else "")
        icon = _warning(left + 8, cy - 4)
    body.append(icon + _text(left + 24, cy, call, size=13, font_weight="600"))
    height = cy + 16
    met_words = ", ".join(f"{t.code} at {t.minutes}" for t in reached) or "none yet"
    summary = f"{headline}. Tiers met: {met_words}. {call}."
    table = DataTable(
        caption=f"{title}: tiers",
        columns=(Column("Code"), Column("Minutes needed", numeric=True), Column("Met?")),
        rows=tuple(
            (t.code, t.minutes, "yes" if minutes >= t.minutes else f"no, {t.minutes - minutes} to go")
            for t in ordered
        ),
    )
    svg = _svg(chart_id, left * 2 + bar_w + 24, height, title, summary, "".join(body))
    return Chart(chart_id, title, svg, summary, table)


# --------------------------------------------------------------------------------------
# Readings over time, with alert bands
# --------------------------------------------------------------------------------------

#: Marker shapes per series, in order: a reading's series is told by shape and label.
SHAPES = ("circle", "square", "triangle", "diamond")


def _marker(shape: str, cx: float, cy: float, filled: bool) -> str:
    paint = {"fill": INK if filled else PAPER, "stroke": INK, "stroke_width": 1.6}
    if shape == "circle":
        return _circle(cx, cy, 4, **paint)
    if shape == "square":
        return _rect(cx - 3.6, cy - 3.6, 7.2, 7.2, **paint)
    if shape == "triangle":
        return _el("path", d=f"M{_n(cx)},{_n(cy - 5)} l4.6,8.4 h-9.2 z", **paint)
    return _el("path", d=f"M{_n(cx)},{_n(cy - 5)} l5,5 l-5,5 l-5,-5 z", **paint)


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def _fmt_value(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _within(value: float, band: Band) -> bool:
    return (band.low is None or value >= band.low) and (band.high is None or value <= band.high)


def readings_chart(
    points: Sequence[ReadingPoint],
    bands: Sequence[Band],
    *,
    start: date,
    end: date,
    unit: str,
    chart_id: str,
    title: str = "Readings over time",
    today: date | None = None,
) -> Chart:
    """Readings by day across ``start``..``end`` with the practice's alert bands.

    Each series has its own marker shape and a label; device readings are filled, manual
    readings hollow (they never count as a day of data for RPM). A band is hatched and
    labelled with its threshold, so a reading in it is seen by position and pattern.
    """
    _checked_id(chart_id)
    series: list[str] = []
    for p in points:
        if p.series not in series:
            series.append(p.series)
    shape_of = {s: SHAPES[i % len(SHAPES)] for i, s in enumerate(series)}
    values = [p.value for p in points]
    edges = [v for b in bands for v in (b.low, b.high) if v is not None]
    lo = min(values + edges, default=0.0)
    hi = max(values + edges, default=1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.08
    step = _nice_step(hi - lo + 2 * pad)
    lo = math.floor((lo - pad) / step) * step
    hi = math.ceil((hi + pad) / step) * step

    left, top, plot_w, plot_h = 56, 40, 600, 240
    ndays = (end - start).days + 1

    def x_of(at: datetime) -> float:
        frac = (at.hour * 60 + at.minute) / 1440
        return left + ((at.date() - start).days + frac) / ndays * plot_w

    def y_of(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    pid = str(escape(chart_id))
    clip = _el("clipPath", _rect(left, top, plot_w, plot_h), id=f"{pid}-plot")
    body: list[str] = [_rect(left, top, plot_w, plot_h, fill=PAPER, stroke=GRID)]
    for b in bands:
        y_top = y_of(min(b.high, hi)) if b.high is not None else top
        y_bot = y_of(max(b.low, lo)) if b.low is not None else top + plot_h
        if y_bot <= y_top:
            continue
        body.append(
            _rect(
                left,
                y_top,
                plot_w,
                y_bot - y_top,
                fill=f"url(#{pid}-diag)",
                fill_opacity=0.55,
                clip_path=f"url(#{pid}-plot)",
            )
        )
        edge = b.low if b.low is not None else b.high
        if edge is not None and lo <= edge <= hi:
            ey = y_of(edge)
            body.append(
                _line(left, ey, left + plot_w, ey, stroke=AMBER, stroke_width=1.5, stroke_dasharray="6 3")
            )
        label_y = y_top + 15 if b.low is not None else y_bot - 6
        body.append(
            _rect(left + 6, label_y - 12, len(b.label) * 6.6 + 10, 16, rx=3, fill=PAPER, fill_opacity=0.92)
        )
        body.append(_text(left + 11, label_y, b.label, size=12, fill=AMBER, font_weight="600"))
    v = lo
    while v <= hi + 1e-9:
        gy = y_of(v)
        body.append(_line(left, gy, left + plot_w, gy, stroke=GRID, stroke_width=0.8))
        body.append(_text(left - 6, gy + 4, _fmt_value(v), size=11, anchor="end", fill=MUTED))
        v += step
    body.append(_text(left - 6, top - 12, unit, size=11, anchor="end", fill=MUTED))
    tick_every = 5 if ndays > 14 else 1
    for i in range(0, ndays, tick_every):
        tx = left + (i + 0.5) / ndays * plot_w
        body.append(_line(tx, top + plot_h, tx, top + plot_h + 5, stroke=MUTED))
        label = short_date(start + timedelta(days=i))
        body.append(_text(tx, top + plot_h + 18, label, size=11, anchor="middle", fill=MUTED))
    if today is not None and start <= today <= end:
        tx = left + ((today - start).days + 1) / ndays * plot_w
        body.append(_line(tx, top, tx, top + plot_h, stroke=INK, stroke_width=1.5))
        body.append(_text(tx, top - 6, "today", size=11, anchor="middle", font_weight="600"))

    for s in series:
        mine = sorted((p for p in points if p.series == s), key=lambda p: p.at)
        for p in mine:
            body.append(_marker(shape_of[s], x_of(p.at), y_of(p.value), filled=not p.manual))
        if mine:
            last = mine[-1]
            body.append(_text(min(x_of(last.at) + 8, left + plot_w - 4), y_of(last.value) - 8, s, size=11))

    ly = top + plot_h + 44
    lx = float(left)
    for s in series:
        body.append(_marker(shape_of[s], lx + 5, ly - 4, True) + _text(lx + 14, ly, s, size=12))
        lx += 28 + len(s) * 7
    body.append(_marker("circle", lx + 5, ly - 4, True) + _text(lx + 14, ly, "device reading", size=12))
    lx += 124
    manual_words = "manual reading (does not count)"
    body.append(_marker("circle", lx + 5, ly - 4, False) + _text(lx + 14, ly, manual_words, size=12))
    height = ly + 14
    in_band = [p for p in points if any(_within(p.value, b) for b in bands)]
    manual = sum(1 for p in points if p.manual)
    summary = (
        f"{count(len(points), 'reading')} from {short_date(start)} to {short_date(end)}"
        f" ({', '.join(series) or 'none'}); {manual} manual; "
        f"{count(len(in_band), 'reading')} inside an alert band"
        + (f" ({'; '.join(b.label for b in bands)})" if bands else "")
        + "."
    )
    table = DataTable(
        caption=f"{title}, every reading",
        columns=(
            Column("When"),
            Column("Measure"),
            Column("Value", numeric=True),
            Column("How"),
            Column("Alert band"),
        ),
        rows=tuple(
            (
                day_and_time(p.at),
                p.series,
                f"{_fmt_value(p.value)} {unit}",
                "manual" if p.manual else "device",
                "; ".join(b.label for b in bands if _within(p.value, b)) or "—",
            )
            for p in sorted(points, key=lambda p: (p.at, p.series))
        ),
        empty="No readings in this period.",
    )
    svg = _svg(chart_id, left + plot_w + 40, height, title, summary, "".join(body), _patterns(pid) + clip)
    return Chart(chart_id, title, svg, summary, table)


# --------------------------------------------------------------------------------------
# Leakage trend
# --------------------------------------------------------------------------------------

#: Fill per reason, in order; each is a colour *and* a pattern, and bars carry labels.
LEAK_FILLS = (
    (TEAL, "solid"),
    ("#33507f", "diag"),
    ("#6b3f7a", "dots"),
    (AMBER, "cross"),
    (MUTED, "hlines"),
    ("#0d5c2e", "vlines"),
)


def _dollars_short(value: Decimal) -> str:
    if value >= 1000:
        return f"${value / 1000:,.1f}k"
    return f"${value:,.0f}"


def leakage_trend(
    months: Sequence[LeakMonth],
    reasons: Mapping[str, str],
    *,
    chart_id: str,
    title: str = "Money missed per month, by reason",
) -> Chart:
    """Stacked bars, one per month, a segment per reason with its own pattern and a total.

    ``reasons`` maps each reason key to its words, in the order the legend lists them.
    """
    _checked_id(chart_id)
    keys = list(reasons)
    fills = {k: LEAK_FILLS[i % len(LEAK_FILLS)] for i, k in enumerate(keys)}

    def value(m: LeakMonth, k: str) -> Decimal:
        return Decimal(str(m.by_reason.get(k, 0)))

    def total(m: LeakMonth) -> Decimal:
        return sum((value(m, k) for k in keys), Decimal("0"))

    top_value = max((total(m) for m in months), default=Decimal("0"))
    step = Decimal(str(_nice_step(float(top_value) or 100.0, 4)))
    axis_top = (
        (top_value / step).to_integral_value(rounding="ROUND_CEILING") * step if top_value else step * 4
    )
    left, top, plot_w, plot_h = 72, 24, 520, 240
    slot = plot_w / max(len(months), 1)
    bar_w = min(64, slot * 0.6)

    def y_of(v: Decimal) -> float:
        return top + plot_h - float(v / axis_top) * plot_h

    pid = str(escape(chart_id))
    body: list[str] = []
    v = Decimal("0")
    while v <= axis_top:
        gy = y_of(v)
        body.append(_line(left, gy, left + plot_w, gy, stroke=GRID, stroke_width=0.8))
        body.append(_text(left - 8, gy + 4, _dollars_short(v), size=11, anchor="end", fill=MUTED))
        v += step
    defs = "".join(
        _pattern(pid, f"r{i}", pattern, PAPER, colour)
        for i, (colour, pattern) in enumerate(fills[k] for k in keys)
        if pattern != "solid"
    )

    def fill_of(k: str) -> str:
        colour, pattern = fills[k]
        return colour if pattern == "solid" else f"url(#{pid}-r{keys.index(k)})"

    for i, m in enumerate(months):
        cx = left + slot * (i + 0.5)
        x0 = cx - bar_w / 2
        base = Decimal("0")
        for k in keys:
            part = value(m, k)
            if part <= 0:
                continue
            y1, y0 = y_of(base + part), y_of(base)
            tip = _el("title", str(escape(f"{m.month}: {reasons[k]} {money(part)}")))
            body.append(_el("g", tip + _rect(x0, y1, bar_w, y0 - y1, fill=fill_of(k), stroke=PAPER)))
            base += part
        body.append(_text(cx, y_of(base) - 6, money(base), size=12, anchor="middle", font_weight="700"))
        label = datetime.strptime(m.month, "%Y-%m").strftime("%b %Y")
        body.append(_text(cx, top + plot_h + 18, label, size=12, anchor="middle"))
    body.append(_line(left, top + plot_h, left + plot_w, top + plot_h, stroke=INK))
    lx, ly = left + plot_w + 24, top + 8
    body.append(_text(lx, ly, "Reason", size=12, font_weight="700"))
    ly += 14
    for k in keys:
        body.append(_rect(lx, ly, 18, 18, fill=fill_of(k), stroke=INK, stroke_width=0.6))
        body.append(_text(lx + 26, ly + 13.5, reasons[k], size=12))
        ly += 26
    width = lx + 300
    height = max(top + plot_h + 34, ly + 8)
    totals = [(m.month, total(m)) for m in months]
    summary = (
        "Missed per month: " + "; ".join(f"{label} {money(t)}" for label, t in totals) + "."
        if totals
        else "No months to show."
    )
    table = DataTable(
        caption=f"{title}, in dollars",
        columns=(
            Column("Month"),
            *(Column(reasons[k], numeric=True) for k in keys),
            Column("Total", numeric=True),
        ),
        rows=tuple((m.month, *(money(value(m, k)) for k in keys), money(total(m))) for m in months),
        empty="No months to show.",
    )
    svg = _svg(chart_id, width, height, title, summary, "".join(body), defs)
    return Chart(chart_id, title, svg, summary, table)
