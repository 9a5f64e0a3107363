"""Where imported rule layers live, so the CLI, the service and an installed package agree.

Layers imported from CMS files (``caretally rules import-rvu``, ``import-gpci``) are
data a practice adds after installing caretally; they cannot go into the package's own
``rulesets`` folder (read-only once installed, and replaced by every upgrade). They live
in a *rules folder*:

* ``$CARETALLY_RULES_DIR`` when set — what a service deployment sets, beside
  ``$CARETALLY_DATABASE_URL``, so every process (CLI, API, workers) sees the same layers;
* otherwise ``./caretally-rules`` in the current folder, next to the default database
  ``./caretally.db``, the way the default database itself is found.

Inside it: ``<ruleset>/<year>/<kind>.yaml`` (e.g. ``medicare/2026/pprrvu.yaml``, one
layer of each kind per year; a newer release replaces the file) and
``gpci/<year>.csv``. The loader reads the folder on every ``load_rulebook`` call, keyed
by the content of the layer files, so an import is seen at once by a running service.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

RULES_DIR_ENV = "CARETALLY_RULES_DIR"
DEFAULT_RULES_DIR = "caretally-rules"
GPCI_DIR = "gpci"


def resolve_rules_dir(given: Path | str | None = None) -> Path:
    """``given``, else ``$CARETALLY_RULES_DIR``, else ``./caretally-rules`` (it need not exist)."""
    if given is not None and str(given):
        return Path(given)
    env = os.environ.get(RULES_DIR_ENV, "").strip()
    return Path(env) if env else Path.cwd() / DEFAULT_RULES_DIR


def layers_fingerprint(rules_dir: Path | None) -> str:
    """A digest of every imported layer file (names and bytes): the loader's cache key.

    Content, not modification times: two imports within one clock tick, or a file copied
    back unchanged, are told apart (or not) by what they say.
    """
    if rules_dir is None or not rules_dir.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(rules_dir.glob("*/*/*.yaml")):
        if not path.is_file():
            continue
        digest.update(path.relative_to(rules_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def gpci_path(year: int, rules_dir: Path | None = None) -> Path:
    """Where an imported GPCI file for ``year`` lives (it need not exist)."""
    return resolve_rules_dir(rules_dir) / GPCI_DIR / f"{year}.csv"
