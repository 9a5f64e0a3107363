"""caretally: remote-monitoring data and care-management time in, audit-ready claims out."""

__version__ = "0.1.0"
