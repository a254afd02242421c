"""The pb backend: Twisted Perspective Broker, in Buildbot's PB worker dialect.

An unmodified ``buildbot-worker`` 4.x connects to a workerwire master over
``pb``, and workerwire's own :class:`PBConnector` speaks the same dialect.
Between two workerwire ends, values larger than banana's 640 KiB frame limit
travel through a chunking extension a stock peer never sees
(``docs/protocols/pb.md``).

Masters listen on Twisted server endpoint strings (``tcp:9989``,
``tcp:port=0:interface=127.0.0.1``); workers dial client endpoint strings
(``tcp:host=master:port=9989``).
"""

from __future__ import annotations


from typing import Any

from workerwire.backend import Backend

from .connection import PBConnection
from .master import PBListener
from .worker import PBConnector

__all__ = ["PBBackend", "backend", "PBListener", "PBConnection", "PBConnector"]


class PBBackend(Backend):
    """Twisted Perspective Broker, interoperable with buildbot-worker."""

    name = "pb"
    description = "Twisted Perspective Broker in Buildbot's PB worker dialect (serves stock buildbot-worker 4.x)"
    network = True

    listener_class = PBListener
    connector_class = PBConnector

    def raw_frames(self, connector: Any) -> Any:
        from .raw_frames import PBRawFrames

        return PBRawFrames(connector)

    def raw_connect(self, address: str, reactor: Any) -> Any:
        from .raw_frames import raw_connect

        return raw_connect(address, reactor)


backend = PBBackend()
