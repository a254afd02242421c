"""Hostile input on a pb port: random bytes, truncated and oversized banana
frames, jelly that asks for classes or instances, unknown PB messages.

Each closes (only) the offending connection with a logged protocol error;
the listener keeps accepting logins and a worker that was connected all along
still runs commands.
"""

from __future__ import annotations

import random
import struct
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import formatEvent, globalLogPublisher
from twisted.spread import banana

from workerwire import LinkOptions, load_backend
from workerwire.conformance import Harness, within

NEGOTIATE = banana.encode(b"pb") + banana.encode([b"version", 6])


def frame_header(length: int, type_byte: bytes) -> bytes:
    """A banana length prefix (base 128, low digit first) and type byte."""
    out = bytearray()
    banana.int2b128(length, lambda b: out.extend(b))
    return bytes(out) + type_byte


def message(*items: Any) -> bytes:
    return banana.encode([b"message", *items])


# name -> (bytes to send, whether the server closes the connection by itself, what its log says)
CASES: dict[str, tuple[bytes, bool, str]] = {
    "random bytes": (bytes(random.Random(1234).randrange(256) for _ in range(4096)), False, ""),
    "not a dialect": (banana.encode([1, 2, 3]), True, "does not speak banana's pb dialect"),
    "long prefix": (b"\x01" * 100, True, "more than 64 bytes of prefix"),
    "invalid type byte": (NEGOTIATE + b"\x01\xff", True, "Invalid Type Byte"),
    "oversized string": (NEGOTIATE + frame_header(banana.SIZE_LIMIT + 1, banana.STRING), True, "String too long"),
    "oversized list": (NEGOTIATE + frame_header(banana.SIZE_LIMIT + 1, banana.LIST), True, "List too long"),
    "truncated frame": (NEGOTIATE + frame_header(1000, banana.STRING) + b"x" * 10, False,
                        "closed in the middle of a message"),
    "float frame cut": (NEGOTIATE + banana.FLOAT + struct.pack("!d", 1.5)[:3], False,
                        "closed in the middle of a message"),
    "non-list message": (NEGOTIATE + banana.encode(b"hello"), True, "must be a non-empty list"),
    "unknown PB message": (NEGOTIATE + banana.encode([b"cachemessage", 1, 2, 3, 4, 5, 6]), True,
                           "unknown PB message 'cachemessage'"),
    "answer never asked for": (NEGOTIATE + banana.encode([b"answer", 999, 1]), True, "KeyError: 999"),
    "jelly class": (NEGOTIATE + message(1, b"root", b"login", 1, [b"class", b"os.system"], [b"dictionary"]),
                    True, "InsecureJelly: b'class'"),
    "jelly function": (NEGOTIATE + message(1, b"root", b"login", 1,
                                           [b"list", [b"function", b"os.system"]], [b"dictionary"]),
                       True, "InsecureJelly: b'function'"),
    "jelly instance": (NEGOTIATE + message(1, b"root", b"login", 1,
                                           [b"list", [b"twisted.python.failure.Failure", [b"dictionary"]]],
                                           [b"dictionary"]), True, "InsecureJelly: b'twisted.python.failure.Failure'"),
    "jelly set": (NEGOTIATE + message(1, b"root", b"login", 1, [b"list", [b"set", 1]], [b"dictionary"]), True,
                  "InsecureJelly: b'set'"),
    "wrong version": (banana.encode(b"pb") + banana.encode([b"version", 5]), True, "Version Incompatibility"),
}


class RawClient(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self.closed_by_us = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


async def raw_connect(harness: Harness, port: int) -> RawClient:
    client = RawClient()
    factory = protocol.Factory.forProtocol(lambda: client)
    await TCP4ClientEndpoint(harness.reactor, "127.0.0.1", port).connect(factory)
    return client


class LogWatch:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._waiters: list[tuple[str, Deferred[None]]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        text = formatEvent(event)
        self.lines.append(text)
        for item in list(self._waiters):
            if item[0] in text:
                self._waiters.remove(item)
                item[1].callback(None)

    def when(self, text: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if any(text in line for line in self.lines):
            d.callback(None)
        else:
            self._waiters.append((text, d))
        return d


pytestmark = pytest.mark.usefixtures("no_errors_logged")


@pytest_twisted.async_yield_fixture
async def harness(reactor: Any, tmp_path: Any) -> AsyncIterator[Harness]:
    h = Harness(load_backend("pb"), LinkOptions(keepalive_interval=None, max_message_size=256 * 1024),
                reactor, str(tmp_path))
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
def log() -> Any:
    watch = LogWatch()
    globalLogPublisher.addObserver(watch)
    yield watch
    globalLogPublisher.removeObserver(watch)


@pytest.mark.parametrize("case", sorted(CASES))
@async_test
async def test_hostile_input_closes_only_that_connection(case: str, harness: Harness, log: LogWatch) -> None:
    payload, server_closes, says = CASES[case]
    w = await harness.start_worker("steady", "pw-steady")
    port = harness.listener.getRegistration("steady").getPort()
    client = await raw_connect(harness, port)
    logged = log.when("pb protocol error from 127.0.0.1:")
    specific = log.when(says)
    client.transport.write(payload)
    if server_closes:
        await within(client.lost, harness.reactor, what=f"the master to drop the connection ({case})")
    else:
        client.transport.loseConnection()
        await within(client.lost, harness.reactor, what="the raw connection to close")
    await within(logged, harness.reactor, what=f"a logged protocol error ({case})")
    await within(specific, harness.reactor, what=f"the log to say {says!r}")
    # The worker connected all along still runs a command, and new logins work.
    rc = await harness.run(w, "emit", {"updates": [["stdout", "still here\n"], ["rc", 0]]})
    assert rc.values("stdout") == ["still here\n"] and rc.completions == [None]
    other = await harness.start_worker("newcomer", "pw-new")
    assert other.conn.isConnected and w.conn.isConnected


@async_test
async def test_message_over_the_size_limit(harness: Harness, log: LogWatch) -> None:
    w = await harness.start_worker("steady", "pw-steady")
    bad = await harness.start_worker("bad", "pw-bad")
    gone: Deferred[None] = Deferred()
    bad.conn.notifyOnDisconnect(lambda: gone.callback(None))
    logged = log.when("larger than the limit of 262144 bytes")
    # Each string is small; together they exceed max_message_size.
    big = [b"x" * 60_000] * 6
    session = bad.connector._session  # a logged-in link: the login input limit no longer applies
    assert session is not None
    session.broker.transport.write(banana.encode([b"message", 99, b"root", b"login", 1, [b"list", *big], []]))
    await within(gone, harness.reactor, what="the master to drop the connection")
    await within(logged, harness.reactor, what="the logged protocol error")
    rc = await harness.run(w, "emit", {"updates": [["rc", 0]]})
    assert rc.completions == [None]


@async_test
async def test_a_large_message_before_the_login_is_refused_early(harness: Harness, log: LogWatch) -> None:
    await harness.register("w1", "pw")
    port = harness.listener.getRegistration("w1").getPort()
    client = await raw_connect(harness, port)
    logged = log.when("bytes before logging in")
    big = [b"x" * 60_000] * 6
    client.transport.write(NEGOTIATE + banana.encode([b"message", 1, b"root", b"login", 1, [b"list", *big], []]))
    await within(client.lost, harness.reactor, what="the master to drop the connection")
    await within(logged, harness.reactor, what="the logged protocol error")


@async_test
async def test_unauthenticated_connection_cannot_upload_parts(harness: Harness, log: LogWatch) -> None:
    await harness.register("w1", "pw")
    port = harness.listener.getRegistration("w1").getPort()
    client = await raw_connect(harness, port)
    logged = log.when("workerwire.part: transfer parts before the login")
    client.transport.write(NEGOTIATE + banana.encode(
        [b"message", 1, b"workerwire", b"part", 0, [b"tuple", 1, 0, 4, b"data"], [b"dictionary"]]))
    await within(client.lost, harness.reactor, what="the master to drop the connection")
    await within(logged, harness.reactor, what="the logged protocol error")
