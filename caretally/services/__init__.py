"""The one service layer: the CLI, the API and the web app are thin shells over these functions.

Each public function takes an engine (and, for anything done on someone's behalf, an
``Actor``), does its work in one transaction, appends the audit event when it reads or
writes PHI, and reports failures as ``ServiceError`` values that each shell renders in
its own way (a problem+json answer, a one-line CLI error).
"""
