"""Code families: small pure functions, one per kind of billing rule.

Each family module exposes ``decide(view) -> list[Decision]`` for one enrollment; the
concurrency module settles conflicts across all of them. Every threshold, cap and amount
comes from the rule-year (:mod:`caretally.rules.params`), never from Python.
"""
