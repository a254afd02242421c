"""workerwire benchmarks: every installed backend beside the raw Twisted transport under it.

Run ``python -m bench`` (full), ``python -m bench --quick`` (< 1 minute) or
``python -m bench --smoke`` (a few seconds, for CI). Results go to
``bench/results.json`` and ``docs/benchmarks.md``.

Layout: :mod:`bench.cli` plans and orchestrates trials; each trial is a fresh
master process (:mod:`bench.trial`) that spawns its worker side
(:mod:`bench.peer`, :mod:`bench.storm` or an unmodified ``buildbot-worker``).
Backends are found only through :func:`workerwire.registry.backend_names`.
"""
