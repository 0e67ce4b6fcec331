"""The grading service: an HTTP API and web pages over `vitgrade.grade`, a database that is the
record of truth, and dispatchers (local, Celery) that grade queued jobs in worker processes."""
