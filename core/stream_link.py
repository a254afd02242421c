"""What a stream backend's protocol does with its transport, on either end.

Every backend over a byte stream (TCP, TLS, UNIX sockets) does the same
things with its transport, whatever its framing: when the connection is
made it names the peer, sets TCP keepalive (the OS notices a vanished peer
even with workerwire's keepalive off) and ``TCP_NODELAY`` (calls are small
and wait for answers), primes the allocator (:mod:`workerwire.speedups.allocator`),
and bounds what the link holds queued for the peer with a
:class:`~workerwire.budget.SendBudget` (pausing reading from a peer that
reads nothing, dropping it if it stays so); on the master, every read before
the login counts against the login ticket's input limit; a protocol error
drops the link with one log line that names a client of another protocol
(:mod:`workerwire.foreign`); the link's bytes are counted
(:mod:`workerwire.link_bytes`).  :class:`StreamLink` is that, one per
connection; ``pb``, ``amp``, ``msgpack`` (from autobahn's transport callbacks)
and the reference backend (``examples/jsonlines``) use it.
:class:`StreamServerFactory` is a master port's factory for a protocol that
keeps its link in ``protocol.stream``.

Three things differ between backends and are the link's parameters: whether
a graceful close that the peer does not let finish is aborted after some
seconds (``abort_after``); whether reads are large from the start
(``large_reads``); and what the protocol does when the budget lets it read
again (``resumed``: a protocol that stops handling a read's messages when
:attr:`StreamLink.paused` handles the rest of that read there).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import abstract
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from .addresses import describe_peer
from .speedups.allocator import prime_allocator
from .budget import SendBudget, transport_queued
from .foreign import guess_protocol
from .link_bytes import LinkBytes
from .login_guard import MAX_LOGIN_INPUT, CloseAtOnce, LoginTicket
from .speedups.socket_write import direct_socket

__all__ = ["StreamLink", "StreamServerFactory", "tune_transport"]

_log = Logger()

#: Bytes asked of a plain TCP socket per read once a read filled Twisted's
#: default of 64 KiB (a stream), or from the connection on with
#: ``large_reads``: four times fewer reads of streamed output.  By default
#: idle connections keep the default (no attribute per transport: a login
#: storm's memory per connection is unchanged).
READ_SIZE = 256 * 1024
_DEFAULT_READ = abstract.FileDescriptor.bufferSize


def tune_transport(transport: Any) -> None:
    """TCP keepalive and no Nagle delay on *transport*, if it is TCP (else nothing)."""
    for option in ("setTcpKeepAlive", "setTcpNoDelay"):
        setter = getattr(transport, option, None)
        if setter is not None:
            try:
                setter(True)
            except Exception:
                pass  # not a TCP socket after all


class StreamLink:
    """One connection's transport plumbing (see the module docstring).

    :param options: the link's :class:`~workerwire.backend.LinkOptions`.
    :param clock: the reactor.
    :param label: names this end in log lines, e.g. ``"pb master"``.
    :param stats: counters the budget adds to (a master passes its listener's
        ``login_guard.stats``).
    :param queued: bytes held for the peer beyond the transport's own buffer
        (default: none).
    :param resumed: called after reading resumed (the budget's resume): a
        protocol that stopped handling a read's messages at :attr:`paused`
        handles the rest of that read there.
    :param abort_after: seconds a graceful :meth:`close` may take to flush
        before the link is aborted (default: as long as the peer takes).
    :param large_reads: :data:`READ_SIZE` reads of a plain TCP socket from
        the connection on, not only once a read filled the default.
    :param carrier: the protocol the backend's own starts in, if any
        (msgpack's login is an HTTP upgrade: ``"http"``): a client that
        speaks it is not named as a client of another protocol.
    :ivar ticket: the master's :class:`~workerwire.login_guard.LoginTicket`
        until the login finished (set it from ``buildProtocol``).
    :ivar closing: this end is closing the link (or it is gone): ignore input.
    :ivar paused: the budget paused reading: stop handling the read's messages.
    :ivar lost: the connection is gone (:meth:`gone` was called).
    :ivar socket: the socket of a plain TCP transport, which
        :mod:`workerwire.speedups.socket_write` writes to directly; else None.
    :ivar drop_reason: why this end dropped the link, if it did (report it as
        the loss's reason).
    :ivar worker_name: set once known, for log lines.
    :ivar link_bytes: the link's :class:`~workerwire.link_bytes.LinkBytes`
        (a side sets its listener's or connector's counter; the protocol
        adds what it reads and writes); closed by :meth:`gone`.
    """

    def __init__(self, options: Any, clock: Any, label: str, stats: Any = None,
                 queued: Callable[[], int] | None = None, resumed: Callable[[], None] | None = None,
                 abort_after: float | None = None, large_reads: bool = False, carrier: str | None = None):
        self.options = options
        self.clock = clock
        self.label = label
        self.stats = stats
        self._queued_extra = queued
        self._resumed = resumed
        self._abort_after = abort_after
        self._large_reads = large_reads
        self._carrier = carrier
        self._abort_call: IDelayedCall | None = None
        self.transport: Any = None
        self.socket: Any = None
        self.peer = "?"
        self.ticket: LoginTicket | None = None
        self.budget: SendBudget | None = None
        self.closing = False
        self.paused = False
        self.lost = False
        self.drop_reason: str | None = None
        self.worker_name: str | None = None
        self.link_bytes = LinkBytes()

    def who(self) -> str:
        """The peer for log lines: the worker's name and address once known."""
        return f"worker {self.worker_name!r} at {self.peer}" if self.worker_name else self.peer

    # -- what the protocol calls --------------------------------------------------

    def made(self, transport: Any) -> None:
        """Call it from ``connectionMade``."""
        self.transport = transport
        self.peer = describe_peer(transport)
        self.socket = direct_socket(transport)
        if self._large_reads and self.socket is not None:
            transport.bufferSize = READ_SIZE
        prime_allocator()
        tune_transport(transport)
        extra = self._queued_extra
        self.budget = SendBudget(self.options, self.clock,
                                 (lambda: transport_queued(transport) + extra()) if extra is not None
                                 else (lambda: transport_queued(transport)),
                                 self.pause, self.resume, self.drop, self.who, self.label, self.stats)

    def read(self, data: bytes, refuse: Callable[[str], object]) -> bool:
        """Call it first in ``dataReceived``, with the read: adds it to
        :attr:`link_bytes`; true: handle the read (then :meth:`after_read`).
        False: leave it unread -- this end is closing (a refused or closing
        peer's further input is dropped), or the read crossed the master's
        pre-login input limit and *refuse* (the backend's protocol error)
        was called with that reason."""
        self.link_bytes.received += len(data)
        if self.closing:
            return False
        if not self.take(data):
            refuse(self.too_much_before_login())
            return False
        return True

    def take(self, data: bytes) -> bool:
        """Call it with each read, before handling it; false: the master's
        pre-login input limit was crossed (call :meth:`protocol_error`).
        A read that filled the default buffer makes later reads of a plain
        TCP socket :data:`READ_SIZE` bytes."""
        if len(data) == _DEFAULT_READ and self.socket is not None:
            self.transport.bufferSize = READ_SIZE
        return self.ticket is None or self.ticket.take(data)

    def after_read(self) -> None:
        """Call it after handling a read (the budget's check)."""
        if self.budget is not None and not self.closing:
            self.budget.after_read()

    def gone(self) -> None:
        """Call it from ``connectionLost``."""
        self.closing = self.lost = True
        self.socket = None
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self.budget is not None:
            self.budget.stop()
        if self.ticket is not None:
            self.ticket.done()
        self.link_bytes.close()

    # -- what the link does -------------------------------------------------------

    def pause(self) -> None:
        """Stop reading from the peer (the budget's pause): sets :attr:`paused`."""
        self.paused = True
        if self.transport is not None:
            self.transport.pauseProducing()

    def resume(self) -> None:
        """Read from the peer again, then call the ``resumed`` hook."""
        if self.transport is not None and not self.closing:
            self.paused = False
            self.transport.resumeProducing()
            if self._resumed is not None:
                self._resumed()

    def drop(self, why: str) -> None:
        """Abort the link as a misbehaving peer's (the budget's verdict)."""
        self.abort(f"dropped as a misbehaving peer: {why}")

    def abort(self, reason: str) -> None:
        """Abort the link now (also while a graceful close is under way);
        *reason* becomes :attr:`drop_reason` (the first one wins)."""
        if self.lost or self.drop_reason is not None:
            return
        self.closing = True
        self.drop_reason = reason
        if self.transport is not None:
            self.transport.abortConnection()

    def close(self, abort: bool = False) -> None:
        """Close the link (*abort*: without waiting for pending writes; else
        aborted after ``abort_after`` seconds, if the link has that limit)."""
        if self.transport is None or self.lost:
            return
        if abort:
            self.transport.abortConnection()
            return
        self.transport.loseConnection()
        if self._abort_after is not None and self._abort_call is None:
            self._abort_call = self.clock.callLater(self._abort_after, self._flush_overran)

    def _flush_overran(self) -> None:
        self._abort_call = None
        if self.transport is not None and not self.lost:
            self.transport.abortConnection()

    def protocol_error(self, reason: str, backend: str) -> None:
        """The peer sent what *backend*'s protocol does not allow: one log
        line (naming a client of another protocol before the login), then
        abort."""
        if self.closing:
            return
        self.log_protocol_error(reason, backend)
        self.abort(f"protocol error: {reason}")

    def log_protocol_error(self, reason: str, backend: str, action: str = "; closing that connection") -> None:
        """The log line of a protocol error (for a backend that closes in its
        own way, e.g. after answering the offending request): the peer, the
        reason (and a client of another protocol named), with the fields
        ``protocol_error``, ``peer_address``, ``why`` and ``link`` (the label)."""
        if self.ticket is not None and (self._carrier is None
                                        or guess_protocol(self.ticket.first_bytes) != self._carrier):
            reason += self.ticket.foreign_hint(backend)
        _log.warn("{backend} protocol error from {peer}: {why}{action}", backend=backend, peer=self.who(),
                  why=reason, action=action, protocol_error=True, peer_address=self.peer, link=self.label)

    @staticmethod
    def too_much_before_login() -> str:
        return f"more than {MAX_LOGIN_INPUT} bytes before logging in"


class StreamServerFactory(ServerFactory):
    """The factory of a stream backend's master port (``build_factory``'s
    answer): each accepted connection gets the protocol *build()* makes, with
    its login ticket in ``protocol.stream.ticket`` (from ``listener.admit``:
    the login timeout and the port's closing drop it with
    ``protocol.close(abort=True)``) and its byte counter in
    ``protocol.stream.link_bytes`` (one of ``listener.link_totals``) and
    this factory in ``protocol.factory``; a connection over a cap of
    unauthenticated ones gets :class:`~workerwire.login_guard.CloseAtOnce`
    instead.

    :param listener: the :class:`~workerwire.base_listener.BaseListener`.
    :param entry: the port's :class:`~workerwire.base_listener.OpenPort`.
    """

    noisy = False

    def __init__(self, listener: Any, entry: Any, build: Callable[[], Any]):
        self.listener = listener
        self.entry = entry
        self.build = build

    def buildProtocol(self, addr: Any) -> Any:
        proto = self.build()
        stream: StreamLink = proto.stream
        stream.ticket = self.listener.admit(self.entry, addr, lambda: proto.close(abort=True))
        if stream.ticket is None:
            return CloseAtOnce()  # at the cap of unauthenticated connections
        stream.link_bytes = self.listener.link_totals.open()
        proto.factory = self  # as Twisted's Factory.buildProtocol does (PB's broker tells its factory)
        return proto
