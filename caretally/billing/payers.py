"""Which rules judge which patient: Medicare by default, a payer overlay where configured."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from caretally.model import Payer
from caretally.rules.loader import load_rulebook
from caretally.rules.params import RuleBook


@dataclass(frozen=True)
class PayerRules:
    """The Medicare rulebook plus per-payer overlays (``payer → overlay name``).

    A payer without an overlay is judged by the Medicare rules, and the run summary says
    so: billing a commercial plan on Medicare rules is a choice the practice should see.
    """

    base: RuleBook
    overlays: Mapping[Payer, RuleBook] = field(default_factory=dict)

    @classmethod
    def load(cls, overlays: Mapping[str, str] | None = None) -> PayerRules:
        base = load_rulebook("medicare")
        chosen = {Payer(p): load_rulebook("medicare", overlay=name) for p, name in (overlays or {}).items()}
        return cls(base, chosen)

    def for_payer(self, payer: Payer) -> RuleBook:
        return self.overlays.get(payer, self.base)

    def has_overlay(self, payer: Payer) -> bool:
        return payer in self.overlays

    @property
    def content_hash(self) -> str:
        import hashlib

        digest = hashlib.sha256(self.base.content_hash.encode())
        for payer in sorted(self.overlays):
            digest.update(f"{payer.value}:{self.overlays[payer].content_hash}".encode())
        return digest.hexdigest()
