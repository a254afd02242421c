"""A relay between a null worker and a null listener that a test can blackhole
(see :mod:`workerwire.conformance.relay`)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from workerwire.conformance.relay import LinkInterposer

from .master import PREFIX, parse_port
from .network import PipeEnd, network_for

__all__ = ["NullRelay"]


class NullRelay(LinkInterposer):
    def __init__(self, reactor: Any, target: str):
        self._network = network_for(reactor)
        self._target = parse_port(target)
        self._pairs: list[tuple[PipeEnd, PipeEnd]] = []
        self._name = self._network.listen("", self._accept)
        self.address = PREFIX + self._name

    def _accept(self, inbound: PipeEnd) -> None:
        try:
            outbound = self._network.connect(self._target)
        except Exception:
            inbound.close("relay target refused the connection")
            return
        self._pairs.append((inbound, outbound))
        for a, b in ((inbound, outbound), (outbound, inbound)):
            a.on_message = b.send
            a.on_close = lambda reason, b=b: b.close(reason)

    def blackhole(self) -> None:
        for inbound, outbound in self._pairs:
            inbound.silent = outbound.silent = True

    def close(self) -> Deferred[None]:
        self._network.stop(self._name)
        for inbound, outbound in self._pairs:
            inbound.close("relay closed")
            outbound.close("relay closed")
        return succeed(None)
