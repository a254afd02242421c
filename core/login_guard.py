"""What a listener does about clients that have not logged in, for every backend.

A master's port faces whoever can reach it.  :class:`LoginGuard` (one per
listener, ``BaseListener.login_guard``) is the protocol-neutral part of its
defence; a backend's master side calls it at five points and nowhere else:

0. **listen**: ``endpoint.listen(guard.guarded(factory))``.  A connection
   that arrives while a cap below is reached then waits its turn in the
   listener's *waiting room* instead of being closed: it is accepted but not
   read, and the backend's factory builds its protocol only when a slot is
   free (connections are served in arrival order, one host after another).
   At most ``LinkOptions.max_waiting_logins`` wait; a connection still waiting
   after ``login_timeout`` is closed (and its login timer starts afresh once
   it is served).  So a fleet of workers that reconnects at once, even from
   one address behind a NAT, logs in at the pace the master can check logins
   instead of in waves of reconnect backoff, while a host that opens
   connections and never logs in still holds at most its share of the slots.
1. **accept**: ``ticket = guard.admit(addr, close)`` in the server factory's
   ``buildProtocol``.  ``None`` means the listener already holds
   ``LinkOptions.max_unauthenticated`` unauthenticated connections (or that
   source host holds ``max_unauthenticated_per_host``): return
   :class:`CloseAtOnce` instead of the backend's protocol (not ``None``, which
   a wrapping factory such as TLS's cannot take).  A ticket starts the login timer:
   *close* is called (and the timeout logged) if the login has not finished
   within ``login_timeout``.
2. **input**: ``ticket.take(data)`` for every read before the
   credentials were verified; ``False`` means the peer sent more than
   :data:`MAX_LOGIN_INPUT` bytes without logging in: a protocol error, before
   any frame it announced is buffered whole.
3. **credentials**: ``if not ticket.may_check(): ticket.throttled(name)`` and
   refuse without checking; else check them; on a refusal by the checker,
   ``await ticket.refused(name, refusal_reason(error))`` *then* answer the
   refusal (the delay grows with the host's failures, see below); on
   success ``ticket.verified()``.
4. **end**: ``ticket.done()`` once the login finished (attached or refused)
   or the connection is gone; it is idempotent.

Failed logins are counted per source host (an IPv4 address, an IPv6 /64, or
``local`` for UNIX sockets).  The first ``failed_login_grace`` are answered at
once; each later one waits ``failed_login_delay`` seconds, doubling per
failure up to ``failed_login_max_delay``.  A successful login is never
delayed.  While a host has :data:`HELD_PER_HOST` refusals waiting, its further
logins are refused at once *without checking the password*, so the rate of
guesses one host gets checked is bounded, and so is the number of
connections the delays hold.  A host's record is forgotten after
:data:`FORGET_AFTER` seconds without a failure; at most :data:`MAX_HOSTS`
records are kept (least recently failed dropped first).

Everything the guard logs (refusals with the worker name and the peer,
never a password; login timeouts; the caps) goes through a
:class:`RateLimitedLog`: per kind of line, at most :data:`LOG_BURST` lines per
:data:`LOG_WINDOW` seconds, then one summary line with the count and the
busiest hosts.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from . import observe
from .addresses import describe_address  # re-exported: it was defined here
from .backend import LinkOptions
from .foreign import KEPT_BYTES, foreign_hint

__all__ = [
    "CloseAtOnce",
    "GuardedFactory",
    "LoginGuard",
    "LoginTicket",
    "RateLimitedLog",
    "BadCredentials",
    "refusal_reason",
    "host_key",
    "describe_address",
    "GENERIC_REFUSAL",
    "MAX_LOGIN_INPUT",
    "HELD_PER_HOST",
    "MAX_HOSTS",
    "FORGET_AFTER",
    "LOG_BURST",
    "LOG_WINDOW",
]

_log = Logger()

#: What the peer hears for any refused login (it never learns which part was wrong).
GENERIC_REFUSAL = "login refused: unknown worker name or wrong password"
#: Bytes a connection may send before its credentials are verified (every
#: backend's whole login is far smaller).
MAX_LOGIN_INPUT = 64 * 1024
#: Refusals of one host that may wait for their delay at the same time.
HELD_PER_HOST = 16
#: Hosts whose failures are remembered.
MAX_HOSTS = 10_000
#: Seconds without a failure after which a host starts afresh.
FORGET_AFTER = 900.0
#: Lines of one kind logged per window before they are only counted.
LOG_BURST = 10
#: Seconds of a rate-limiting window.
LOG_WINDOW = 60.0
#: A cap burst ends when the count drained to this fraction of the cap.
_BURST_END = 0.75


class BadCredentials(UnauthorizedLogin):
    """The checker's refusal: the peer sees :data:`GENERIC_REFUSAL`; *reason*
    (for the master's log) says which part was wrong, never a password."""

    def __init__(self, reason: str):
        super().__init__(GENERIC_REFUSAL)
        self.reason = reason


def refusal_reason(error: BaseException) -> str:
    """What the log says about a refused login."""
    return getattr(error, "reason", None) or str(error) or type(error).__name__


def host_key(addr: Any) -> str:
    """The source "host" failures and caps are counted by.

    An IPv4 address as is; IPv6 by its /64 (one subscriber usually has a whole
    /64); an IPv4-mapped IPv6 address as the IPv4 address; anything without a
    host (UNIX sockets) is ``"local"``.
    """
    host = getattr(addr, "host", None)
    if not isinstance(host, str) or not host:
        return "local"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class CloseAtOnce(Protocol):
    """What a factory builds for a connection over a cap: it is dropped at once."""

    def connectionMade(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


# -- rate-limited logging -------------------------------------------------------


@dataclass
class _Window:
    started: float
    lines: int = 0
    suppressed: int = 0
    hosts: Counter[str] = field(default_factory=Counter)
    summary: Any = None  # IDelayedCall of the summary line


class RateLimitedLog:
    """Logs at most *burst* lines per kind per *window* seconds.

    Lines beyond that are counted (with their host); when the window ends one
    summary line says how many were not logged and which hosts sent most.
    """

    def __init__(self, clock: Any, logger: Logger = _log, burst: int = LOG_BURST, window: float = LOG_WINDOW):
        self.clock = clock
        self.logger = logger
        self.burst = burst
        self.window = window
        self._kinds: dict[str, _Window] = {}
        #: Lines logged and lines only counted, per kind, since the start.
        self.logged: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()

    def emit(self, kind: str, level: str, fmt: str, host: str = "?", **fields: Any) -> None:
        now = self.clock.seconds()
        win = self._kinds.get(kind)
        if win is None or (win.summary is None and now - win.started >= self.window):
            win = self._kinds[kind] = _Window(now)
        if win.lines < self.burst:
            win.lines += 1
            self.logged[kind] += 1
            getattr(self.logger, level)(fmt, log_kind=kind, **fields)
            return
        win.suppressed += 1
        self.suppressed[kind] += 1
        if host in win.hosts or len(win.hosts) < 1000:
            win.hosts[host] += 1
        if win.summary is None:
            win.summary = self.clock.callLater(max(0.0, win.started + self.window - now), self._summarize, kind)

    def _summarize(self, kind: str) -> None:
        win = self._kinds.pop(kind, None)
        if win is None or not win.suppressed:
            return
        top = ", ".join(f"{host} ({n})" for host, n in win.hosts.most_common(3))
        self.logged[kind] += 1
        self.logger.warn(
            "{count} more '{kind}' lines in the last {window:g} s were not logged one by one; "
            "most from: {top}", count=win.suppressed, kind=kind, window=self.window, top=top,
            log_kind=kind, log_summary=True)

    def flush(self) -> None:
        """Log every pending summary now and cancel its timer."""
        for kind, win in list(self._kinds.items()):
            if win.summary is not None and win.summary.active():
                win.summary.cancel()
                self._summarize(kind)
        self._kinds.clear()


# -- the guard ----------------------------------------------------------------


@dataclass
class _HostRecord:
    failures: int = 0
    last: float = 0.0
    held: int = 0


class LoginTicket:
    """One accepted connection until its login finished (see the module docstring)."""

    # A backend may keep its ticket as long as the connection: no dict each.
    __slots__ = ("guard", "host", "peer", "_close", "counted", "is_verified", "is_done", "received",
                 "first_bytes", "_timer", "_held", "on_done")

    def __init__(self, guard: "LoginGuard", host: str, peer: str, close: Callable[[], None]):
        self.guard = guard
        self.host = host
        self.peer = peer
        self._close = close
        #: True while the connection counts as unauthenticated.
        self.counted = True
        self.is_verified = False
        self.is_done = False
        self.received = 0
        #: The first bytes the client sent (see :meth:`take`).
        self.first_bytes = b""
        self._timer: Any = None
        self._held: tuple[_HostRecord, Any, Deferred[None]] | None = None
        #: Called once by :meth:`done` (the listener forgets the ticket).
        self.on_done: Callable[[], None] | None = None

    # -- input ----------------------------------------------------------------

    def take(self, data: bytes | int) -> bool:
        """Account the bytes read (or their number); ``False`` once more than
        :data:`MAX_LOGIN_INPUT` arrived before the credentials were verified.

        Given the bytes, the first :data:`~workerwire.foreign.KEPT_BYTES` are
        kept for :meth:`foreign_hint`.
        """
        if self.is_verified or self.is_done:
            return True
        if isinstance(data, int):
            n = data
        else:
            n = len(data)
            if len(self.first_bytes) < KEPT_BYTES:
                self.first_bytes += bytes(data[:KEPT_BYTES - len(self.first_bytes)])
        self.received += n
        return self.received <= MAX_LOGIN_INPUT

    def foreign_hint(self, backend: str) -> str:
        """What the client seems to speak if not *backend* (see :mod:`workerwire.foreign`), or ``""``."""
        return "" if self.is_verified else foreign_hint(self.first_bytes, backend)

    # -- credentials ----------------------------------------------------------

    def may_check(self) -> bool:
        """``False`` while this host has :data:`HELD_PER_HOST` refusals waiting:
        refuse at once, without checking (and call :meth:`throttled`)."""
        record = self.guard._record(self.host, create=False)
        return record is None or record.held < min(HELD_PER_HOST, self.guard.options.max_unauthenticated_per_host)

    def throttled(self, name: Any) -> None:
        """A login refused without checking (see :meth:`may_check`); counts as a failure."""
        record = self.guard._record(self.host)
        record.failures += 1
        record.last = self.guard.clock.seconds()
        self.guard.stats["throttled"] += 1
        self.guard.log.emit(
            "throttled login", "warn",
            "{backend}: login of {name!r} from {peer} refused without checking: {held} refusals of "
            "{host} are already waiting ({failures} failed logins)",
            host=self.host, backend=self.guard.backend, name=_name(name), peer=self.peer, held=record.held,
            failures=record.failures, login_refused=True, peer_address=self.peer)
        observe.login_refused(self.guard, self.guard.backend, _name(name), self.peer, observe.LOGIN_THROTTLED)

    def refused(self, name: Any, reason: str) -> Deferred[None]:
        """The checker refused the credentials: log it and return a Deferred that
        fires when the refusal may be answered (at once within the grace)."""
        guard = self.guard
        record = guard._record(self.host)
        record.failures += 1
        record.last = guard.clock.seconds()
        delay = guard.delay_for(record.failures)
        guard.stats["refused"] += 1
        guard.log.emit(
            "failed login", "warn",
            "{backend}: login from {peer} refused: {reason}{delayed}",
            host=self.host, backend=guard.backend, peer=self.peer, reason=reason, worker=_name(name),
            delayed=f" (failure {record.failures} from {self.host}; answered in {delay:g} s)" if delay else "",
            login_refused=True, peer_address=self.peer)
        observe.login_refused(guard, guard.backend, _name(name), self.peer, reason)
        if delay <= 0 or self.is_done:
            return succeed(None)
        guard.stats["delayed"] += 1
        record.held += 1
        d: Deferred[None] = Deferred()
        call = guard.clock.callLater(delay, self._release_held)
        self._held = (record, call, d)
        return d

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        record, call, d = held
        record.held -= 1
        if call.active():
            call.cancel()
        d.callback(None)

    def verified(self) -> None:
        """The credentials were good: no longer unauthenticated (input is no
        longer limited); the login timer runs on until :meth:`done`."""
        self.is_verified = True
        self.guard._uncount(self)

    def done(self) -> None:
        """The login finished or the connection is gone (idempotent)."""
        if self.is_done:
            return
        self.is_done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._release_held()
        self.guard._uncount(self)
        on_done, self.on_done = self.on_done, None  # called once; holds nothing after
        if on_done is not None:
            on_done()

    def _timed_out(self) -> None:
        self._timer = None
        if self.is_done:
            return
        guard = self.guard
        guard.stats["timed_out"] += 1
        guard.log.emit(
            "login timeout", "info", "{backend}: no login from {peer} within {timeout:g} s; closing the connection",
            host=self.host, backend=guard.backend, peer=self.peer, timeout=guard.options.login_timeout,
            login_timeout=True, peer_address=self.peer)
        self.done()
        self.close()

    def close(self) -> None:
        try:
            self._close()
        except Exception:
            _log.failure("closing the connection from {peer} failed", peer=self.peer)

    def __repr__(self) -> str:
        return f"<LoginTicket {self.peer} {'verified' if self.is_verified else 'unauthenticated'}>"


def _name(name: Any) -> str:
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    text = str(name)
    return text if len(text) <= 100 else text[:100] + "..."


class LoginGuard:
    """The login defences of one listener (see the module docstring).

    :ivar stats: counters since the start: ``accepted``, ``closed_at_cap``,
        ``timed_out``, ``refused``, ``delayed``, ``throttled``.
    """

    def __init__(self, options: LinkOptions, clock: Any, backend: str = "?"):
        self.options = options
        self.clock = clock
        self.backend = backend
        self.log = RateLimitedLog(clock)
        self.stats: Counter[str] = Counter()
        self._open: set[LoginTicket] = set()
        self._per_host: Counter[str] = Counter()
        self._hosts: OrderedDict[str, _HostRecord] = OrderedDict()
        #: Cap bursts in progress: "*" (the listener's cap) or a host -> connections closed.
        self._bursts: dict[str, int] = {}
        #: The waiting room: host -> its waiting connections, oldest first;
        #: hosts in the order they are served next.
        self._waiting: OrderedDict[str, deque[_WaitingLogin]] = OrderedDict()
        self._waiting_count = 0
        self._serve_call: Any = None
        self._waiting_logged = False

    @property
    def waiting(self) -> int:
        """Connections in the waiting room (accepted, not read, no protocol yet)."""
        return self._waiting_count

    @property
    def unauthenticated(self) -> int:
        """Connections accepted whose credentials are not verified yet."""
        return len(self._open)

    def unauthenticated_from(self, host: str) -> int:
        return self._per_host.get(host, 0)

    def failures_of(self, host: str) -> int:
        record = self._record(host, create=False)
        return 0 if record is None else record.failures

    def delay_for(self, failures: int) -> float:
        """Seconds the refusal answering failure number *failures* of a host waits."""
        beyond = failures - self.options.failed_login_grace
        if beyond <= 0:
            return 0.0
        return float(min(self.options.failed_login_max_delay,
                         self.options.failed_login_delay * 2.0 ** min(beyond - 1, 60)))

    # -- listen -------------------------------------------------------------------

    def guarded(self, factory: Factory) -> "GuardedFactory":
        """*factory* behind this guard's waiting room: listen with the result."""
        return GuardedFactory(self, factory)

    def _has_room(self, host: str) -> bool:
        """May a connection from *host* be served now, ahead of nobody?"""
        if self._serve_call is not None or self._waiting.get(host):
            return False  # others wait for the slot that was just freed
        return (len(self._open) < self.options.max_unauthenticated
                and self._per_host[host] < self.options.max_unauthenticated_per_host)

    def _may_wait(self) -> bool:
        return self._waiting_count < self.options.max_waiting_logins

    def _enqueue(self, waiter: "_WaitingLogin") -> None:
        queue = self._waiting.get(waiter.host)
        if queue is None:
            queue = self._waiting[waiter.host] = deque()
        queue.append(waiter)
        self._waiting_count += 1
        self.stats["waited"] += 1
        if not self._waiting_logged:
            self._waiting_logged = True
            self.log.emit(
                "waiting room", "info",
                "{backend}: at the cap of unauthenticated connections; new connections wait their turn "
                "(at most {room}; the first from {peer})",
                host=waiter.host, backend=self.backend, room=self.options.max_waiting_logins, peer=waiter.peer)

    def _dequeue(self, waiter: "_WaitingLogin") -> None:
        queue = self._waiting.get(waiter.host)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            return
        self._waiting_count -= 1
        if not queue:
            del self._waiting[waiter.host]

    def _schedule_serving(self) -> None:
        if self._waiting_count and self._serve_call is None:
            # A turn later: a slot is freed deep inside a backend's login
            # code, which should not run another connection's start there.
            self._serve_call = self.clock.callLater(0, self._serve_waiting)

    def _serve_waiting(self) -> None:
        """Serve waiting connections while there are free slots, the hosts in turn."""
        self._serve_call = None
        cap, per_host = self.options.max_unauthenticated, self.options.max_unauthenticated_per_host
        while self._waiting_count and len(self._open) < cap:
            host = next((h for h in self._waiting if self._per_host[h] < per_host), None)
            if host is None:
                break  # every waiting host holds all its slots
            queue = self._waiting[host]
            waiter = queue.popleft()
            self._waiting_count -= 1
            if queue:
                self._waiting.move_to_end(host)
            else:
                del self._waiting[host]
            waiter.serve()
        if not self._waiting_count and self._waiting_logged:
            self._waiting_logged = False
            self.log.emit("waiting room", "info", "{backend}: the waiting room is empty again",
                          host="*", backend=self.backend)

    # -- accept -----------------------------------------------------------------

    def admit(self, addr: Any, close: Callable[[], None]) -> LoginTicket | None:
        """A connection was accepted from *addr*: its ticket, or ``None`` when a
        cap is reached (close it at once)."""
        host = host_key(addr)
        peer = describe_address(addr)
        if len(self._open) >= self.options.max_unauthenticated:
            self._cap_hit("*", host, peer)
            return None
        if self._per_host[host] >= self.options.max_unauthenticated_per_host:
            self._cap_hit(host, host, peer)
            return None
        ticket = LoginTicket(self, host, peer, close)
        self._open.add(ticket)
        self._per_host[host] += 1
        self.stats["accepted"] += 1
        ticket._timer = self.clock.callLater(self.options.login_timeout, ticket._timed_out)
        return ticket

    def _cap_hit(self, key: str, host: str, peer: str, waiting_room_full: bool = False) -> None:
        self.stats["closed_at_cap"] += 1
        if key in self._bursts:
            self._bursts[key] += 1
            return
        self._bursts[key] = 1
        if key == "*":
            what = f"its cap of {self.options.max_unauthenticated} unauthenticated connections"
        else:
            what = f"its cap of {self.options.max_unauthenticated_per_host} unauthenticated connections from {host}"
        if waiting_room_full:
            what += f" and {self.options.max_waiting_logins} connections wait for a slot (max_waiting_logins)"
        self.log.emit(
            "unauthenticated cap", "warn",
            "{backend}: the listener is at {what}; closing new connections at once (the first from {peer})",
            host=host, backend=self.backend, what=what, peer=peer, cap_reached=True)

    def _uncount(self, ticket: LoginTicket) -> None:
        if not ticket.counted:
            return
        ticket.counted = False
        self._open.discard(ticket)
        self._per_host[ticket.host] -= 1
        left = self._per_host[ticket.host]
        if left <= 0:
            del self._per_host[ticket.host]
        if self._bursts:
            self._end_burst(ticket.host, left, self.options.max_unauthenticated_per_host)
            self._end_burst("*", len(self._open), self.options.max_unauthenticated)
        self._schedule_serving()

    def _end_burst(self, key: str, count: int, cap: int) -> None:
        if key not in self._bursts or count > cap * _BURST_END:
            return
        closed = self._bursts.pop(key)
        self.log.emit(
            "unauthenticated cap", "info",
            "{backend}: below the cap{of} again; {closed} connections were closed at once meanwhile",
            host=key, backend=self.backend, of="" if key == "*" else f" for {key}", closed=closed, cap_reached=False)

    # -- failure records ------------------------------------------------------------

    def _record(self, host: str, create: bool = True) -> _HostRecord:
        record = self._hosts.get(host)
        now = self.clock.seconds()
        if record is not None and record.held == 0 and now - record.last > FORGET_AFTER:
            del self._hosts[host]
            record = None
        if record is None:
            if not create:
                return None  # type: ignore[return-value]
            record = self._hosts[host] = _HostRecord(last=now)
            while len(self._hosts) > MAX_HOSTS:
                self._hosts.popitem(last=False)
        else:
            self._hosts.move_to_end(host)
        return record

    # -- the end ------------------------------------------------------------------

    def stop(self) -> None:
        """Close every connection still logging in or waiting; log pending summaries."""
        if self._serve_call is not None and self._serve_call.active():
            self._serve_call.cancel()
        self._serve_call = None
        for queue in list(self._waiting.values()):
            for waiter in list(queue):
                waiter.close()
        for ticket in list(self._open):
            ticket.done()
            ticket.close()
        self.log.flush()


# -- the waiting room -------------------------------------------------------------


class GuardedFactory(Factory):
    """A server factory that lets connections over a cap wait (see the module
    docstring, point 0); everything else is the wrapped factory's."""

    noisy = False

    def __init__(self, guard: LoginGuard, factory: Factory):
        self.guard = guard
        self.wrapped = factory
        self._waiters: set[_WaitingLogin] = set()

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        # The port closed: nobody will serve what waits for it.
        for waiter in list(self._waiters):
            waiter.close()
        self.wrapped.doStop()

    def logPrefix(self) -> str:
        prefix = getattr(self.wrapped, "logPrefix", None)
        return prefix() if callable(prefix) else type(self.wrapped).__name__

    def buildProtocol(self, addr: Any) -> Any:
        guard = self.guard
        host = host_key(addr)
        if guard._has_room(host):
            return self.wrapped.buildProtocol(addr)
        if guard._may_wait():
            return _WaitingLogin(self, addr, host)
        over = "*" if len(guard._open) >= guard.options.max_unauthenticated else host
        guard._cap_hit(over, host, describe_address(addr), waiting_room_full=True)
        return CloseAtOnce()


class _WaitingLogin(Protocol):
    """A connection in the waiting room: unread until :meth:`serve` builds the
    backend's protocol for it; then it only passes input and loss on."""

    inner: Any = None

    def __init__(self, factory: GuardedFactory, addr: Any, host: str):
        self.owner = factory
        self.addr = addr
        self.host = host
        self.peer = describe_address(addr)
        self._timer: Any = None
        self._early: list[bytes] = []

    def logPrefix(self) -> str:
        inner = self.inner
        return inner.logPrefix() if inner is not None and hasattr(inner, "logPrefix") else "waiting login"

    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]
        guard = self.owner.guard
        self.owner._waiters.add(self)
        self._timer = guard.clock.callLater(guard.options.login_timeout, self._waited_too_long)
        guard._enqueue(self)

    def serve(self) -> None:
        """A slot is free: hand the connection to the backend's protocol."""
        self._forget()
        transport: Any = self.transport  # a TCP/UNIX/TLS transport (ITransport lacks abort and resume)
        inner = self.owner.wrapped.buildProtocol(self.addr)
        if inner is None:
            transport.abortConnection()
            return
        self.inner = inner
        inner.makeConnection(transport)
        early, self._early = self._early, []
        for data in early:
            inner.dataReceived(data)
        transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.dataReceived(data)
        elif sum(map(len, self._early)) + len(data) <= MAX_LOGIN_INPUT:
            self._early.append(data)  # read before the pause took effect
        else:
            self.close()

    def connectionLost(self, reason: Any = None) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connectionLost(reason)
            return
        self._forget()
        self.owner.guard._dequeue(self)

    def _waited_too_long(self) -> None:
        self._timer = None
        guard = self.owner.guard
        guard.stats["wait_timed_out"] += 1
        guard.log.emit(
            "login timeout", "info",
            "{backend}: {peer} waited {timeout:g} s for a free login slot; closing the connection",
            host=self.host, backend=guard.backend, peer=self.peer, timeout=guard.options.login_timeout,
            login_timeout=True, peer_address=self.peer)
        self.close()

    def close(self) -> None:
        """Leave the waiting room and drop the connection."""
        self._forget()
        self.owner.guard._dequeue(self)
        transport: Any = self.transport
        if transport is not None and self.inner is None:
            transport.abortConnection()

    def _forget(self) -> None:
        self.owner._waiters.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
