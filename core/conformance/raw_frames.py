"""Raw frames: a worker link written byte by byte, for the hostile-peer tests.

A backend offers two hooks on its :class:`workerwire.backend.Backend`:

* :meth:`~workerwire.backend.Backend.raw_frames` -- given one of its own
  worker connectors that has logged in, a :class:`RawFrames` that owns that
  link from then on (the connector interprets nothing more on it);
* :meth:`~workerwire.backend.Backend.raw_connect` -- a :class:`RawFrames` on a
  fresh link to the master at an address, that has not logged in (network
  backends: :func:`dial_raw` with the backend's frames).  A backend whose
  master holds no connection before the login (workers log in through a
  broker's queue) makes the fresh link what its master does hold: a login
  request under way (amqp: the first part of one in the pool's login queue,
  closed when the master answers it with a refusal).

Either way, what the master sends is only counted (:attr:`RawFrames.received`,
:attr:`RawFrames.tail`), and what the test writes goes to the master as it is.
The backend builds the frames by hand -- a few lines per *kind* -- so that a
frame may carry what its encoder refuses to build (a value nested 60,000
levels deep, an update of a command that is not running, a login after the
login).  The kinds:

=====================  =========================================================
``request(name)``      a message the master answers with an error about *name*
``nested_update``      an update of a running command, a value nested *depth* deep
``login(name, pw)``    the backend's login with these credentials
``update(id, size)``   one update ``("stdout", "x" * size)`` of command *id*
``complete(id)``       the successful completion of command *id*
``oversized(size)``    at least *size* bytes of one frame that is valid so far
``garbage(n)``         *n* bytes that are not this backend's framing
=====================  =========================================================

Every kind is required on both links, and so are both hooks: a backend
without one fails those tests (none is skipped: a skip is not a pass).  On
the fresh link, ``login`` is the backend's login (on a backend whose login
is under way from the start, the rest of it) and after the login a second
one on the same link (on msgpack, whose login is the HTTP upgrade, an
upgrade request written into the WebSocket as a message).

The conformance suite (:mod:`workerwire.conformance.suite_hostile`) uses it to
play a peer that sends without reading, makes the master answer errors about
huge input, nests values too deep, stuffs or stalls the login, forges command
ids, speaks out of phase, overruns the output window and sends garbage.
"""

from __future__ import annotations

import abc
import random
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from ..budget import transport_queued
from ..endpoints import parse_client_address

__all__ = ["RawFrames", "TransportRawFrames", "dial_raw", "noise", "KINDS"]

#: The kinds a backend builds (the methods of :class:`RawFrames` of these names).
KINDS = ("request", "nested_update", "login", "update", "complete", "oversized", "garbage")


def noise(n: int, seed: int = 13) -> bytes:
    """*n* reproducible random bytes (for :meth:`RawFrames.garbage`)."""
    return random.Random(seed).randbytes(n)


class RawFrames(abc.ABC):
    """One worker link under the test's control (see the module)."""

    def __init__(self) -> None:
        #: Bytes received from the master since the takeover (for the null
        #: backend: bytes of its messages).
        self.received = 0
        #: The last 64 KiB received (a test looks for a name in the answers).
        self.tail = b""
        #: Fires when the link is gone (closed by either end).  A backend
        #: fires it with :meth:`link_closed`; required for links made by
        #: ``raw_connect``, where no ``Connection`` tells the test.
        self.closed: Deferred[None] = Deferred()

    def count(self, data: bytes) -> None:
        """What the backend calls for every read from the master instead of parsing it."""
        self.received += len(data)
        self.tail = (self.tail + data)[-64 * 1024:]

    def link_closed(self, reason: object = None) -> None:
        """What the backend calls when the link is gone (once or more)."""
        if not self.closed.called:
            self.closed.callback(None)

    def closing_too(self, then: Callable[..., object]) -> Callable[..., None]:
        """A replacement for the link's close callback *then* (such as a taken-over
        protocol's ``connectionLost``): fires :attr:`closed`, then calls *then*
        (so the connector still learns that its link is gone)."""

        def closed(*args: Any) -> None:
            self.link_closed()
            then(*args)

        return closed

    # -- kinds ---------------------------------------------------------------

    @abc.abstractmethod
    def request(self, name: str) -> bytes:
        """One message the master must answer with an error about *name*, an id
        or a name the peer made up (on amp and null an update of a command of
        that id, which is not running; on pb a call of a method of that name on
        the worker's perspective, which has none)."""

    @abc.abstractmethod
    def nested_update(self, command_id: str, depth: int) -> bytes:
        """An update of the running command *command_id* with one pair
        ``("stdout", value)`` whose value is *depth* lists nested in one
        another, the innermost empty, encoded by hand."""

    @abc.abstractmethod
    def login(self, name: str, password: str) -> bytes:
        """The frames by which a worker logs in as *name* with *password*
        (after the login: a second login on the same link)."""

    @abc.abstractmethod
    def update(self, command_id: str, payload_size: int) -> bytes:
        """One update message of command *command_id* carrying the single pair
        ``("stdout", "x" * payload_size)``, sent as the worker's own would be."""

    @abc.abstractmethod
    def complete(self, command_id: str) -> bytes:
        """The message that completes command *command_id* without an error."""

    @abc.abstractmethod
    def oversized(self, size: int) -> bytes:
        """At least *size* bytes that this backend's master reads as one frame
        (or login request) still under way -- valid so far, not yet finished."""

    @abc.abstractmethod
    def garbage(self, n: int) -> bytes:
        """*n* bytes (or about) that are not this backend's framing at all,
        such that the master can tell at once (e.g. an invalid type byte
        first, then :func:`noise`)."""

    # -- the link ------------------------------------------------------------

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send *data*, one frame (or several concatenated, on a backend
        whose link is a byte stream), to the master as it is (nothing once
        the link is gone)."""

    @abc.abstractmethod
    def unsent(self) -> int:
        """Bytes written here that the master has not taken yet (this end's
        write buffer), so a flooding test does not grow its own memory."""

    @abc.abstractmethod
    def stop_reading(self) -> None:
        """Read nothing more from the master: what it sends stays queued on
        its side (on a socket: in the kernel's buffers, then in the master's
        transport)."""


class TransportRawFrames(RawFrames):
    """:class:`RawFrames` whose link is a Twisted transport (:attr:`transport`):
    a backend over a byte stream writes only the kinds."""

    transport: Any = None

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed.called and not getattr(transport, "disconnected", False):
            transport.write(data)

    def unsent(self) -> int:
        return transport_queued(self.transport)

    def stop_reading(self) -> None:
        if self.transport is not None:
            self.transport.pauseProducing()


class _Counting(Protocol):
    def __init__(self, frames: TransportRawFrames, opening: bytes):
        self.frames = frames
        self.opening = opening

    def connectionMade(self) -> None:
        self.frames.transport = self.transport
        if self.opening:
            self.transport.write(self.opening)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.frames.count(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.frames.link_closed(reason)


async def dial_raw(reactor: Any, address: str, frames: TransportRawFrames, backend: str,
                   opening: bytes = b"") -> TransportRawFrames:
    """Connect *frames* to the master at *address* (a client endpoint string,
    as the backend's worker dials it) over a fresh link that writes *opening*
    first (e.g. a dialect's negotiation) and then only what the test writes."""
    endpoint = parse_client_address(reactor, address, backend)
    await endpoint.connect(Factory.forProtocol(lambda: _Counting(frames, opening)))
    return frames
