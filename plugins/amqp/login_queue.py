"""What a master takes from its pool's login queue, before anyone logged in.

The login queue faces every client of the broker, as a TCP master's port
faces whoever can reach it, so it is held to the same pre-login rules
(:mod:`workerwire.login_guard`).  A login request is one message of at most
:data:`~workerwire.login_guard.MAX_LOGIN_INPUT` bytes (a worker's is a few
hundred).  :class:`LoginQueue` takes every AMQP message of the queue as it
came (its consumer does not join parts) and hands whole login requests on;
anything else is answered ``refused`` (a ``ProtocolError``) to its
``reply_to`` queue, which ends that login attempt as a closed connection
ends one over TCP, and logged (rate-limited, by the listener's guard):

* a message of another kind than ``login`` (an ``update`` before the login);
* a request over the limit, whole or in parts (refused as soon as its parts
  pass it, before they are all in);
* a request in parts that does not end within ``login_timeout``.

A request in parts (``headers.more``, which no worker needs) is held like a
TCP connection that has not finished its login: under a ticket of the
listener's login guard (its timer, its input limit, its caps on logins under
way), so at most ``max_unauthenticated_per_host`` requests (their senders are
unknown, so they count as one host: they hold no more of the listener's
``max_unauthenticated`` slots than one host may) of at most 64 KiB each are
held, each for at most ``login_timeout``.  (Before, the login queue joined
parts like any session's queue: up to ``max_message_size`` each, for any
number of reply queues, for ever.)
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.address import IPv4Address
from twisted.logger import Logger

from workerwire.errors import ProtocolError
from workerwire.login_guard import MAX_LOGIN_INPUT, LoginGuard, LoginTicket

from . import wire
from .broker import Message

__all__ = ["LoginQueue"]

_log = Logger()

#: Where a request in parts is counted by the guard's per-host cap: its sender
#: is known only by its reply queue (the ``peer`` it reports is in the body).
_UNKNOWN_SENDER = IPv4Address("TCP", "0.0.0.0", 0)


class _InParts:
    """A login request whose last part has not come yet."""

    __slots__ = ("ticket", "chunks", "correlation_id")

    def __init__(self, ticket: LoginTicket, correlation_id: str | None):
        self.ticket = ticket
        self.chunks: list[bytes] = []
        self.correlation_id = correlation_id


class LoginQueue:
    """The consumer of one pool's login queue at one master (see the module).

    :param request: called with every whole login request (``kind`` login,
        a ``reply_to``, at most the limit); it checks the body itself.
    :param refuse: answers a refusal to a reply queue:
        ``refuse(reply_to, correlation_id, error)``.
    :param where: names this master and pool in the log.
    """

    def __init__(self, guard: LoginGuard, request: Callable[[Message], None],
                 refuse: Callable[[str, str | None, Exception], Any], where: str):
        self.guard = guard
        self.request = request
        self.refuse = refuse
        self.where = where
        self._in_parts: dict[str, _InParts] = {}

    @property
    def in_parts(self) -> int:
        """Requests in parts held now."""
        return len(self._in_parts)

    def take(self, msg: Message) -> None:
        """One AMQP message from the login queue."""
        reply_to = msg.reply_to
        if not reply_to:
            self._log("a {message_kind!r} message without a reply queue; dropped", message_kind=msg.kind)
            return
        held = self._in_parts.pop(reply_to, None)
        if msg.kind != wire.LOGIN:
            self._end(held)
            self.bad(reply_to, msg.correlation_id,
                     f"a {msg.kind!r} message in the login queue, where only login requests belong "
                     "(log in first, then send to the session queue the welcome names)")
            return
        if held is None and not msg.more:
            if len(msg.body) > MAX_LOGIN_INPUT:
                self.bad(reply_to, msg.correlation_id, self._too_long(len(msg.body)))
                return
            self.request(msg)
            return
        if held is None:
            ticket = self.guard.admit(_UNKNOWN_SENDER, lambda: self._timed_out(reply_to))
            if ticket is None:  # the guard logged its cap
                self.refuse(reply_to, msg.correlation_id, ProtocolError(
                    "the master holds too many login requests in parts; send a login as one message"))
                return
            held = _InParts(ticket, msg.correlation_id)
        if not held.ticket.take(len(msg.body)):
            self._end(held)
            self.bad(reply_to, msg.correlation_id, self._too_long(held.ticket.received))
            return
        held.chunks.append(msg.body)
        if msg.more:
            self._in_parts[reply_to] = held
            return
        body = b"".join(held.chunks)
        self._end(held)
        self.request(Message(wire.LOGIN, reply_to, held.correlation_id, body))

    def bad(self, reply_to: str, correlation_id: str | None, why: str) -> None:
        """Refuse a request that broke the dialect, and say why in the log."""
        self._log("login attempt from queue {queue} refused: {why}", queue=reply_to, why=why)
        self.refuse(reply_to, correlation_id, ProtocolError(why))

    def close(self) -> None:
        """The consumer is gone (port closed, broker connection lost): forget every request."""
        held, self._in_parts = self._in_parts, {}
        for request in held.values():
            self._end(request)

    # -- internals ---------------------------------------------------------------

    def _timed_out(self, reply_to: str) -> None:
        """The guard's login timer: the request's last part did not come in time."""
        held = self._in_parts.pop(reply_to, None)
        if held is None:
            return
        self.bad(reply_to, held.correlation_id,
                 f"a login request in parts without its last part within {self.guard.options.login_timeout:g} s")

    def _too_long(self, size: int) -> str:
        return (f"a login request of {size} bytes or more, over the {MAX_LOGIN_INPUT}-byte limit before the "
                "login")

    @staticmethod
    def _end(held: _InParts | None) -> None:
        if held is not None:
            held.chunks.clear()
            held.ticket.done()

    def _log(self, fmt: str, **fields: Any) -> None:
        self.guard.log.emit("amqp bad login request", "warn", "{where}: " + fmt, where=self.where, **fields)
