"""The shapes templates read: plain frozen records, built by ``views`` and the routes.

Templates never reach into engine objects or the database; everything a page shows is
one of these records, already formatted where formatting is a decision (money, dates,
the words of a step). That keeps logic out of Jinja and lets a test build a page from
real engine output without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from markupsafe import Markup

# --------------------------------------------------------------------------------------
# Layout: what every signed-in page shares
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NavLink:
    label: str
    href: str
    current: bool = False


@dataclass(frozen=True)
class Flash:
    """A one-off message after an action; ``kind`` is ``success``, ``info`` or ``error``."""

    kind: str
    text: str


@dataclass(frozen=True)
class SignedIn:
    display_name: str
    email: str
    role: str  # the role's name as the service stores it (care_staff, biller …)
    role_label: str  # the words shown (Care staff, Biller …)


@dataclass(frozen=True)
class Layout:
    """The frame around a page: who is signed in, where they may go, what just happened.

    ``nav`` holds only the links the role may use (built by ``nav.navigation``); the
    template shows what it is given and decides nothing.
    """

    title: str  # the page's one h1, also the document title
    org_name: str | None = None
    user: SignedIn | None = None
    nav: tuple[NavLink, ...] = ()
    csrf_token: str = ""
    flashes: tuple[Flash, ...] = ()
    idle_minutes: int = 15  # sign-out after this much inactivity (the session setting)
    sign_out_url: str = "/signout"
    sign_in_url: str = "/signin"
    breadcrumbs: tuple[NavLink, ...] = ()


# --------------------------------------------------------------------------------------
# Generic building blocks: links, badges, tables, pagers, form fields
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    text: str
    href: str
    detail: str | None = None  # a quieter second line, e.g. the patient id under a name


class Tone(StrEnum):
    """A badge's meaning; each has its own shape, so colour is never the only cue."""

    GOOD = "good"  # check mark in a circle
    BAD = "bad"  # cross in a square
    PENDING = "pending"  # half-filled circle (a clock would be too busy at 1em)
    NEUTRAL = "neutral"  # hollow circle
    WARN = "warn"  # exclamation in a triangle


@dataclass(frozen=True)
class Badge:
    text: str
    tone: Tone


#: A table cell: text (escaped by the template), a link, a badge, or markup a view built.
Cell = str | int | Link | Badge | Markup | None


@dataclass(frozen=True)
class Column:
    label: str
    numeric: bool = False  # right-aligned, tabular figures
    #: Shown to screen readers only when the header would otherwise be empty (e.g. actions).
    hidden_label: bool = False
    wide: bool = False  # prose: give it room rather than squeezing it (a check's sentence)
    nowrap: bool = False  # dates and short labels that read badly when broken


@dataclass(frozen=True)
class DataTable:
    caption: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    empty: str = "Nothing to show."
    #: The first column names the row (``<th scope="row">``): patient, code, month …
    row_headers: bool = True
    caption_hidden: bool = False  # the caption is read by screen readers but not shown


@dataclass(frozen=True)
class Pager:
    """Cursor paging, as the API pages: where we are, and where previous/next go."""

    summary: str  # e.g. "Rows 1–50 of 214"
    previous_href: str | None = None
    next_href: str | None = None
    label: str = "Pages"


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    selected: bool = False


@dataclass(frozen=True)
class Field:
    """A form control with its visible label, hint and error, tied by ids.

    ``kind`` is an input type (text, email, password, number, date, datetime-local …),
    or ``select``, ``textarea``, ``checkbox``.
    """

    name: str
    label: str
    kind: str = "text"
    value: str = ""
    hint: str | None = None
    error: str | None = None
    required: bool = False
    options: tuple[Option, ...] = ()
    autocomplete: str | None = None
    checked: bool = False
    inputmode: str | None = None
    min: str | None = None
    max: str | None = None
    step: str | None = None
    id: str | None = None  # defaults to "f-" + name

    @property
    def field_id(self) -> str:
        return self.id or f"f-{self.name.replace('_', '-')}"


# --------------------------------------------------------------------------------------
# Charts: their inputs and what a renderer returns
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """An SVG figure with its text alternatives.

    ``svg`` is escaped markup with ``<title>``/``<desc>``; ``summary`` is the sentence a
    reader needs without the picture; ``table`` holds every value the picture shows.
    """

    chart_id: str
    title: str
    svg: Markup
    summary: str
    table: DataTable


class DayMark(StrEnum):
    """Why a day of a 30-day period did or did not count."""

    COUNTED = "counted"
    MANUAL = "manual"
    NON_MEDICAL = "non_medical_device"
    OUTSIDE_ASSIGNMENT = "device_not_with_patient"
    BEFORE_CONSENT = "before_consent"
    OUTSIDE_ENROLLMENT = "outside_enrollment"
    NO_DATA = "no_data"
    TO_COME = "to_come"


@dataclass(frozen=True)
class CalendarDay:
    day: date
    mark: DayMark
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class DayThreshold:
    """A day minimum of the rule-year (2 for 99445, 16 for 99454 in 2026) and its codes."""

    days: int
    codes: tuple[str, ...]

    @property
    def code_words(self) -> str:
        return " and ".join(self.codes) if len(self.codes) < 3 else ", ".join(self.codes)


@dataclass(frozen=True)
class Tier:
    """Minutes that complete a code or one more unit of it (20 → 99457, 40 → 99458 …)."""

    minutes: int
    code: str


@dataclass(frozen=True)
class ReadingPoint:
    at: datetime  # patient-local time of the reading (drawn by day)
    value: float  # a measurement, drawn; never money
    series: str  # "systolic", "glucose" …
    manual: bool


@dataclass(frozen=True)
class Band:
    """A practice's alert threshold drawn as a band: values at or beyond it raise an alert.

    ``low``/``high`` bound the band (``None`` = to the edge of the plot). The values come
    from the practice's configuration — never from this code.
    """

    label: str
    low: float | None
    high: float | None


@dataclass(frozen=True)
class LeakMonth:
    month: str  # YYYY-MM
    by_reason: dict[str, object]  # reason key → Decimal value missed
    billed: object | None = None  # Decimal expected payment billed, for context


# --------------------------------------------------------------------------------------
# Page records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timer:
    """The server-kept timer of one user for one patient (a reload never loses it)."""

    state: str  # idle | running | paused
    elapsed_seconds: int = 0
    started_at: datetime | None = None  # when the current running stretch began (UTC)
    patient_id: str = ""
    action_url: str = "/timer"


@dataclass(frozen=True)
class Form:
    """A POST form: where it goes, its fields and its submit button's name."""

    action: str
    submit: str
    fields: tuple[Field, ...] = ()
    hidden: tuple[tuple[str, str], ...] = ()
    method: str = "post"
    legend: str | None = None
    danger: bool = False


@dataclass(frozen=True)
class ReasonView:
    verdict: Badge
    message: str
    rule_id: str
    citation: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecisionView:
    code: str
    program: str
    status: Badge
    units: int
    date_of_service: str
    period: str
    payment: str
    reasons: tuple[ReasonView, ...]
    parameters: tuple[tuple[str, str, str, str], ...] = ()  # name, value, layer, citation
    gaps: tuple[str, ...] = ()
    rule_year: str = ""
    anchor: str = ""
    packet_href: str | None = None  # a billed line of a stored run: its audit packet


@dataclass(frozen=True)
class Section:
    """A titled block of a page (headings h2), e.g. the packet's parts."""

    heading: str
    tables: tuple[DataTable, ...] = ()
    facts: tuple[tuple[str, Cell], ...] = ()  # a definition list: term, value
    note: str | None = None
    anchor: str = ""


# --------------------------------------------------------------------------------------
# Page records: one per template under templates/pages/
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInPage:
    email: Field
    password: Field
    action: str = "/signin"
    next_url: str = ""
    error: str | None = None
    expired: bool = False


@dataclass(frozen=True)
class WorklistPage:
    filters: Form  # a GET form: program, assigned staff, as-of date
    table: DataTable
    as_of: date
    summary: str  # "34 open periods, $2,104.55 still reachable"
    pager: Pager | None = None


@dataclass(frozen=True)
class ChartPanel:
    heading: str
    chart: Chart
    note: str | None = None


@dataclass(frozen=True)
class PatientPage:
    patient_id: str
    facts: tuple[tuple[str, Cell], ...]
    programs: DataTable
    calendars: tuple[ChartPanel, ...]
    minutes: tuple[ChartPanel, ...]
    readings: tuple[ChartPanel, ...]
    time_log: DataTable
    decisions: tuple[DecisionView, ...]
    decisions_source: str  # which run (or live data) the decisions come from
    month: str
    log_time_href: str | None  # None: the viewer may not log time (a biller, an auditor)
    band_note: str = "Alert bands are the practice's configured thresholds, not medical advice."


@dataclass(frozen=True)
class LogTimePage:
    patient_id: str
    patient_label: str
    timer: Timer
    entry: Form
    recent: DataTable
    locked_note: str | None = None  # a locked month refuses new time: name the run
    running_since: str = ""  # when the running timer started, on the patient's clock


@dataclass(frozen=True)
class AlertRow:
    alert_id: str
    patient: Link
    reading: str
    threshold: str
    when: str
    acknowledge_url: str


@dataclass(frozen=True)
class AlertsPage:
    alerts: tuple[AlertRow, ...]
    thresholds: DataTable
    summary: str
    add_threshold: Form | None = None  # shown to roles that may set thresholds
    may_acknowledge: bool = True
    remove: tuple[Link, ...] = ()  # per threshold in force: its words and the removal URL


@dataclass(frozen=True)
class JobProgress:
    label: str
    done: int
    total: int
    state: str  # queued | running | finished | failed

    @property
    def percent(self) -> int:
        return 0 if self.total <= 0 else min(100, round(100 * self.done / self.total))


@dataclass(frozen=True)
class Stat:
    label: str
    value: str


@dataclass(frozen=True)
class MonthClosePage:
    month: str
    picker: Form  # GET
    status: Badge | None
    run_facts: tuple[tuple[str, Cell], ...]
    stats: tuple[Stat, ...]
    lines: DataTable
    reasons: DataTable
    amendments: DataTable | None
    downloads: tuple[Link, ...]
    problems: tuple[str, ...] = ()
    job: JobProgress | None = None
    start: Form | None = None
    lock: Form | None = None
    #: Every claim line with a link to its packet (the auditor's way in).
    line_list: DataTable | None = None
    #: JSON progress of the running job, polled by app.js (the meta refresh is the fallback).
    job_url: str | None = None
    #: A one-line note on the run (a failed job, the proposed year to accept).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeakagePage:
    month: str
    picker: Form
    stats: tuple[Stat, ...]
    trend: Chart
    by_reason: DataTable
    misses: DataTable


@dataclass(frozen=True)
class PacketPage:
    title: str
    line_facts: tuple[tuple[str, Cell], ...]
    sections: tuple[Section, ...]
    json_href: str


@dataclass(frozen=True)
class AuditPage:
    search: Form  # GET
    events: DataTable
    pager: Pager | None = None


@dataclass(frozen=True)
class MeasureView:
    """One OIG measure of a compliance scan: the practice beside the nation, and the evidence."""

    measure_id: str
    title: str
    anchor: str
    status: Badge  # text and shape: flagged is never told by colour alone
    facts: tuple[tuple[str, Cell], ...]  # practice, national, how judged, unit, options, citation
    thresholds: DataTable
    findings: DataTable
    lines: DataTable
    note: str | None = None  # e.g. "the first 100 of 340 findings; the JSON has all"


@dataclass(frozen=True)
class CompliancePage:
    picker: Form  # GET: year and (optional) month
    summary: str
    stats: tuple[Stat, ...]
    overview: DataTable
    measures: tuple[MeasureView, ...]
    sources: tuple[tuple[str, Cell], ...]
    runs: DataTable
    json_href: str


@dataclass(frozen=True)
class UserRow:
    user_id: str
    email: str
    display_name: str
    role: str
    role_label: str
    active: bool
    change_role_url: str
    deactivate_url: str
    is_self: bool = False  # the signed-in admin: no Deactivate button for their own account
    practitioner: str = "Not linked"  # whom the user logs time as, in words


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    name: str
    role_label: str
    created: str
    last_used: str
    revoke_url: str


@dataclass(frozen=True)
class AdminPage:
    users: tuple[UserRow, ...]
    roles: tuple[Option, ...]
    add_user: Form
    tokens: tuple[TokenRow, ...]
    create_token: Form
    settings: tuple[tuple[str, Cell], ...]
    new_token: str | None = None  # shown once, right after it was created
    link_practitioner: Form | None = None  # which practitioner a user logs time as


@dataclass(frozen=True)
class ErrorPage:
    status: int
    message: str
    hint: str | None = None
    back: Link | None = None


@dataclass(frozen=True)
class PatientsPage:
    search: Form  # GET
    table: DataTable
    pager: Pager | None = None


@dataclass(frozen=True)
class PracticeSettingsPage:
    """Admin → Practice settings: what is stored now, and the form to change it."""

    current: tuple[tuple[str, Cell], ...]
    form: Form
    thresholds: Link
