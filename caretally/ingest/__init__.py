"""Validated, idempotent import of a practice's bundle (CSV, JSON Lines or bundle.json).

Other layers call ``import_bundle`` (a folder on disk) or ``import_records`` (records in
memory, e.g. from the HTTP API or the scenario tests); both return an ``ImportReport``.
The file formats, error codes and update semantics are documented in docs/formats.md.

The service's live inputs are separate modules, imported where used (FHIR parsing is
heavy): ``live.ingest_readings``, ``fhir.ingest_fhir_bundle``, ``tenovi.ingest_tenovi``
and ``tenovi.verify_tenovi``, ``time_entries.create_time_entries`` and
``amend_time_entry``, ``zipbundle.import_zip``; all return a ``live.LiveResult``.
"""

from caretally.ingest.pipeline import import_bundle, import_records
from caretally.ingest.report import FileCounts, ImportReport, RejectedRow
from caretally.ingest.rows import FILES, ORDER
from caretally.ingest.values import is_valid_mbi, is_valid_npi

__all__ = [
    "FILES",
    "ORDER",
    "FileCounts",
    "ImportReport",
    "RejectedRow",
    "import_bundle",
    "import_records",
    "is_valid_mbi",
    "is_valid_npi",
]
