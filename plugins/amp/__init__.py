"""The amp backend: workerwire's own documented dialect of Twisted AMP.

The wire format is specified in ``docs/protocols/amp.md`` (commands, login
and handshake, chunking of large values, flow control, keepalive, versions);
:mod:`workerwire_amp.commands` is the same contract in code.

Masters listen on Twisted server endpoint strings (``tcp:9990``); workers dial
client endpoint strings (``tcp:host=master:port=9990``).
"""

from __future__ import annotations


from typing import Any

from workerwire.backend import Backend
from workerwire.flow import DEFAULT_WINDOW

from .commands import CAPABILITIES, PROTOCOL_VERSION
from .master import AMPConnection, AMPListener
from .worker import AMPConnector

__all__ = [
    "AMPBackend",
    "backend",
    "AMPListener",
    "AMPConnection",
    "AMPConnector",
    "PROTOCOL_VERSION",
    "CAPABILITIES",
    "DEFAULT_WINDOW",
]


class AMPBackend(Backend):
    """Twisted AMP with chunked values, flow-controlled output and a versioned handshake."""

    name = "amp"
    description = f"Twisted AMP, workerwire dialect v{PROTOCOL_VERSION} (documented; chunked values, flow control)"
    network = True

    listener_class = AMPListener
    connector_class = AMPConnector

    def raw_frames(self, connector: Any) -> Any:
        from .raw_frames import AMPRawFrames

        return AMPRawFrames(connector)

    def raw_connect(self, address: str, reactor: Any) -> Any:
        from .raw_frames import raw_connect

        return raw_connect(address, reactor)


backend = AMPBackend()
