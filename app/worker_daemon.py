"""The worker daemon: one connector to a master, kept logged in.

:class:`WorkerDaemon` owns the backend's connector for a
:class:`~workerwire_app.worker_runtime.WorkerRuntime`.  The connector
reconnects with backoff after any loss; the daemon adds password rotation:
with ``--password-file`` the file is read again whenever the link drops or a
login is refused, and a changed password is used from the next attempt on.
So an operator rotates a password by updating the worker's file and the
master's config (then SIGHUP); no worker restart is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire import Backend, LinkOptions, WorkerConnector
from workerwire.errors import LoginRefused

from .worker_runtime import WorkerRuntime

__all__ = ["WorkerDaemon", "PasswordSource", "NOT_LOGGED_IN_HINT"]

_log = Logger()

#: Seconds without a login after which the worker says what to check.
NOT_LOGGED_IN_HINT = 10.0


@dataclass(frozen=True)
class PasswordSource:
    """Where the worker's password comes from: given, from a file, or from the environment."""

    value: str | None = None
    file: str | None = None
    env: str | None = None

    def read(self) -> str:
        """The password now.

        :raises ValueError: it is missing or empty (the message says where it was looked for).
        """
        if self.file is not None:
            try:
                with open(self.file, encoding="utf-8") as f:
                    secret = f.read().rstrip("\r\n")
            except OSError as e:
                raise ValueError(f"cannot read the password file {self.file!r}: {e.strerror or e}") from None
            if not secret:
                raise ValueError(f"the password file {self.file!r} is empty")
            return secret
        if self.env is not None:
            secret = os.environ.get(self.env, "")
            if not secret:
                raise ValueError(f"environment variable {self.env!r} holding the password is not set or empty")
            return secret
        if not self.value:
            raise ValueError("the password is empty")
        return self.value

    @property
    def rereadable(self) -> bool:
        return self.file is not None


class WorkerDaemon:
    """Keeps one worker logged in to one master; see the module docstring."""

    def __init__(self, backend: Backend, address: str, name: str, password: PasswordSource,
                 runtime: WorkerRuntime, options: LinkOptions, reactor: Any):
        self.backend = backend
        self.address = address
        self.name = name
        self.password_source = password
        self.runtime = runtime
        self.options = options
        self.reactor = reactor
        self._password = password.read()
        self.connector: WorkerConnector = self._make_connector()
        self._running = False
        self._swapping = False
        self._hint_call: Any = None

    def _make_connector(self) -> WorkerConnector:
        """:raises AddressError: the address is not one the backend can dial."""
        connector = self.backend.create_connector(self.runtime, self.address, self.name, self._password,
                                                  self.options, self.reactor)
        connector.notifyOnDisconnect(lambda: self._on_disconnect(connector))
        return connector

    def start(self) -> None:
        self._running = True
        _log.info("worker {name}: dialing {address} over {backend} (base directory {basedir})", name=self.name,
                  address=self.address, backend=self.backend.name, basedir=self.runtime.basedir)
        self.connector.start()
        self._watch()
        self._hint_later()

    def _hint_later(self) -> None:
        if self._hint_call is None or not self._hint_call.active():
            self._hint_call = self.reactor.callLater(NOT_LOGGED_IN_HINT, self._hint)

    def _hint(self) -> None:
        """Still not logged in: say what usually causes it (the link only ever says "connection closed")."""
        self._hint_call = None
        if not self._running:
            return
        scheme = self.address.split(":", 1)[0]
        _log.warn("worker {name}: not logged in to {address} over {backend} after {t:g} s.  Check that it is the "
                  "master's {backend} port (a port of another backend never answers a {backend} login: see the "
                  "addresses in the master's log, its `ready` event or `workerwire status`), and that "
                  "{tls}; the master's log says why it refused or closed the connection", name=self.name,
                  address=self.address, backend=self.backend.name, t=NOT_LOGGED_IN_HINT,
                  tls=("the master's port is a TLS (ssl:) port" if scheme == "tls" else
                       "the master's port is not a TLS port (for one, dial tls:host=...:port=...)"))

    async def stop(self, why: str = "the worker is stopping") -> None:
        """Interrupt running commands (their results still reach the master), then close the link."""
        self._running = False
        if self._hint_call is not None and self._hint_call.active():
            self._hint_call.cancel()
        await self.runtime.interrupt_all(why)
        await self.connector.stop()

    def _watch(self) -> None:
        connector = self.connector
        connector.whenConnected().addCallbacks(lambda _: self._on_connect(connector),
                                               lambda f: self._on_refused(connector, f))

    def _on_connect(self, connector: WorkerConnector) -> None:
        if self._hint_call is not None and self._hint_call.active():
            self._hint_call.cancel()
        if connector is self.connector:
            _log.info("worker {name}: logged in to {address} over {backend}", name=self.name, address=self.address,
                      backend=self.backend.name)

    def _on_refused(self, connector: WorkerConnector, failure: Failure) -> None:
        if connector is not self.connector or not self._running:
            return
        if failure.check(LoginRefused):
            self._maybe_new_password()
        if connector is self.connector and not self._swapping:
            self._watch()

    def _on_disconnect(self, connector: WorkerConnector) -> None:
        if connector is not self.connector or not self._running:
            return
        self._hint_later()
        self._maybe_new_password()
        if connector is self.connector and not self._swapping:
            self._watch()

    def _maybe_new_password(self) -> None:
        if not self.password_source.rereadable or self._swapping:
            return
        try:
            password = self.password_source.read()
        except ValueError as e:
            _log.warn("worker {name}: {why}; keeping the current password", name=self.name, why=e)
            return
        if password != self._password:
            ensureDeferred(self._swap(password))

    async def _swap(self, password: str) -> None:
        self._swapping = True
        try:
            _log.info("worker {name}: the password file changed; logging in with the new password", name=self.name)
            old, self._password = self.connector, password
            await old.stop()
            if not self._running:
                return
            self.connector = self._make_connector()
            self.connector.start()
        finally:
            self._swapping = False
        self._watch()
