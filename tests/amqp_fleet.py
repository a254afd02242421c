"""A worker fleet in one process: ``python amqp_fleet.py ADDRESS BASEDIR NAME...``.

Real amqp connectors serving real :class:`~workerwire_app.worker_runtime.WorkerRuntime`
bots (one per name, password ``pw-NAME``), so a test can run dozens of workers
without dozens of interpreters.  Prints one JSON line per event on stdout:
``connected`` / ``lost`` (each link, with the master's name in ``peer``) and
``command_lost`` (a running command's update or completion failed with
ConnectionLost on this side).  Keepalive: ``$FLEET_KEEPALIVE`` = "interval,timeout".
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from workerwire import Backoff, LinkOptions, load_backend
from workerwire.errors import ConnectionLost
from workerwire_app.worker_runtime import WorkerRuntime


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"time": round(time.time(), 6), "event": event, **fields}) + "\n")
    sys.stdout.flush()


class _WatchedChannel:
    """A command channel that reports when the link's loss fails its sends."""

    def __init__(self, inner: Any, worker: str, command_id: str):
        self.inner = inner
        self.worker = worker
        self.command_id = command_id
        self.reported = False

    def _watch(self, d: Deferred[Any]) -> Deferred[Any]:
        def failed(f: Any) -> Any:
            if f.check(ConnectionLost) and not self.reported:
                self.reported = True
                emit("command_lost", worker=self.worker, command=self.command_id, error=type(f.value).__name__)
            return f

        return d.addErrback(failed)

    def update(self, updates: Any) -> Deferred[Any]:
        return self._watch(self.inner.update(updates))

    def complete(self, failure: Any = None) -> Deferred[Any]:
        return self._watch(self.inner.complete(failure))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FleetRuntime(WorkerRuntime):
    def __init__(self, name: str, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.name = name

    def remote_startCommand(self, channel: Any, builderName: str, commandId: str, commandName: str,
                            args: Any) -> Any:
        return super().remote_startCommand(_WatchedChannel(channel, self.name, commandId), builderName, commandId,
                                           commandName, args)


def main(argv: list[str]) -> None:
    from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner
    from twisted.logger import textFileLogObserver

    # Warnings and worse (refused or failed logins, dead links) on stderr, for the test's failure messages.
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])],
        redirectStandardIO=False)
    address, basedir, *names = argv
    interval, timeout = (float(x) for x in os.environ.get("FLEET_KEEPALIVE", "1,2").split(","))
    options = LinkOptions(keepalive_interval=interval, keepalive_timeout=timeout)
    backend = load_backend("amqp")
    for name in names:
        # The runtime's default lost-link grace: a command orphaned by a dead master is
        # interrupted when the worker logs in to another master (kept for the same one).
        runtime = FleetRuntime(name, os.path.join(basedir, name), reactor)
        connector = backend.create_connector(runtime, address, name, f"pw-{name}", options, reactor,
                                             Backoff(initial=0.1, maximum=1.0, jitter=0.2))

        def lost(name: str = name) -> None:
            emit("lost", worker=name)

        runtime.linkEstablished = (lambda name=name, c=connector, orig=runtime.linkEstablished:  # type: ignore
                                   (orig(), emit("connected", worker=name,
                                                 peer=c._session.peer if c._session else "?")))
        connector.notifyOnDisconnect(lost)
        connector.start()
    emit("started", workers=len(names))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
