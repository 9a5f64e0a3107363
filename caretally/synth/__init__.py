"""Synthetic practice generator: a realistic, reproducible input bundle for tests and benchmarks.

``synthesize(SynthConfig(...), out)`` writes patients, practitioners, enrollments, devices,
readings and time entries that pass the importer's checks while covering the billing edge
cases (thresholds, missing consent, DST, non-medical devices, asynchronous "calls" …).
"""

from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize

__all__ = ["SynthConfig", "synthesize"]
