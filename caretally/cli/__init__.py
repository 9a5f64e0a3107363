"""The ``caretally`` command line: thin shells over the service functions."""
