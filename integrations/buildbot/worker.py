"""``worker.WorkerwireWorker``: a Buildbot worker whose link is a workerwire backend.

In a stock ``master.cfg``::

    from buildbot.plugins import worker
    c['workers'] = [
        worker.Worker('linux-1', 'pw1'),                                   # Buildbot's own pb
        worker.WorkerwireWorker('mac-1', 'pw2', backend='amp', port='tcp:9990'),
    ]

It is Buildbot's ``Worker`` in every respect (builds, locks, properties,
notify_on_missing, graceful shutdown, the data API) except where its worker
logs in: on the workerwire *backend*'s listener at *port*, not on
``c['protocols']``.
"""

from __future__ import annotations

from typing import Any

from buildbot import config
from buildbot.worker.base import Worker
from buildbot.worker.manager import WorkerRegistration
from twisted.internet import defer

from .hub import WorkerwireHub
from .options import BUILDBOT_WORKER_KEYWORDS, SettingsError, WorkerSettings, parse_settings

__all__ = ["WorkerwireWorker", "WorkerwireRegistration"]


class WorkerwireRegistration(WorkerRegistration):
    """Buildbot's per-worker registration, made on the workerwire hub instead
    of Buildbot's pb / msgpack managers (so a WorkerwireWorker cannot log in
    over ``c['protocols']``)."""

    __slots__ = ["workerwire_reg"]

    def __init__(self, master: Any, worker: "WorkerwireWorker"):
        super().__init__(master, worker)
        self.workerwire_reg: Any = None

    @defer.inlineCallbacks
    def update(self, worker_config: Any, global_config: Any) -> Any:
        hub = yield defer.ensureDeferred(WorkerwireHub.of(self.master))
        self.workerwire_reg = yield defer.ensureDeferred(
            hub.register(worker_config.workername, worker_config.password, worker_config.workerwire_settings)
        )

    @defer.inlineCallbacks
    def unregister(self) -> Any:
        hub = self.master.namedServices.get(WorkerwireHub.name)
        if hub is not None:
            yield defer.ensureDeferred(hub.unregister(self.worker.workername))
        self.workerwire_reg = None
        yield self.master.workers._unregister(self)

    def getPort(self) -> int | str | None:
        """The bound port (the real number when the port string asked for 0)."""
        return self.workerwire_reg.getPort() if self.workerwire_reg is not None else None

    def getAddress(self) -> str | None:
        """A client address a worker of the same backend can dial."""
        return self.workerwire_reg.getAddress() if self.workerwire_reg is not None else None


class WorkerwireWorker(Worker):
    """A Buildbot ``Worker`` connected through a workerwire backend.

    :param name: the worker's name, as it logs in.
    :param password: its password (a secret renders as for ``Worker``).
    :param backend: an installed workerwire backend (``pb``, ``amp``, a third party's).
    :param port: the port string the backend listens on (``tcp:9990``; an int means ``tcp:N``).
    :param kwargs: any keyword of Buildbot's ``Worker`` and any field of
        :class:`workerwire.LinkOptions` (``keepalive_interval``,
        ``keepalive_timeout``, ``login_timeout``, ...).  Workers on the same
        backend and port share one listener, so they must agree on the link options.
    """

    workerwire_settings: WorkerSettings
    #: Buildbot's ``Worker`` sets it (None until registered); ours is always of our kind.
    registration: WorkerwireRegistration | None

    def checkConfig(self, name: str, password: Any, backend: Any = None, port: Any = None, **kwargs: Any) -> None:
        try:
            settings = parse_settings(name, backend, port, kwargs)
        except SettingsError as e:
            config.error(str(e))
            settings = None
        if settings is not None:
            bb_kwargs = dict(settings.buildbot_kwargs)
        else:  # still let Buildbot check its own keywords, so every mistake is reported at once
            bb_kwargs = {k: v for k, v in kwargs.items() if k in BUILDBOT_WORKER_KEYWORDS}
        super().checkConfig(name, password, **bb_kwargs)
        if settings is not None:
            self.workerwire_settings = settings

    @defer.inlineCallbacks
    def reconfigService(self, name: str, password: Any, backend: Any = None, port: Any = None, **kwargs: Any) -> Any:
        self.workerwire_settings = parse_settings(name, backend, port, kwargs)
        if not self.registration:
            # Buildbot's WorkerManager.register, with our registration kind.
            self.registration = WorkerwireRegistration(self.master, self)
            self.master.workers.registrations[name] = self.registration
        yield super().reconfigService(name, password, **dict(self.workerwire_settings.buildbot_kwargs))

    @property
    def backend(self) -> str:
        """The workerwire backend this worker logs in through."""
        return self.workerwire_settings.backend

    @property
    def port(self) -> str:
        """The port string it logs in on."""
        return self.workerwire_settings.port
