"""``caretally rules …``: review, compare and feed the rule-years without running a month.

``check`` loads every rule file strictly (shipped years, overlays and the layers imported
into the rules folder); ``show`` lists the rule-year in force on a date and says whether
it is final or proposed; ``diff`` compares two rule-years value by value;
``import-rvu`` / ``import-gpci`` turn CMS's own files into cited data (see
:mod:`caretally.rules.rvu_import`, :mod:`caretally.billing.gpci`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from caretally.cli.common import (
    JsonOption,
    UserError,
    console,
    date_callback,
    err_console,
    print_json,
)

RulesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--rules-dir",
        help="The rules folder of imported layers (default: $CARETALLY_RULES_DIR, else ./caretally-rules).",
    ),
]


def _problems_out(problems: list[Any], as_json: bool) -> None:
    if as_json:
        print_json({"ok": False, "problems": [p.to_json() for p in problems]})
    for p in problems:
        err_console.print(str(p), markup=False, highlight=False, soft_wrap=True)
        if getattr(p, "hint", None):
            err_console.print(f"hint: {p.hint}", markup=False, highlight=False, soft_wrap=True)


def _year_json(year: Any) -> dict[str, Any]:
    from caretally.rules.diff import show
    from caretally.rules.families.common import cite_text

    def param(p: Any) -> dict[str, Any]:
        out = {"value": show(p.value), "layer": p.layer, "citation": p.citation, "source": p.source}
        if p.option:
            out["option"] = p.option
        if p.derivation:
            out["derivation"] = p.derivation
        return out

    return {
        "payer": year.payer,
        "year": year.year,
        "effective_from": year.effective_from.isoformat(),
        "effective_to": year.effective_to.isoformat(),
        "layers": list(year.layers),
        "rule_year": year.label,
        "status": year.status,
        "provisional": year.provisional,
        "status_citation": year.status_citation or None,
        "status_sources": cite_text(year, year.status_citation) or None,
        "globals": {n: param(p) for n, p in sorted(year.globals.items())},
        "options": {n: param(p) for n, p in sorted(year.options.items())},
        "codes": {
            code: {
                "family": rule.family,
                "program": rule.program.value,
                "descriptor": rule.descriptor,
                "params": {n: param(p) for n, p in sorted(rule.params.items()) if n != "descriptor"},
            }
            for code, rule in sorted(year.codes.items())
        },
    }


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect, compare, check and import the rule-years.", no_args_is_help=True)

    @group.command("check")
    def check(
        root: Annotated[
            Path | None, typer.Option("--root", help="A rulesets folder (default: the shipped one).")
        ] = None,
        rules_dir: RulesDirOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Load every rule file strictly — shipped years, overlays, imported RVU layers and GPCI
        files — and list every problem with file and line. Exit 1 on any."""
        from caretally.billing.gpci import check_gpci_folder
        from caretally.rules.loader import check_rulesets

        problems = check_rulesets(root, rules_dir) + check_gpci_folder(rules_dir)
        if as_json:
            print_json([p.to_json() for p in problems])
        else:
            for p in problems:
                err_console.print(str(p), markup=False, highlight=False, soft_wrap=True)
            if not problems:
                console.print("All rule files load with no problems.")
        if problems:
            raise typer.Exit(1)

    @group.command("show")
    def show_year(
        on: Annotated[
            str,
            typer.Option(
                "--date",
                help="Show the rule-year in force on this date (YYYY-MM-DD).",
                callback=date_callback,
            ),
        ],
        overlay: Annotated[str | None, typer.Option("--payer-rules", help="Payer overlay name.")] = None,
        rules_dir: RulesDirOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """The rule-year in force on a date: its status (final or proposed) and every code with
        thresholds, amounts and the layer each amount comes from."""
        from caretally.rules.families.common import cite_text
        from caretally.rules.loader import load_rulebook

        year = load_rulebook("medicare", overlay=overlay, rules_dir=rules_dir).for_date(
            date.fromisoformat(on)
        )
        if as_json:
            print_json(_year_json(year))
            return
        status = "PROPOSED — not final" if year.provisional else "final"
        cf = year.globals["conversion_factor"].value
        console.print(
            f"[bold]{year.payer} {year.year}[/bold] ({year.effective_from}..{year.effective_to}), "
            f"status: [bold {'yellow' if year.provisional else 'green'}]{status}[/], layers: {year.label}, "
            f"conversion factor {cf} (non-QP)",
            soft_wrap=True,
        )
        if year.provisional:
            console.print(
                "Every decision judged by this year is flagged provisional; `caretally lock` refuses its "
                "months unless --accept-provisional is given.",
                soft_wrap=True,
                markup=False,
            )
            console.print(
                f"Proposal: {cite_text(year, year.status_citation)}",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
        proposals = [n for n in ("initiating_visit_required", "rtm_requires_established_patient",
                                 "staff_minutes_employed_only") if n in year.options]  # fmt: skip
        if proposals:
            shown = ", ".join(f"{n}={str(year.options[n].value).lower()}" for n in proposals)
            console.print(f"Proposed rules as options: {shown}", soft_wrap=True, markup=False)
        table = Table(title=f"{year.payer} {year.year} ({' + '.join(year.layers)})", show_lines=False)
        for column in ("code", "family", "program", "key values", "amount", "amount from"):
            table.add_column(column)
        for code, rule in sorted(year.codes.items()):
            keys = [
                f"{name}={rule.params[name].value}"
                for name in ("min_days", "max_days", "min_minutes", "max_minutes", "max_units", "add_on_to")
                if name in rule.params and rule.params[name].value is not None
            ]
            amount = "—" if rule.amount is None else f"${rule.amount}"
            p = rule.params.get("amount")
            origin = "" if p is None else p.layer + (" (derived)" if p.derivation else "")
            table.add_row(code, rule.family, rule.program.value, ", ".join(keys), amount, origin)
        console.print(table)

    @group.command("diff")
    def diff(
        old: Annotated[str, typer.Argument(help="A year (2026), an overlay (example-commercial[@2026]).")],
        new: Annotated[str, typer.Argument(help="The same kinds of name: what OLD is compared with.")],
        rules_dir: RulesDirOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """What changes from one rule-year to another, value by value: status, globals,
        options, codes added and removed, every parameter (old → new) with its citation."""
        from caretally.rules.diff import UnknownRules, diff_years, resolve

        try:
            before = resolve(old, new, rules_dir=rules_dir)
            after = resolve(new, old, rules_dir=rules_dir)
        except UnknownRules as exc:
            raise UserError(str(exc), "name a year (2026), an overlay, or overlay@year") from None
        changes = diff_years(before, after)
        if as_json:
            print_json(
                {
                    "old": {"rule_year": before.label, "year": before.year, "status": before.status},
                    "new": {"rule_year": after.label, "year": after.year, "status": after.status},
                    "changes": [c.to_json() for c in changes],
                }
            )
            return
        console.print(
            f"[bold]{before.label}[/bold] ({before.status}) → [bold]{after.label}[/bold] ({after.status}): "
            f"{len(changes)} difference(s)",
            soft_wrap=True,
        )
        table = Table(show_lines=False)
        for column in ("what", "code", "value", "old", "new", "citation (new)", "layer (new)"):
            table.add_column(column)
        for c in changes:
            old_text = c.old if c.old is not None else "—"
            new_text = c.new if c.new is not None else "—"
            citation = c.new_citation or c.old_citation or ""
            table.add_row(c.kind, c.code or "", c.name or "", old_text, new_text, citation, c.new_layer or "")
        console.print(table)

    @group.command("import-rvu")
    def import_rvu_cmd(
        file: Annotated[Path, typer.Argument(help="CMS's PPRRVU CSV (e.g. PPRRVU26_APR_nonQPP.csv).")],
        year: Annotated[int, typer.Option("--year", help="The Medicare rule-year it is for.")],
        release: Annotated[str, typer.Option("--release", help="CMS's release letter (A, B, C, D).")],
        rules_dir: RulesDirOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Write the amounts and RVU parts of CMS's PPRRVU file into a rule-year as a cited
        layer (replacing the hand-entered estimates; status-C codes become unpriced)."""
        from caretally.rules.rvu_import import ImportRefused, changed, import_rvu

        try:
            done = import_rvu(file, year, release, rules_dir=rules_dir)
        except ImportRefused as exc:
            _problems_out(exc.problems, as_json)
            raise typer.Exit(1) from None
        if as_json:
            print_json(done.to_json())
            return
        moved = changed(done.codes)
        note = f" (replaces {done.replaced})" if done.replaced else ""
        console.print(
            f"{done.title} written as layer {done.layer} of medicare {done.year}{note}: {done.path}",
            soft_wrap=True,
            markup=False,
        )
        console.print(
            f"{len(moved)} amount(s) change, at CF {done.conversion_factor} (file: "
            f"{', '.join(done.file_conversion_factors) or 'none given'}).",
            soft_wrap=True,
        )
        table = Table(title="Codes the import changes")
        for column in ("code", "status", "total RVU", "before", "after"):
            table.add_column(column)
        for c in moved:
            before = "unpriced" if c.before is None else f"${c.before}"
            after = "unpriced" if c.after is None else f"${c.after}"
            table.add_row(c.code, c.status, "" if c.total is None else str(c.total), before, after)
        console.print(table)
        missing = [c.code for c in done.codes if not c.in_file]
        if missing:
            console.print(f"Not in the file (kept as they were): {', '.join(missing)}", soft_wrap=True)
        if done.extended_by:
            years = ", ".join(str(y) for y in done.extended_by)
            console.print(f"Rule-year(s) {years} derive their amounts from these RVUs.", soft_wrap=True)

    @group.command("import-gpci")
    def import_gpci_cmd(
        file: Annotated[Path, typer.Argument(help="CMS's GPCI CSV (e.g. GPCI2026.csv, Addendum E).")],
        year: Annotated[int, typer.Option("--year", help="The year it is for.")],
        rules_dir: RulesDirOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Write CMS's GPCI file for a year into the rules folder; `bill --locality` uses it."""
        from caretally.billing.gpci import GpciRefused, import_gpci

        try:
            done = import_gpci(file, year, rules_dir=rules_dir)
        except GpciRefused as exc:
            _problems_out(exc.problems, as_json)
            raise typer.Exit(1) from None
        if as_json:
            print_json(done.to_json())
            return
        note = " (replaced the earlier import)" if done.replaced else ""
        console.print(
            f"{len(done.rows)} localities of {year} written{note}: {done.path}", soft_wrap=True, markup=False
        )

    app.add_typer(group, name="rules")
