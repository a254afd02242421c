"""Writing a large message's pieces to a TCP connection without joining them.

A backend that builds a message as a list of pieces (headers, and output
strings it does not want to copy) hands them to :func:`write_pieces`.  While
the transport's write buffer is empty, they go to the socket at once with one
scatter-gather ``sendmsg``: no copy in this process (joining them, then
Twisted joining its write buffer, were two copies of every output byte, and
the allocator faulted the fresh buffers in).  Only what the socket did not
take is joined and handed to the transport, as everything is when its buffer
holds something, so the bytes reach the peer exactly as
``transport.write(b"".join(pieces))`` would send them, in order.

The emptiness check reads Twisted's ``FileDescriptor`` buffer attributes
(``_tempDataBuffer``, ``dataBuffer``, ``offset``); :func:`direct_socket`
offers a socket only for a plain TCP transport that has all of them, so a
Twisted that changes them, TLS, UNIX sockets and anything else simply get
``transport.write``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["direct_socket", "write_pieces", "MAX_IOV"]

#: Transports whose socket may be written to directly.
_PLAIN_TCP = (tcp.Server, tcp.Client)
_BUFFER_ATTRIBUTES = ("_tempDataBuffer", "dataBuffer", "offset", "connected", "disconnecting", "socket")
#: Most pieces handed to one ``sendmsg`` (Linux's IOV_MAX is 1024); longer
#: lists are joined and written.
MAX_IOV = 256


def direct_socket(transport: Any) -> Any:
    """The socket :func:`write_pieces` may send on for *transport*, or None
    (not a plain TCP transport of a Twisted with the expected buffer)."""
    if type(transport) in _PLAIN_TCP and all(hasattr(transport, a) for a in _BUFFER_ATTRIBUTES):
        return transport.socket
    return None


def write_pieces(transport: Any, sock: Any, pieces: list[Any]) -> None:
    """Write the concatenation of *pieces* (bytes and memoryviews) to *transport*.

    *sock* is :func:`direct_socket` of the transport, or None (then, and
    whenever the transport's buffer holds something, this is
    ``transport.write(b"".join(pieces))``)."""
    if (sock is not None and len(pieces) <= MAX_IOV and not transport._tempDataBuffer
            and transport.offset >= len(transport.dataBuffer) and transport.connected
            and not transport.disconnecting):
        try:
            sent = sock.sendmsg(pieces)
        except OSError:
            sent = 0  # would block, or broken: the transport finds out
        if sent:
            for i, piece in enumerate(pieces):
                n = len(piece)
                if sent < n:
                    pieces = pieces[i:]
                    pieces[0] = memoryview(piece)[sent:]
                    break
                sent -= n
            else:
                return
    transport.write(b"".join(pieces))
