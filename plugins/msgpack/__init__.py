"""The msgpack backend: Buildbot's MessagePack-over-WebSocket worker dialect
(``msgpack_experimental_v7``), on autobahn.

A workerwire master accepts a stock ``buildbot-worker`` created with
``--protocol msgpack_experimental_v7``; a workerwire worker serves a stock
Buildbot master configured with ``c['protocols'] = {'msgpack_experimental_v7':
{'port': N}}``.  Two workerwire ends negotiate an extension in the HTTP
upgrade (error types, builder list and start-build requests, worker keepalive
and shutdown requests, flow control, messages in parts).  The dialect and its
departures from Buildbot's document are in ``docs/protocols/msgpack.md``.

Masters listen on Twisted server endpoint strings (``tcp:9989``, a bare port
number, ``ssl:...``); workers dial client endpoint strings
(``tcp:host=master:port=9989``, ``tls:...``).
"""

from __future__ import annotations

from typing import Any

from workerwire.backend import Backend, LinkOptions
from workerwire.backoff import Backoff
from workerwire.endpoints import parse_server_port

from .master import MsgpackConnection, MsgpackListener
from .wire import DIALECT_VERSION
from .worker import MsgpackConnector

__all__ = ["MsgpackBackend", "backend", "MsgpackListener", "MsgpackConnection", "MsgpackConnector",
           "BUILDBOT_NAME"]

#: The name Buildbot gives this protocol in ``c['protocols']`` and ``--protocol``.
BUILDBOT_NAME = "msgpack_experimental_v7"


class MsgpackBackend(Backend):
    """Buildbot's msgpack-over-WebSocket worker dialect."""

    name = "msgpack"
    description = (f"MessagePack over WebSocket, Buildbot's {BUILDBOT_NAME} dialect "
                   f"(+ workerwire extension v{DIALECT_VERSION}; autobahn)")
    network = True

    def create_listener(self, master: Any, options: LinkOptions | None = None, reactor: Any = None) -> MsgpackListener:
        return MsgpackListener(master, options, reactor)

    def create_connector(self, bot: Any, address: str, name: str, password: str,
                         options: LinkOptions | None = None, reactor: Any = None,
                         backoff: Backoff | None = None) -> MsgpackConnector:
        return MsgpackConnector(bot, address, name, password, options, reactor, backoff)

    def loopback_port(self) -> str:
        return "tcp:port=0:interface=127.0.0.1"

    def raw_frames(self, connector: Any) -> Any:
        from .raw_frames import MsgpackRawFrames

        return MsgpackRawFrames(connector)

    def raw_connect(self, address: str, reactor: Any) -> Any:
        from .raw_frames import raw_connect

        return raw_connect(address, reactor)

    def check_port(self, portStr: str) -> None:
        from twisted.internet import reactor

        parse_server_port(reactor, portStr, "msgpack")


backend = MsgpackBackend()
