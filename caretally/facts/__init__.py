"""Facts: what the store knows per patient and period, aggregated by SQL."""

from caretally.facts.build import BATCH, FactsOptions, build_month_facts, patients_in_month

__all__ = ["BATCH", "FactsOptions", "build_month_facts", "patients_in_month"]
