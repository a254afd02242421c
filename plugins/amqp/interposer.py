"""The amqp backend's link interposer for the conformance suite's dead-peer tests.

A TCP relay in front of the broker: workers that dial the relay's address reach
the broker through it, so blackholing it cuts those workers off (their messages
and the broker's deliveries stop, unseen) while the masters stay connected.
"""

from __future__ import annotations

from typing import Any

from workerwire.conformance.relay import LinkInterposer, TCPRelay

from .address import DialSpec, parse_dial

__all__ = ["BrokerRelay", "relay_for"]


class BrokerRelay(LinkInterposer):
    """A TCP relay in front of the broker for the conformance suite's dead-peer
    tests: workers that dial :attr:`address` reach the broker through it, so
    blackholing it cuts those workers off while the masters stay connected."""

    def __init__(self, relay: TCPRelay, address: str):
        self.relay = relay
        self.address = address

    def blackhole(self) -> None:
        self.relay.blackhole()

    def heal(self, existing: bool = True) -> None:
        self.relay.heal(existing)

    def close(self) -> Any:
        return self.relay.close()



async def relay_for(address: str, reactor: Any) -> BrokerRelay:
    spec = parse_dial(address)
    relay = TCPRelay(reactor, spec.broker.host, spec.broker.port)
    await relay.start()
    port = int(relay.address.rsplit("=", 1)[1])
    return BrokerRelay(relay, DialSpec(spec.broker.moved_to("127.0.0.1", port), spec.pool).address())
