"""Master side of the amqp backend: pool membership, logins, sessions.

Each open port is one membership of this master in a pool
(:class:`_Membership`): a broker connection, an exclusive queue
``workerwire.<pool>.master.<name>`` (a second master with that name is "port
in use"), and a consumer on the pool's login queue, which every master of
the pool consumes (competing consumers: whichever takes a request serves it).

A good login makes a session: a channel of its own, on which the master
declares the worker's presence lock, the exclusive queue
``workerwire.<pool>.worker.<name>``, and the session's own exclusive queue
``workerwire.<pool>.session.<name>.<id>`` that the worker publishes to.  The
broker lets one connection own the lock, so a session of the same worker at
any other master of the pool is refused as a duplicate; within this master a
second login is offered to the master's ``newConnection`` as on every backend.
When the owning master dies, the broker deletes the lock and the worker can
log in anywhere.
"""

from __future__ import annotations

import ipaddress
import traceback
import uuid
from typing import Any

from pika.exceptions import ChannelClosedByBroker
from twisted.cred.credentials import UsernamePassword
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire.backend import LinkOptions
from workerwire.backoff import Backoff
from workerwire.base_connection import BaseConnection
from workerwire.budget import SendBudget
from workerwire.base_listener import BaseListener, OpenPort
from workerwire.errors import AddressError, ConnectionLost, DuplicateWorker, LoginRefused, ProtocolError
from workerwire.login_guard import MAX_LOGIN_INPUT, BadCredentials, refusal_reason
from workerwire.master import MasterHooks
from workerwire.pending import PendingRequests, serve_request
from workerwire.transfer import split_refs
from workerwire.values import encode

from . import wire
from .address import DialSpec, PortSpec, parse_port, queue_name
from .broker import BrokerLink, Mailbox, Message, connect
from .login_queue import LoginQueue

__all__ = ["AMQPListener", "AMQPConnection", "LOGIN_PREFETCH", "SESSION_PREFETCH"]

_log = Logger()

#: Login requests one master takes from the pool's queue before answering
#: earlier ones; the rest wait in the queue for any master of the pool.
LOGIN_PREFETCH = 16
#: Messages of one session the broker hands the master before it acked them.
SESSION_PREFETCH = 64
#: AMQP reply code of a queue that another connection holds exclusively.
RESOURCE_LOCKED = 405


def _locked(error: BaseException) -> bool:
    return isinstance(error, ChannelClosedByBroker) and error.reply_code == RESOURCE_LOCKED


class _Membership:
    """One port: this master in one pool."""

    def __init__(self, listener: "AMQPListener", entry: OpenPort, spec: PortSpec):
        self.listener = listener
        self.entry = entry
        self.spec = spec
        self.pool = spec.pool or ""
        self.link: BrokerLink | None = None
        self.control: Mailbox | None = None
        self.sessions: set[AMQPConnection] = set()
        #: Sessions (and logins past the lock) per worker name: the lock goes with the last.
        self.holders: dict[str, int] = {}
        #: Lock deletions in flight: a new login of that worker waits for them.
        self.releasing: dict[str, Deferred[None]] = {}
        self.closed = False
        #: Rejoining the pool after the broker connection was lost.
        self._backoff = Backoff()
        self._rejoin_failures = 0
        self._rejoin_call: Any = None
        #: What this master takes from the login queue, under the listener's login guard.
        self.logins = LoginQueue(listener.login_guard, self._login_request,
                                 lambda reply_to, cid, error: ensureDeferred(self._refuse(reply_to, cid, error)),
                                 f"amqp master {spec.master} of pool {self.pool}")

    @property
    def login_queue(self) -> str:
        return queue_name(self.pool, "login")

    async def open(self) -> None:
        """Join the pool for the first time; a failure is the registration's ``AddressError``."""
        try:
            await self._join()
        except AddressError:
            raise
        except Exception as e:
            raise AddressError(f"cannot reach the AMQP broker of {self.entry.port_str!r} "
                               f"({self.spec.broker.redacted()}): {e or type(e).__name__}") from None

    async def _join(self) -> None:
        """Connect, take this master's name in the pool, consume the login queue."""
        spec = self.spec
        options = self.listener.options
        link = await connect(spec.broker, self.listener.reactor, f"workerwire master {spec.master} pool {spec.pool}")
        try:
            control = await Mailbox.open(link, options.max_message_size, f"master {spec.master}")
            try:
                await control.channel.queue_declare(
                    queue_name(self.pool, "master", spec.master), exclusive=True, auto_delete=True)
            except ChannelClosedByBroker as e:
                if e.reply_code == RESOURCE_LOCKED:
                    raise AddressError(
                        f"{self.entry.port_str!r}: pool {self.pool!r} already has a live master named "
                        f"{spec.master!r} (port in use); give this master another name (master=...)") from None
                raise
            await control.channel.queue_declare(self.login_queue, auto_delete=True)
            # Parts not joined: the login queue holds them to the pre-login limit itself.
            await control.consume(self.login_queue, LOGIN_PREFETCH, self.logins.take, self._bad_login,
                                  join_parts=False)
        except BaseException:
            link.close()
            raise
        self.link, self.control = link, control
        link.on_lost(self._link_lost)

    def _rejoin_later(self) -> None:
        if self.closed:
            return
        delay = self._backoff.delay(self._rejoin_failures)
        self._rejoin_failures += 1
        self._rejoin_call = self.listener.reactor.callLater(delay, self._rejoin)

    def _rejoin(self) -> None:
        self._rejoin_call = None
        if self.closed:
            return

        def joined(_: object) -> None:
            self._rejoin_failures = 0
            if self.closed:
                if self.link is not None:
                    self.link.close()
                return
            _log.info("amqp master {master} rejoined pool {pool} at {broker}", master=self.spec.master,
                      pool=self.pool, broker=self.spec.broker.redacted())

        def failed(f: Failure) -> None:
            _log.warn("amqp master {master} cannot rejoin pool {pool} yet: {why}", master=self.spec.master,
                      pool=self.pool, why=f.getErrorMessage())
            self._rejoin_later()

        ensureDeferred(self._join()).addCallbacks(joined, failed)

    async def close(self) -> None:
        self.closed = True
        if self._rejoin_call is not None and self._rejoin_call.active():
            self._rejoin_call.cancel()
        self._rejoin_call = None
        self.logins.close()
        if self.control is not None:
            self.control.close()
        if not self.sessions and self.link is not None:
            self.link.close()

    def session_ended(self, conn: "AMQPConnection") -> None:
        self.sessions.discard(conn)
        if self.closed and not self.sessions and self.link is not None:
            self.link.close()

    def release(self, name: str, box: Mailbox) -> Deferred[None] | None:
        """One holder of *name*'s lock is done; the last deletes the lock queue
        (on *box*'s channel, before that channel closes)."""
        left = self.holders.get(name, 0) - 1
        if left > 0:
            self.holders[name] = left
            return None
        self.holders.pop(name, None)
        if not box.channel.is_open:
            return None
        done: Deferred[None] = Deferred()
        self.releasing[name] = done

        def released(_: object) -> None:
            if self.releasing.get(name) is done:
                del self.releasing[name]
            done.callback(None)

        box.channel.queue_delete(queue_name(self.pool, "worker", name)).addBoth(released)
        return done

    def _link_lost(self, why: str) -> None:
        """The broker connection is gone: its sessions are lost (the broker
        dropped their locks and queues); rejoin the pool with backoff."""
        if not self.closed:
            _log.warn("amqp master {master} of pool {pool}: {why}; rejoining", master=self.spec.master,
                      pool=self.pool, why=why)
        for conn in list(self.sessions):
            conn.on_connection_lost(why)
        self.holders.clear()
        self.releasing.clear()
        self.logins.close()
        self.control = None
        self._rejoin_later()

    def _bad_login(self, why: str) -> None:
        _log.warn("amqp master {master} of pool {pool}: malformed login request dropped: {why}",
                  master=self.spec.master, pool=self.pool, why=why)

    # -- logins ------------------------------------------------------------------

    def _login_request(self, msg: Message) -> None:
        ensureDeferred(self._login(msg)).addErrback(
            lambda f: _log.failure("amqp master {master}: a login failed", f, master=self.spec.master))

    async def _login(self, msg: Message) -> None:
        """One whole login request (from :attr:`logins`: a ``login`` with a reply queue, under the limit)."""
        reply_to = msg.reply_to
        assert reply_to is not None
        try:
            req = wire.decode_body(msg.body, MAX_LOGIN_INPUT)
            if not isinstance(req, dict):
                raise ProtocolError("a login request is a map")
            name, password, peer = req["name"], req["password"], req.get("peer", "?")
            if not (isinstance(name, str) and name and isinstance(password, str) and isinstance(peer, str)):
                raise ProtocolError("a login is {name: str, password: str, peer: str, version: int}")
        except (ProtocolError, KeyError, TypeError) as e:
            why = f"no {e} in it" if isinstance(e, KeyError) else str(e)
            self.logins.bad(reply_to, msg.correlation_id, f"a malformed login request: {why}")
            return
        guard = self.listener.login_guard
        attempt = _LoginAttempt()
        ticket = guard.admit(_address(peer), lambda: self._login_timed_out(attempt, reply_to, msg.correlation_id))
        if ticket is None:
            await self._refuse(reply_to, msg.correlation_id, LoginRefused(
                "the master has too many logins in progress; retry later"))
            return
        try:
            if not ticket.may_check():
                ticket.throttled(name)
                await self._refuse(reply_to, msg.correlation_id, LoginRefused(
                    f"login of worker {name!r} refused: too many failed logins from its host"))
                return
            creds = UsernamePassword(name.encode("utf-8"), password.encode("utf-8"))
            try:
                await self.entry.checker.requestAvatarId(creds)
            except BadCredentials as e:
                await ticket.refused(name, refusal_reason(e))
                await self._refuse(reply_to, msg.correlation_id, LoginRefused(
                    f"login of worker {name!r} refused: unknown worker or wrong password"))
                return
            ticket.verified()
            await self._start_session(name, peer, reply_to, msg.correlation_id, attempt)
        finally:
            ticket.done()

    def _login_timed_out(self, attempt: "_LoginAttempt", reply_to: str, correlation_id: str | None) -> None:
        """The login guard's close: a login not finished within login_timeout ends as a TCP
        backend's would (its socket closed): the session being set up is torn down, the worker told."""
        attempt.why = ("the login did not finish within the master's login timeout "
                       f"({self.listener.options.login_timeout:g} s)")
        attempt.end()
        ensureDeferred(self._refuse(reply_to, correlation_id, LoginRefused(attempt.why)))

    async def _refuse(self, reply_to: str, correlation_id: str | None, error: Exception) -> None:
        if self.control is None:
            return
        try:
            await self.control.send(reply_to, wire.REFUSED, encode(wire.error_body(error)), correlation_id)
        except ConnectionLost:
            pass  # the worker left already

    async def _start_session(self, name: str, peer: str, reply_to: str, correlation_id: str | None,
                             attempt: "_LoginAttempt") -> None:
        assert self.link is not None
        if attempt.why is not None:
            return  # timed out while the credentials were checked
        while name in self.releasing:
            await _wait(self.releasing[name])
        session_queue = queue_name(self.pool, "session", name) + "." + uuid.uuid4().hex[:12]
        try:
            box = await Mailbox.open(self.link, self.listener.options.max_message_size, f"master {self.spec.master}")
        except Exception as e:
            await self._refuse(reply_to, correlation_id, LoginRefused(f"master cannot open a session: {e}"))
            return
        self.holders[name] = self.holders.get(name, 0) + 1
        try:
            # The presence lock: only one connection (one master) may hold it.
            await box.channel.queue_declare(queue_name(self.pool, "worker", name), exclusive=True,
                                            auto_delete=False)
            await box.channel.queue_declare(session_queue, exclusive=True, auto_delete=False)
        except Exception as e:
            self.holders[name] -= 1
            if not self.holders[name]:
                del self.holders[name]
            if _locked(e):
                _log.info("amqp pool {pool}: worker {worker} refused by master {master}: it has a live session "
                          "at another master", pool=self.pool, worker=name, master=self.spec.master)
                await self._refuse(reply_to, correlation_id, DuplicateWorker(
                    f"worker {name!r} already has a live session on pool {self.pool!r} at another master"))
            else:
                await self._refuse(reply_to, correlation_id, LoginRefused(f"master cannot open a session: {e}"))
            box.close()
            return
        listener = self.listener
        conn = AMQPConnection(listener.master, name, listener.options, listener.reactor, self, box,
                              session_queue, reply_to, peer)
        attempt.conn = conn
        if attempt.why is not None:  # timed out while the session's queues were declared
            attempt.end()
            return
        self.sessions.add(conn)
        conn.notifyOnDisconnect(lambda: self.session_ended(conn))
        try:
            await box.consume(session_queue, SESSION_PREFETCH, conn._message, conn._protocol_error)
            await listener.attach(conn)
        except Exception as e:
            if attempt.why is not None:
                return  # torn down and refused by the timeout
            await self._failed_attach(box, conn, reply_to, correlation_id, e)
            return
        if attempt.why is not None:
            return
        # On the session's channel: after every call the master made while attaching.
        # receipts: this master reports what it took (``seen``), so the worker may budget its sends.
        welcome = encode({"queue": session_queue, "master": self.spec.master, "pool": self.pool,
                          "version": wire.PROTOCOL_VERSION, "receipts": True})
        conn._send(wire.WELCOME, welcome, correlation_id)

    async def _failed_attach(self, box: Mailbox, conn: "AMQPConnection", reply_to: str,
                             correlation_id: str | None, e: Exception) -> None:
        if isinstance(e, LoginRefused):
            await self._refuse_on(box, reply_to, correlation_id, e)
            conn._teardown()
            conn.on_connection_lost(f"refused: {e}")
            return
        await self._refuse_on(box, reply_to, correlation_id, LoginRefused(f"master cannot open a session: {e}"))
        conn._teardown()
        conn.on_connection_lost(f"session setup failed: {e}")

    async def _refuse_on(self, box: Mailbox, reply_to: str, correlation_id: str | None, error: LoginRefused) -> None:
        try:
            await box.send(reply_to, wire.REFUSED, encode(wire.error_body(error)), correlation_id)
        except ConnectionLost:
            pass


class _LoginAttempt:
    """One login request being served, until the login guard's timeout may end it (:attr:`why`)."""

    __slots__ = ("why", "conn")

    def __init__(self) -> None:
        self.why: str | None = None
        self.conn: AMQPConnection | None = None

    def end(self) -> None:
        """Tear down the session being set up, if there is one yet."""
        if self.conn is not None and self.why is not None:
            self.conn._teardown()
            self.conn.on_connection_lost(self.why)


def _address(peer: str) -> Any:
    """The worker's own description of its socket to the broker, as an address
    the login guard counts failures by (it cannot be verified: the broker is
    between us)."""
    host, _, port = peer.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        return IPv4Address("TCP", "0.0.0.0", 0)
    if ip.version == 6:
        return IPv6Address("TCP", host, number)
    return IPv4Address("TCP", host, number)


class AMQPListener(BaseListener):
    backendName = "amqp"

    def __init__(self, master: MasterHooks, options: LinkOptions | None = None, reactor: Any = None):
        super().__init__(master, options, reactor)

    def _check_port_str(self, portStr: str) -> None:
        parse_port(portStr)

    def _open_port(self, entry: OpenPort) -> Deferred[None]:
        return ensureDeferred(self._open(entry))

    async def _open(self, entry: OpenPort) -> None:
        spec = parse_port(entry.port_str).bound()
        membership = _Membership(self, entry, spec)
        await membership.open()
        entry.listening = membership
        entry.port = f"{spec.pool}/{spec.master}"
        entry.address = DialSpec(spec.broker, spec.pool or "").address()
        _log.info("amqp master {master} serves pool {pool} at {broker}", master=spec.master, pool=spec.pool,
                  broker=spec.broker.redacted())

    def _close_port(self, entry: OpenPort) -> Deferred[None]:
        membership: _Membership = entry.listening
        return ensureDeferred(membership.close())


class AMQPConnection(BaseConnection):
    """One worker's session at this master."""

    def __init__(self, master: MasterHooks, workerName: str, options: LinkOptions, clock: Any,
                 membership: _Membership, box: Mailbox, session_queue: str, worker_queue: str, peer: str):
        super().__init__(master, workerName, "amqp", options, clock)
        self.membership = membership
        self.box = box
        self.session_queue = session_queue
        self.worker_queue = worker_queue
        self.peer = peer
        #: Calls sent to the worker and not answered yet, by correlation id ("1", "2", ...).
        self._calls: PendingRequests[str] = PendingRequests(str, first=1)
        self._torn_down = False
        #: Body bytes published to the worker's queue, and what it reported it took.
        self.sent_bytes = 0
        self.seen_bytes = 0
        #: Body bytes this master took from the session queue, and the count last reported
        #: to the worker (its send budget toward us, as ours toward it).
        self.taken_bytes = 0
        self.reported_taken = 0
        self._report_call: Any = None
        box.on_seen = self._on_seen
        # What the worker has not taken yet sits in the broker, not here, but it
        # is this link's send queue all the same: bounded like every backend's.
        self.budget = SendBudget(options, clock, self.unseen, box.pause, box.resume, self._budget_drop,
                                 lambda: f"worker {workerName!r} at {peer}", "amqp master",
                                 membership.listener.login_guard.stats)

    def unseen(self) -> int:
        """Bytes published to the worker that it has not reported taking."""
        return max(0, self.sent_bytes - self.seen_bytes)

    def _on_seen(self, seen: int) -> None:
        if seen > self.seen_bytes:
            self.seen_bytes = seen

    def _budget_drop(self, why: str) -> None:
        self.lose_connection(abort=True)
        self.on_connection_lost(why)

    def get_peer(self) -> str:
        return self.peer

    # -- sending -----------------------------------------------------------------

    def _send(self, kind: str, body: bytes, correlation_id: str | None = None) -> Deferred[None]:
        self.sent_bytes += len(body)
        self.reported_taken = self.taken_bytes
        d = self.box.send(self.worker_queue, kind, body, correlation_id, self.session_queue, self.taken_bytes)
        d.addErrback(self._send_failed)
        return d

    def _took(self, size: int) -> None:
        """*size* body bytes taken from the worker: report them now or soon (``seen``)."""
        if not size:
            return
        self.taken_bytes += size
        if self.taken_bytes - self.reported_taken >= wire.SEEN_EVERY:
            self._send_seen()
        elif self._report_call is None:
            self._report_call = self._clock.callLater(wire.SEEN_DELAY, self._send_seen)

    def _send_seen(self) -> None:
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None
        if self.taken_bytes != self.reported_taken and self._lost is None and not self._torn_down:
            self._send(wire.SEEN, b"")

    def _send_failed(self, failure: Failure) -> None:
        if self._lost is None and not self._torn_down:
            self._teardown()
            self.on_connection_lost(f"cannot reach the worker: {failure.getErrorMessage()}")

    def _call_worker(self, method: str, *args: Any) -> Deferred[Any]:
        cid = self._calls.new_tag()
        try:
            body = encode([method, list(args)], f"arguments of {method}", checked=True)
        except Exception as e:
            return fail(e)
        d = self._calls.wait(cid)  # before sending: a send that fails at once fails it with the link
        self._send(wire.CALL, body, cid)
        return d

    def call_print(self, message: str) -> Deferred[Any]:
        return self._call_worker("print", message)

    def call_get_worker_info(self) -> Deferred[dict[str, Any]]:
        return self._call_worker("getWorkerInfo")

    def call_set_builder_list(self, builders: list[list[str]]) -> Deferred[list[str]]:
        return self._call_worker("setBuilderList", builders)

    def call_start_build(self, builderName: str) -> Deferred[Any]:
        return self._call_worker("startBuild", builderName)

    def call_start_command(self, builderName: str, commandId: str, commandName: str,
                              args: dict[str, Any]) -> Deferred[Any]:
        plain, handles = split_refs(args)
        if handles:  # transfer handles travel as {key: [id, kind]} after the args
            return self._call_worker("startCommand", builderName, commandId, commandName, plain, handles)
        return self._call_worker("startCommand", builderName, commandId, commandName, plain)

    def call_interrupt_command(self, builderName: str, commandId: str, why: str) -> Deferred[Any]:
        return self._call_worker("interruptCommand", builderName, commandId, why)

    def call_shutdown(self) -> Deferred[Any]:
        return self._call_worker("shutdown")

    def call_keepalive(self) -> Deferred[Any]:
        return self._call_worker("ping")

    def lose_connection(self, abort: bool) -> None:
        if self._torn_down:
            return
        # Aborting waits for nothing, but still tells a live worker at once (as a TCP reset would).
        self.box.send(self.worker_queue, wire.BYE, b"", None, self.session_queue).addErrback(lambda f: None)
        self._teardown()
        if not abort:
            self.clock_later(self.on_connection_lost, "closed by the master")

    def clock_later(self, fn: Any, *args: Any) -> None:
        self._clock.callLater(0, fn, *args)

    def _teardown(self) -> None:
        """Give the session queue back to the broker (another login may take it) and close the channel."""
        if self._torn_down:
            return
        self._torn_down = True
        box = self.box
        if box.channel.is_open:
            d = box.channel.queue_delete(self.session_queue)
            d.addBoth(lambda _: self.membership.release(self.workerName, box))
            d.addBoth(lambda _: box.close())
        else:
            self.membership.release(self.workerName, box)

    def on_connection_lost(self, reason: str = "connection closed") -> None:
        if self._lost is not None:
            return
        self.budget.stop()
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None
        super().on_connection_lost(reason)
        self._calls.fail_all(ConnectionLost(f"connection to worker {self.workerName!r} lost: {reason}"))
        self._teardown()

    # -- receiving ---------------------------------------------------------------

    def _protocol_error(self, why: str) -> None:
        _log.warn("amqp: worker {worker} sent a bad message: {why}; closing its session", worker=self.workerName,
                  why=why)
        self.loseConnection(abort=True)

    def _message(self, msg: Message) -> None:
        if msg.reply_to != self.worker_queue or self._lost is not None:
            return  # a message of an older session of this worker
        self._took(len(msg.body))
        try:
            self._handle(msg)
        finally:
            if self._lost is None:
                self.budget.after_read()

    def _handle(self, msg: Message) -> None:
        self.on_traffic()
        kind = msg.kind
        if kind == wire.BYE:
            self._teardown()
            self.on_connection_lost("the worker closed the link")
            return
        value = wire.decode_body(msg.body, self.options.max_message_size, kind) if msg.body else None
        if kind == wire.RESULT:
            wire.settle(self._calls, msg.correlation_id, value, "result for call")
        elif kind == wire.UPDATE:
            self._answer(msg.correlation_id, lambda v: self._update(v, len(msg.body)), value)
        elif kind == wire.COMPLETE:
            self._answer(msg.correlation_id, self._complete, value)
        elif kind == wire.KEEPALIVE:
            self.on_worker_keepalive()
            self._ack(msg.correlation_id, None)
        elif kind == wire.SHUTDOWN_REQUEST:
            self.on_shutdown_request()
            self._ack(msg.correlation_id, None)
        elif kind == wire.TRANSFER:
            self._transfer(msg.correlation_id, value)
        else:
            raise ProtocolError(f"unknown message kind {kind!r} from the worker")

    def _update(self, value: Any, size: int) -> object:
        command_id, pairs = wire.decode_update(value)
        try:
            self.receive_window.admit(size)
        except ProtocolError as e:
            self._protocol_error(str(e))
            raise
        result = self.on_update(command_id, pairs)
        self.receive_window.hold(size, result)
        return result

    def _complete(self, value: Any) -> object:
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
            raise ProtocolError("complete must be [command_id, error or nil]")
        error = None if value[1] is None else wire.body_error(value[1])
        self.on_complete(value[0], error)
        return None

    def _answer(self, correlation_id: str | None, handler: Any, value: Any) -> None:
        """Acknowledge an update or a completion once *handler* took it (a
        Deferred it returns: once that fired), or answer what it raised."""
        serve_request(lambda: handler(value), lambda _: self._ack(correlation_id, None),
                      lambda exc: self._ack(correlation_id, exc))

    def _transfer(self, correlation_id: str | None, value: Any) -> None:
        if not (isinstance(value, list) and len(value) == 4 and isinstance(value[2], str)
                and isinstance(value[3], list)):
            raise ProtocolError("transfer must be [command_id, handle_id, method, [args]]")
        command_id, handle_id, method, args = value
        serve_request(lambda: self.on_transfer_call(None if command_id is None else str(command_id), handle_id,
                                                    method, args),
                      lambda result: self._ack(correlation_id, None, result), lambda exc: self._ack(correlation_id, exc))

    def _ack(self, correlation_id: str | None, error: BaseException | None, value: Any = None) -> None:
        """Answer a worker's message: ``[true, value]`` or ``[false, error]``."""
        if self._lost is not None:
            return
        tb = None
        if error is not None and self.options.send_tracebacks:
            tb = "".join(traceback.format_exception(error))
        body = encode([error is None, value if error is None else wire.error_body(error, tb)], "ack")
        self._send(wire.ACK, body, correlation_id)


async def _wait(d: Deferred[None]) -> None:
    """Wait until *d* fires, leaving its result to its other waiters."""
    waiter: Deferred[None] = Deferred()

    def fired(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(fired)
    await waiter
