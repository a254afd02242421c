"""Canaries: every private attribute of Twisted (and autobahn) that workerwire still uses.

Each test names the private, where it is used, and what happens when a new
release removes or renames it: most uses are speed-ups that would silently
fall back to a slower path (or skip an override), so a test fails here
first, on the upgrade, instead.  setup.cfg bounds twisted
below its next major version for the same reason.  Where a private is used
(``grep``-able list):

==================================================  ===============================================
private                                             used by
==================================================  ===============================================
``tcp.Connection._tempDataBuffer/_tempDataLen``,    ``workerwire.speedups.socket_write`` (a message's
``dataBuffer``, ``offset`` (undocumented)           pieces with one ``sendmsg`` while the buffer is
                                                    empty), ``workerwire.budget.transport_queued``
``Banana._smallestInt/_largestInt/...LongInt``      ``workerwire_pb.codec.FastBanana`` (integers)
``Broker._sendFailureOrError``                      ``workerwire_pb.broker.WireBroker`` overrides it
                                                    (error answers as type and message, unlogged)
autobahn ``_connectionMade``, ``_onOpen``,          ``workerwire_msgpack.wire.MessageLink``
``_transport_details``, ``wasNotCleanReason``
==================================================  ===============================================

The amp backend uses none since its ``WireProtocol`` has its own box parser and
request dispatch over AMP's public API (``AmpBox``, ``Command``, argument
types, error codes); it used eleven of ``BinaryBoxProtocol``'s and
``BoxDispatcher``'s before.
"""

from __future__ import annotations

import inspect
from typing import Any

from pytest_twisted import ensureDeferred as async_test
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.spread import banana, pb

from workerwire.budget import transport_queued
from workerwire.conformance import within
from workerwire.speedups.socket_write import _BUFFER_ATTRIBUTES, direct_socket, write_pieces


class _Sink(Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = b""
        self.whole: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.whole.called:
            self.whole.callback(self.received)


@async_test
async def test_a_tcp_transports_write_buffer_is_where_socket_write_and_the_budget_look(reactor: Any) -> None:
    """``FileDescriptor._tempDataBuffer``, ``_tempDataLen``, ``dataBuffer``,
    ``offset``, ``socket``: without them :func:`direct_socket` offers no
    socket (every message is joined and copied again) and the send budget
    sees an empty queue (it never pauses a peer that does not read)."""
    sink = _Sink(expected=10 + 6)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(lambda: sink))
    try:
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Protocol())
        transport: Any = client.transport
        assert type(transport) is tcp.Client
        for name in _BUFFER_ATTRIBUTES:
            assert hasattr(transport, name), f"twisted's TCP transport no longer has {name}"
        assert direct_socket(transport) is transport.socket
        assert transport_queued(transport) == 0
        transport.write(b"0123456789")  # buffered until the reactor's next write turn
        assert transport_queued(transport) == 10, "_tempDataLen/dataBuffer/offset no longer count what is queued"
        write_pieces(transport, direct_socket(transport), [b"ab", memoryview(b"cdef")])  # queued behind: in order
        assert await within(sink.whole, reactor, what="the bytes written") == b"0123456789abcdef"
        transport.loseConnection()
    finally:
        await port.stopListening()


def test_banana_integer_limits_the_pb_codec_reads() -> None:
    """``workerwire_pb.codec.FastBanana`` encodes integers with the limits
    ``Banana.setPrefixLimit`` sets: ``_smallestInt``, ``_largestInt``,
    ``_smallestLongInt``, ``_largestLongInt``."""
    codec = banana.Banana()
    codec.setPrefixLimit(64)
    assert (codec._smallestInt, codec._largestInt) == (-(2**31), 2**31 - 1)
    assert (codec._smallestLongInt, codec._largestLongInt) == (-(2 ** (64 * 7)) + 1, 2 ** (64 * 7) - 1)


def test_pb_broker_answers_failures_through_the_method_workerwire_overrides() -> None:
    """``pb.Broker._sendFailureOrError(fail, requestID)``: ``WireBroker``
    overrides it so a failure is answered as type name and message and not
    logged as a traceback; if PB stopped calling it, the override would be
    skipped silently."""
    assert list(inspect.signature(pb.Broker._sendFailureOrError).parameters) == ["self", "fail", "requestID"]
    assert "_sendFailureOrError" in inspect.getsource(pb.Broker._recvMessage)


def test_autobahn_privates_the_msgpack_backend_uses() -> None:
    """``workerwire_msgpack.wire.MessageLink`` replaces autobahn's
    ``connectionMade`` (it would read TLS details from workerwire.tls's
    wrapper): it sets ``_transport_details`` and calls ``_connectionMade``;
    it overrides ``_onOpen``; it reads ``wasNotCleanReason``."""
    from autobahn.twisted.websocket import WebSocketClientProtocol, WebSocketServerProtocol
    from autobahn.websocket.protocol import WebSocketProtocol

    for cls in (WebSocketClientProtocol, WebSocketServerProtocol):
        assert callable(getattr(cls, "_connectionMade", None)), f"{cls.__name__}._connectionMade is gone"
        assert callable(getattr(cls, "_onOpen", None)), f"{cls.__name__}._onOpen is gone"
    assert "_transport_details" in inspect.getsource(WebSocketProtocol)
    assert "wasNotCleanReason" in inspect.getsource(WebSocketProtocol)
