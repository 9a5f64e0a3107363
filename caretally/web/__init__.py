"""The web app's presentation layer: templates, static files, view-models and SVG charts.

Pages are rendered on the server with Jinja2 from the records in ``viewmodels``; routes
(in the service's FastAPI app) fetch through ``caretally.services``, build those records
with ``views``, and render with ``templating``. Nothing here queries the database or
checks a permission: it shows what it is given. See docs/web.md.
"""
