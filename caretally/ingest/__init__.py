"""Validated, idempotent import of a practice's bundle (CSV, JSON Lines or bundle.json).

Other layers call ``import_bundle`` (a folder on disk) or ``import_records`` (records in
memory, e.g. from the HTTP API or the scenario tests); both return an ``ImportReport``.
The file formats, error codes and update semantics are documented in docs/formats.md.
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
