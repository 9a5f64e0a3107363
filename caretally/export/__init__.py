"""Writers that turn the month run's claim lines into files a biller or payer accepts.

Every writer here is pure (lines in, text or dict out) apart from the thin ``write_*``
helpers in :mod:`caretally.export.tabular`, so the same lines always give the same bytes.
"""
