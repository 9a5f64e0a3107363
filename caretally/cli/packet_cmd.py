"""``caretally packet``: audit packets (HTML + JSON per claim line) rebuilt from a stored run."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Annotated

import typer

from caretally.cli.common import DbOption, OrgOption, UserError, console, open_db, parse_month_text
from caretally.cli.service_shell import service_errors
from caretally.store.db import DEFAULT_ORG


def _month(value: str | None) -> str | None:
    return None if value is None else parse_month_text(value)


def file_stem(number: int, patient_id: str, code: str) -> str:
    """``line-0007-P123-99457``: sorts in run order; ids are the practice's, made file-safe."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in patient_id)
    return f"line-{number:04d}-{safe}-{code}"


def register(app: typer.Typer) -> None:
    @app.command("packet")
    def packet(
        out: Annotated[Path, typer.Option("--out", help="Folder for the packets (made if missing).")],
        run_id: Annotated[str | None, typer.Option("--run", help="A stored run's id.")] = None,
        line: Annotated[
            int | None, typer.Option("--line", help="Claim line number in the run (1 = first, stored order).")
        ] = None,
        patient: Annotated[
            str | None, typer.Option("--patient", help="Every claim line of this patient (with --month).")
        ] = None,
        month: Annotated[
            str | None,
            typer.Option("--month", help="The month's current run, YYYY-MM.", callback=_month),
        ] = None,
        as_zip: Annotated[
            bool, typer.Option("--zip", help="With --month: one zip of every line's packet.")
        ] = False,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG,
    ) -> None:
        """Write each claim line's audit packet: a printable HTML file and its JSON twin.

        ``--run ID --line N`` is one line; ``--patient P --month M`` every line of the
        patient in the month's current run; ``--month M --zip`` every line of the month, in
        one zip. Packets are rebuilt from the stored run: records changed after it are
        shown as the run saw them, and the change is named.
        """
        if as_zip and month is None:
            raise UserError(
                "--zip packs a whole month: give --month M",
                "e.g. caretally packet --month 2026-03 --zip --out packets",
                2,
            )
        if month is not None and patient is None and not as_zip and run_id is None:
            raise UserError(
                "--month alone writes every line of the month: add --zip, or --patient P for one patient",
                "e.g. caretally packet --month 2026-03 --zip --out packets",
                2,
            )
        if run_id is None and month is None:
            raise UserError(
                "say which lines: --run ID --line N, --patient P --month M, or --month M --zip",
                "caretally runs list shows the stored runs",
                2,
            )
        if as_zip and (line is not None or patient is not None):
            raise UserError("--zip covers the whole month: leave out --line and --patient", None, 2)
        from caretally.services.context import cli_actor
        from caretally.services.packets import line_packets
        from caretally.web.packet_document import packet_html

        engine = open_db(db_url, org)
        with service_errors():
            found = line_packets(
                engine, cli_actor(org), run_id=run_id, line=line, patient_id=patient, month=month
            )
        out.mkdir(parents=True, exist_ok=True)
        files: list[tuple[str, str]] = []
        for p in found.packets:
            stem = file_stem(p.line.number, p.line.patient_id, p.line.code)
            doc = p.model_dump(mode="json")
            files.append((f"{stem}.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n"))
            files.append((f"{stem}.html", packet_html(doc, f"{stem}.json")))
        if as_zip:
            target = out / f"packets-{found.month}-{found.run_id[:8]}.zip"
            with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
                for name, text in files:
                    bundle.writestr(name, text)
            where = str(target)
        else:
            for name, text in files:
                (out / name).write_text(text, encoding="utf-8")
            where = str(out)
        n = len(found.packets)
        noun = "packet" if n == 1 else "packets"
        console.print(
            f"{n} {noun} (HTML + JSON) of run {found.run_id} ({found.month}) in {where}",
            markup=False,
            highlight=False,
        )
