"""Billing: joining facts from the store with the rules, pricing, runs."""
