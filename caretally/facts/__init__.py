"""Facts: what the store knows per patient and period, aggregated by SQL."""

from caretally.facts.build import FactsOptions, build_month_facts

__all__ = ["FactsOptions", "build_month_facts"]
