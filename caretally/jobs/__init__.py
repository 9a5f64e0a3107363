"""Month-close jobs: work a request starts and a task-queue consumer finishes.

The queue is huey: its SQLite storage beside the embedded database (or a file named by
``CARETALLY_QUEUE_FILE``), Redis when ``CARETALLY_REDIS_URL`` is set. ``queue.build_queue``
makes one from settings when a process starts (never at import); ``tasks`` holds what a
consumer runs. The ``jobs`` table, not the queue, is the record a client reads
(``caretally.services.jobs``); the queue carries job ids, live progress and the
consumers' heartbeats.
"""
