"""workerwire.speedups.socket_write: pieces reach the peer exactly as one joined write
would send them, whatever the socket takes; and workerwire.addresses.describe_peer.

The socket and transport here are stand-ins that record what they are given:
partial sends and a failing socket cannot be provoked at will on a real one.
The real path is exercised end to end by every pb and amp streaming test
(conformance: 16 MiB updates, 10,000 updates in order) over plain TCP.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from workerwire.conformance.harness import within
from workerwire.speedups.socket_write import MAX_IOV, direct_socket, write_pieces
from workerwire.addresses import describe_peer


class RecordingSocket:
    def __init__(self, room: int, error: Exception | None = None) -> None:
        self.room, self.error, self.taken = room, error, b""

    def sendmsg(self, buffers: list[Any]) -> int:
        if self.error is not None:
            raise self.error
        data = b"".join(buffers)[:self.room]
        self.taken += data
        return len(data)


class BufferTransport:
    """Twisted's FileDescriptor buffer attributes, and a write that records."""

    def __init__(self, buffered: bytes = b"") -> None:
        self._tempDataBuffer = [buffered] if buffered else []
        self.dataBuffer, self.offset, self.connected, self.disconnecting = b"", 0, 1, False
        self.written = b""

    def write(self, data: bytes) -> None:
        assert type(data) is bytes
        self.written += data


@pytest.mark.parametrize("room", [0, 1, 3, 4, 5, 9, 10, 11, 1000])
def test_what_the_socket_does_not_take_follows_through_the_transport(room: int) -> None:
    pieces = [b"abc", memoryview(b"-defg-")[1:5], b"", b"hijk"]
    sock, transport = RecordingSocket(room), BufferTransport()
    write_pieces(transport, sock, list(pieces))
    assert sock.taken + transport.written == b"abcdefghijk"
    assert len(sock.taken) == min(room, 11)


def test_a_busy_write_buffer_keeps_the_order() -> None:
    sock, transport = RecordingSocket(1000), BufferTransport(b"earlier")
    write_pieces(transport, sock, [b"later"])
    assert sock.taken == b"" and transport.written == b"later"


def test_a_failing_socket_leaves_everything_to_the_transport() -> None:
    sock, transport = RecordingSocket(1000, BrokenPipeError()), BufferTransport()
    write_pieces(transport, sock, [b"ab", memoryview(b"cd")])
    assert transport.written == b"abcd"


def test_no_socket_or_too_many_pieces_is_one_joined_write() -> None:
    transport = BufferTransport()
    write_pieces(transport, None, [b"ab"])
    assert transport.written == b"ab"
    sock, transport = RecordingSocket(10**9), BufferTransport()
    write_pieces(transport, sock, [b"x"] * (MAX_IOV + 1))
    assert sock.taken == b"" and transport.written == b"x" * (MAX_IOV + 1)


def test_only_plain_tcp_transports_offer_their_socket() -> None:
    assert direct_socket(StringTransport()) is None
    assert direct_socket(BufferTransport()) is None


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.expected = 0
        self.done: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.done is not None and len(self.data) >= self.expected:
            done, self.done = self.done, None
            done.callback(self.data)


@pytest_twisted.ensureDeferred
async def test_a_real_socket_gets_the_same_bytes_as_a_joined_write() -> None:
    receiver = Collect()
    receiver.expected = 3 * 1024 * 1024 + 3
    receiver.done = Deferred()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(lambda: receiver))
    try:
        sender = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Protocol())
        sock = direct_socket(sender.transport)
        assert sock is not None
        big = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffer takes at once
        write_pieces(sender.transport, sock, [b"a", big, b"b", memoryview(big), big, b"c"])
        data = await within(receiver.done, reactor, what="3 MiB to arrive")
        assert data == b"a" + big + b"b" + big + big + b"c"
        sender.transport.loseConnection()
    finally:
        await port.stopListening()


def test_peers_are_described_the_same_for_every_backend() -> None:
    def peer(address: Any, host: Any = None) -> str:
        return describe_peer(StringTransport(peerAddress=address, hostAddress=host))

    assert peer(IPv4Address("TCP", "127.0.0.1", 7)) == "127.0.0.1:7"
    assert peer(IPv6Address("TCP", "::1", 7)) == "[::1]:7"
    assert peer(UNIXAddress(b"/run/m.sock")) == "unix:/run/m.sock"
    assert peer(UNIXAddress(None), UNIXAddress(b"/run/m.sock")) == "unix:/run/m.sock"  # an anonymous client
    assert peer(UNIXAddress(None), UNIXAddress(None)) == "unix:?"


def test_the_speedups_old_homes_still_import_and_say_where_they_moved() -> None:
    """``workerwire.socket_write`` and ``workerwire.allocator`` moved into
    ``workerwire.speedups`` (not part of the backend API); a backend importing
    the old names keeps working and is told the new one."""
    import workerwire.allocator as old_allocator
    import workerwire.socket_write as old_socket_write
    from workerwire.speedups import allocator

    with pytest.warns(DeprecationWarning, match=r"workerwire\.speedups\.socket_write\.write_pieces"):
        from workerwire.socket_write import write_pieces as old_write_pieces
    assert old_write_pieces is write_pieces
    with pytest.warns(DeprecationWarning, match=r"workerwire\.speedups\.allocator\.prime_allocator"):
        assert old_allocator.prime_allocator is allocator.prime_allocator
    with pytest.raises(AttributeError):
        old_socket_write.no_such_name  # noqa: B018
