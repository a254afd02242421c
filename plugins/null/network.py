"""An in-process stand-in for a network: named ports and ordered message pipes.

Messages are bytes, delivered in order, one reactor turn later (never
re-entrantly).  A network is per reactor, so separate reactors (or tests)
never see each other's ports.
"""

from __future__ import annotations

import itertools
import weakref
from collections import deque
from typing import Any, Callable

from workerwire.errors import AddressError, ConnectionLost

__all__ = ["NullNetwork", "PipeEnd", "network_for"]

_networks: "weakref.WeakKeyDictionary[Any, NullNetwork]" = weakref.WeakKeyDictionary()


def network_for(reactor: Any) -> "NullNetwork":
    """The in-process network of *reactor* (one per reactor)."""
    net = _networks.get(reactor)
    if net is None:
        net = _networks[reactor] = NullNetwork(reactor)
    return net


class PipeEnd:
    """One end of an ordered, asynchronous message pipe."""

    def __init__(self, reactor: Any, description: str):
        self._reactor = reactor
        self.description = description
        self.peer: PipeEnd | None = None
        self._inbox: deque[bytes] = deque()
        self._drain_call: Any = None
        self.on_message: Callable[[bytes], None] = lambda data: None
        self.on_close: Callable[[str], None] = lambda reason: None
        self.closed = False
        self._close_reason = ""
        self.silent = False  # a blackholed link: sends vanish, nothing is noticed
        #: Bytes of the messages in the inbox (what the peer has queued for this end).
        self.inbox_bytes = 0
        #: Not reading: the inbox is not delivered (like a paused transport).
        self.paused = False

    @property
    def queued(self) -> int:
        """Bytes this end sent that the peer has not taken yet (its write buffer)."""
        peer = self.peer
        return 0 if peer is None else peer.inbox_bytes

    def pauseProducing(self) -> None:
        """Stop delivering received messages (they wait in the inbox)."""
        self.paused = True

    def resumeProducing(self) -> None:
        """Deliver received messages again."""
        if self.paused:
            self.paused = False
            self._schedule()

    def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionLost("pipe closed")
        peer = self.peer
        if peer is None or peer.closed or self.silent or peer.silent:
            return
        peer._inbox.append(data)
        peer.inbox_bytes += len(data)
        peer._schedule()

    def close(self, reason: str = "closed by peer") -> None:
        """Close both ends; each side's ``on_close`` runs once, a turn later."""
        if self.closed:
            self.resumeProducing()  # closed by the peer while paused: deliver that now
            return
        self._shut(f"closed locally: {reason}", discard=True)
        peer = self.peer
        if peer is not None and not peer.closed and not self.silent and not peer.silent:
            peer._shut(reason, discard=False)  # like a FIN: what was sent still arrives

    def _shut(self, reason: str, discard: bool) -> None:
        self.closed = True
        self._close_reason = reason
        if discard:
            self._inbox.clear()
            self.inbox_bytes = 0
            self.paused = False  # closed here: the close is delivered at once
        self._schedule()

    def _schedule(self) -> None:
        if self._drain_call is None:
            self._drain_call = self._reactor.callLater(0, self._drain)

    def _drain(self) -> None:
        self._drain_call = None
        # A bounded batch per turn keeps one busy pipe from starving the reactor.
        for _ in range(256):
            if not self._inbox or self.paused:
                break
            data = self._inbox.popleft()
            self.inbox_bytes -= len(data)
            self.on_message(data)
        if self.paused:
            return  # resumeProducing schedules the rest
        if self._inbox:
            self._schedule()
        elif self.closed and self._close_reason is not None:
            reason, self._close_reason = self._close_reason, None  # type: ignore[assignment]
            self._inbox.clear()
            self.inbox_bytes = 0
            self.on_close(reason)


class NullNetwork:
    """Named in-process ports of one reactor."""

    def __init__(self, reactor: Any):
        self._reactor = reactor
        self._ports: dict[str, Callable[[PipeEnd], None]] = {}
        self._ids = itertools.count(1)

    def listen(self, name: str, accept: Callable[[PipeEnd], None]) -> str:
        """Open port *name* (``""`` or ``"0"`` picks a fresh one); return its name.

        :raises AddressError: the name is taken.
        """
        if name in ("", "0"):
            name = f"port-{next(self._ids)}"
            while name in self._ports:
                name = f"port-{next(self._ids)}"
        if name in self._ports:
            raise AddressError(f"null port {name!r} is already in use")
        self._ports[name] = accept
        return name

    def stop(self, name: str) -> None:
        self._ports.pop(name, None)

    def connect(self, name: str) -> PipeEnd:
        """Connect to port *name*; returns the client end.

        :raises ConnectionLost: nothing listens there (connection refused).
        """
        accept = self._ports.get(name)
        if accept is None:
            raise ConnectionLost(f"connection refused: no null port named {name!r}")
        n = next(self._ids)
        client = PipeEnd(self._reactor, f"null:{name}#client{n}")
        server = PipeEnd(self._reactor, f"null:{name}#{n}")
        client.peer, server.peer = server, client
        self._reactor.callLater(0, accept, server)
        return client
