"""The null backend: master and worker in one process, as strict as a network.

Every message goes through the core codec (:mod:`workerwire.values`), is
checked against the message size limit, and is delivered a reactor turn
later, in order.  Logins go through ``twisted.cred``; disconnects behave as on
a network backend.  Addresses are ``null:NAME``; ``null:0`` picks a fresh name.
"""

from __future__ import annotations

from typing import Any

from workerwire.backend import Backend

from .master import NullConnection, NullListener, parse_port
from .worker import NullConnector

__all__ = ["NullBackend", "backend", "NullListener", "NullConnection", "NullConnector"]


class NullBackend(Backend):
    name = "null"
    description = "in-process link (master and workers in one process), strict as a network backend"
    network = False

    listener_class = NullListener
    connector_class = NullConnector

    def loopback_port(self) -> str:
        return "null:0"

    def check_port(self, portStr: str) -> None:
        parse_port(portStr)

    def raw_frames(self, connector: Any) -> Any:
        from .raw_frames import NullRawFrames

        return NullRawFrames(connector)

    def raw_connect(self, address: str, reactor: Any) -> Any:
        from .raw_frames import raw_connect

        return raw_connect(address, reactor)

    def make_interposer(self, address: str, reactor: Any) -> Any:
        """A blackholable relay to *address*, for the conformance suite's dead-peer tests."""
        from .relay import NullRelay

        if reactor is None:
            from twisted.internet import reactor
        return NullRelay(reactor, address)


backend = NullBackend()
