"""The doit integration: loader, task graph, stage actions, state backend, build lock,
staleness and its reasons, the lock file, the reporter and the ``stale``/``query``/
``cache-key`` commands. Everything else in oxidize knows nothing of doit.
"""
