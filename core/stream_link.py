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
(:mod:`workerwire.foreign`).  :class:`StreamLink` is that, one per
connection; ``pb`` and the reference backend (``examples/jsonlines``) use it.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import abstract
from twisted.logger import Logger

from .addresses import describe_peer
from .speedups.allocator import prime_allocator
from .budget import SendBudget, transport_queued
from .login_guard import MAX_LOGIN_INPUT, LoginTicket
from .speedups.socket_write import direct_socket

__all__ = ["StreamLink", "tune_transport"]

_log = Logger()

#: Bytes asked of a plain TCP socket per read once a read filled Twisted's
#: default of 64 KiB (a stream): four times fewer reads of streamed output.
#: Idle connections keep the default (no attribute per transport: a login
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
    :ivar ticket: the master's :class:`~workerwire.login_guard.LoginTicket`
        until the login finished (set it from ``buildProtocol``).
    :ivar closing: this end is closing the link (or it is gone): ignore input.
    :ivar drop_reason: why this end dropped the link, if it did (report it as
        the loss's reason).
    :ivar worker_name: set once known, for log lines.
    """

    def __init__(self, options: Any, clock: Any, label: str, stats: Any = None,
                 queued: Callable[[], int] | None = None):
        self.options = options
        self.clock = clock
        self.label = label
        self.stats = stats
        self._queued_extra = queued
        self.transport: Any = None
        self.peer = "?"
        self.ticket: LoginTicket | None = None
        self.budget: SendBudget | None = None
        self.closing = False
        self.drop_reason: str | None = None
        self.worker_name: str | None = None

    def who(self) -> str:
        """The peer for log lines: the worker's name and address once known."""
        return f"worker {self.worker_name!r} at {self.peer}" if self.worker_name else self.peer

    # -- what the protocol calls --------------------------------------------------

    def made(self, transport: Any) -> None:
        """Call it from ``connectionMade``."""
        self.transport = transport
        self.peer = describe_peer(transport)
        prime_allocator()
        tune_transport(transport)
        extra = self._queued_extra
        self.budget = SendBudget(self.options, self.clock,
                                 (lambda: transport_queued(transport) + extra()) if extra is not None
                                 else (lambda: transport_queued(transport)),
                                 self.pause, self.resume, self.drop, self.who, self.label, self.stats)

    def take(self, data: bytes) -> bool:
        """Call it with each read, before handling it; false: the master's
        pre-login input limit was crossed (call :meth:`protocol_error`).
        A read that filled the default buffer makes later reads of a plain
        TCP socket :data:`READ_SIZE` bytes."""
        if len(data) == _DEFAULT_READ and direct_socket(self.transport) is not None:
            self.transport.bufferSize = READ_SIZE
        return self.ticket is None or self.ticket.take(data)

    def after_read(self) -> None:
        """Call it after handling a read (the budget's check)."""
        if self.budget is not None and not self.closing:
            self.budget.after_read()

    def gone(self) -> None:
        """Call it from ``connectionLost``."""
        self.closing = True
        if self.budget is not None:
            self.budget.stop()
        if self.ticket is not None:
            self.ticket.done()

    # -- what the link does -------------------------------------------------------

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pauseProducing()

    def resume(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resumeProducing()

    def drop(self, why: str) -> None:
        """Abort the link as a misbehaving peer's (the budget's verdict)."""
        self.abort(f"dropped as a misbehaving peer: {why}")

    def abort(self, reason: str) -> None:
        """Abort the link now; *reason* becomes :attr:`drop_reason` (the first one wins)."""
        if self.closing:
            return
        self.closing = True
        self.drop_reason = reason
        if self.transport is not None:
            self.transport.abortConnection()

    def close(self, abort: bool = False) -> None:
        """Close the link (*abort*: without waiting for pending writes)."""
        if self.transport is None:
            return
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def protocol_error(self, reason: str, backend: str) -> None:
        """The peer sent what *backend*'s protocol does not allow: one log
        line (naming a client of another protocol before the login), then
        abort."""
        if self.closing:
            return
        self.log_protocol_error(reason, backend)
        self.abort(f"protocol error: {reason}")

    def log_protocol_error(self, reason: str, backend: str, action: str = "; closing that connection") -> None:
        if self.ticket is not None:
            reason += self.ticket.foreign_hint(backend)
        _log.warn("{backend} protocol error from {peer}: {reason}{action}", backend=backend, peer=self.peer,
                  reason=reason, action=action)

    @staticmethod
    def too_much_before_login() -> str:
        return f"more than {MAX_LOGIN_INPUT} bytes before logging in"
