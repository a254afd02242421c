"""workerwire's reference application: master and worker daemons and the ``workerwire`` command.

It uses the library exactly as any other consumer would: backends are found
by name through :func:`workerwire.load_backend`, and masters and workers talk
only through the contracts in :mod:`workerwire.master` and
:mod:`workerwire.worker`.

* :mod:`workerwire_app.config` — the master's TOML config.
* :mod:`workerwire_app.master` — the master daemon's service.
* :mod:`workerwire_app.worker_runtime` — the worker's commands.
* :mod:`workerwire_app.cli` — the ``workerwire`` command.
"""

from workerwire import __version__

__all__ = ["__version__"]
