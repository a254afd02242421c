"""A relay between a null worker and a null listener that a test can blackhole
and heal (see :mod:`workerwire.conformance.relay`)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from workerwire.conformance.relay import LinkInterposer

from .master import PREFIX, parse_port
from .network import PipeEnd, network_for

__all__ = ["NullRelay"]


class _Link:
    """One relayed pipe pair; while silent, messages and closes are held back."""

    def __init__(self, relay: "NullRelay", inbound: PipeEnd):
        self.relay = relay
        self.inbound = inbound
        self.outbound: PipeEnd | None = None
        self.silent = relay.blackholed
        self.forgotten = False
        # Held back while silent, per direction: messages, then a close reason.
        self._held: dict[int, list[bytes]] = {0: [], 1: []}
        self._closed: dict[int, str | None] = {0: None, 1: None}
        inbound.on_message = lambda data: self._pass(0, data)
        inbound.on_close = lambda reason: self._close(0, reason)

    def dial(self) -> None:
        if self.outbound is not None:
            return
        if self._closed[0] is not None:
            self.relay._links.remove(self)
            return
        try:
            self.outbound = self.relay._network.connect(self.relay._target)
        except Exception:
            self.inbound.close("relay target refused the connection")
            return
        self.outbound.on_message = lambda data: self._pass(1, data)
        self.outbound.on_close = lambda reason: self._close(1, reason)

    def _to(self, direction: int) -> PipeEnd | None:
        return self.outbound if direction == 0 else self.inbound

    def _pass(self, direction: int, data: bytes) -> None:
        target = self._to(direction)
        if self.silent or target is None:
            self._held[direction].append(data)
        elif not target.closed:
            target.send(data)

    def _close(self, direction: int, reason: str) -> None:
        self._closed[direction] = reason
        target = self._to(direction)
        if not self.silent and target is not None:
            target.close(reason)

    def resume(self) -> None:
        if not self.silent or self.forgotten:
            return
        self.silent = False
        self.dial()
        for direction in (0, 1):
            target = self._to(direction)
            held, self._held[direction] = self._held[direction], []
            if target is None:
                continue
            for data in held:
                if not target.closed:
                    target.send(data)
            if self._closed[direction] is not None:
                target.close(self._closed[direction])  # type: ignore[arg-type]

    def close(self) -> None:
        self.inbound.close("relay closed")
        if self.outbound is not None:
            self.outbound.close("relay closed")


class NullRelay(LinkInterposer):
    def __init__(self, reactor: Any, target: str):
        self._network = network_for(reactor)
        self._target = parse_port(target)
        self._links: list[_Link] = []
        self.blackholed = False
        self._name = self._network.listen("", self._accept)
        self.address = PREFIX + self._name

    def _accept(self, inbound: PipeEnd) -> None:
        link = _Link(self, inbound)
        self._links.append(link)
        if not link.silent:
            link.dial()

    def blackhole(self) -> None:
        self.blackholed = True
        for link in self._links:
            link.silent = True

    def heal(self, existing: bool = True) -> None:
        self.blackholed = False
        for link in list(self._links):
            if not link.silent or link.forgotten:
                continue
            if existing or link.outbound is None:
                link.resume()
            else:
                link.forgotten = True

    def close(self) -> Deferred[None]:
        self._network.stop(self._name)
        links, self._links = self._links, []
        for link in links:
            link.close()
        return succeed(None)
