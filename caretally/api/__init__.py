"""The HTTP API: a thin FastAPI shell over ``caretally.services`` (see ``app.create_app``)."""
