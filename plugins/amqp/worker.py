"""Worker side of the amqp backend: dial the broker, log in to the pool, serve the bot.

One attempt (:meth:`AMQPConnector._attempt_login`): a broker connection of
its own, an exclusive server-named queue the masters answer to, a login
request published to the pool's login queue (no master of the pool: the
broker returns it, and the attempt fails as a connection failure), then the
answer: ``welcome`` (logged in) or ``refused``.  The master's calls may
arrive before the welcome; they are served at once and answered to the
session queue each names in ``reply_to``.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire.backend import LinkOptions
from workerwire.backoff import Backoff
from workerwire.base_worker import BaseCommandChannel, BaseWorkerConnector, WorkerSession, call_bot
from workerwire.budget import SendBudget
from workerwire.errors import ConnectionLost, LoginRefused, ProtocolError, WorkerwireError, error_detail
from workerwire.flow import SendWindow
from workerwire.master import Update
from workerwire.pending import PendingRequests, serve_request
from workerwire.transfer import TransferLink, attach_proxies
from workerwire.values import encode
from workerwire.worker import WorkerBot

from . import wire
from .address import DialSpec, parse_dial, queue_name
from .broker import BrokerLink, Mailbox, Message, connect

__all__ = ["AMQPConnector", "BATCH", "WORKER_PREFETCH"]

_log = Logger()

#: Most bytes of updates merged into one ``update`` message.
BATCH = 1024 * 1024
#: Messages from the master the broker hands the worker before it acked them.
WORKER_PREFETCH = 64
#: The worker reports what it took from its queue (a ``seen`` message) once
#: this many bytes are unreported, or :data:`SEEN_DELAY` seconds after a
#: message when nothing it sent meanwhile carried the count.
SEEN_EVERY = wire.SEEN_EVERY
SEEN_DELAY = wire.SEEN_DELAY


def _failed(error: BaseException) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d


class _Channel(BaseCommandChannel):
    """One running command's way back to the master, through the session's window."""

    def __init__(self, session: "_Session", builderName: str, commandId: str):
        super().__init__(builderName, commandId)
        self._session = session
        self._label = f"an update of command {commandId!r}"

    def send_update(self, updates: list[Update]) -> Deferred[None]:
        batch = wire.encoded_pairs(updates)
        return self._session.window.send_mergeable(self, batch[2] + 16, batch, self._send_batch, self._label)

    def _send_batch(self, batches: list[tuple[int, list[bytes], int]]) -> Deferred[Any]:
        return self._session.ask(wire.UPDATE, wire.encode_update(self.commandId, batches))

    def send_complete(self, failure: BaseException | None) -> Deferred[None]:
        self._session.forget_channel(self)
        error = None if failure is None else error_detail(failure, self._session.connector.options.send_tracebacks)
        body = encode([self.commandId, error], "complete")
        return self._session.window.send_ordered(lambda: self._session.ask(wire.COMPLETE, body),
                                                 label=f"the completion of command {self.commandId!r}")


class _Session(WorkerSession):
    """One broker connection and one login; a session once welcomed."""

    connector: "AMQPConnector"

    def __init__(self, connector: "AMQPConnector", link: BrokerLink, box: Mailbox, queue: str):
        self.connector = connector
        self.link = link
        self.box = box
        self.queue = queue
        super().__init__()
        self.peer = f"pool {connector.spec.pool} at {link.describe()}"
        self.window = SendWindow(connector.options.output_window, clock=connector.reactor, batch_limit=BATCH,
                                 name="amqp worker")
        #: The session queue of the master serving us (from its first message).
        self.master_queue: str | None = None
        self.lost_reason: str | None = None
        self.answer: Deferred[Message] = Deferred()
        #: What this worker sent that waits for the master's ``ack``, by correlation id ("1", "2", ...).
        self._asks: PendingRequests[str] = PendingRequests(str, first=1)
        #: Body bytes taken from the master (the ``seen`` count), and the last count sent.
        self.seen = 0
        self.reported = 0
        self._report_call: Any = None
        #: Transfer calls of the commands' handles, under the output window.
        self.transfers = TransferLink(self._send_transfer, connector.options.output_window)
        #: Body bytes published to the master's session queue, and what the master reported it took.
        self.sent = 0
        self.master_seen = 0
        #: What we sent that the master has not taken, bounded (once a master that reports
        #: receipts welcomed us): over ``send_queue_limit`` we stop reading its calls.
        self.budget: SendBudget | None = None
        box.on_seen = self._on_master_seen

    def _on_master_seen(self, seen: int) -> None:
        if seen > self.master_seen:
            self.master_seen = seen

    def unseen(self) -> int:
        """Bytes sent to the master that it has not reported taking."""
        return max(0, self.sent - self.master_seen)

    def start_budget(self, master: str) -> None:
        options = self.connector.options
        self.budget = SendBudget(options, self.connector.reactor, self.unseen, self.box.pause, self.box.resume,
                                 self._budget_drop, lambda: f"master {master} of pool {self.connector.spec.pool}",
                                 "amqp worker")

    def _budget_drop(self, why: str) -> None:
        self.lost(f"the master stopped taking what this worker sent: {why}")

    def _publish(self, kind: str, body: bytes, correlation_id: str | None) -> Deferred[None]:
        assert self.master_queue is not None
        self.sent += len(body)
        return self.box.send(self.master_queue, kind, body, correlation_id, self.queue, self._report())

    def _send_transfer(self, commandId: str, handleId: int, method: str, args: list[Any]) -> Deferred[Any]:
        try:
            body = encode([commandId, handleId, method, args], "transfer call")
        except Exception as e:
            return _failed(e)
        return self.ask(wire.TRANSFER, body)

    # -- WorkerSession -------------------------------------------------------

    def keepalive(self) -> Deferred[None]:
        return self.ask(wire.KEEPALIVE, b"")

    def request_shutdown(self) -> Deferred[None]:
        return self.ask(wire.SHUTDOWN_REQUEST, b"")

    def close(self, abort: bool = False) -> None:
        """Graceful: ``bye`` to the master, then an AMQP close, and the session
        is over at once (as a TCP close is once its data is handed to the
        kernel: what was sent still leaves).  A broker that never confirms the
        close (a dead path) has the socket dropped after ``keepalive_timeout``."""
        if abort or self.master_queue is None:
            self.link.abort()
            self.lost("closed by the worker")
            return
        self.box.send(self.master_queue, wire.BYE, b"", None, self.queue).addErrback(lambda f: None)
        self.link.close()
        link = self.link
        self.connector.reactor.callLater(self.connector.options.keepalive_timeout, link.abort)
        self.lost("closed by the worker", abort=False)

    # -- sending ---------------------------------------------------------------

    def ask(self, kind: str, body: bytes) -> Deferred[Any]:
        """Send *kind* to the master; fires with its answer's value (``None``
        for all but transfer calls) when it acknowledged it."""
        if self.lost_reason is not None:
            return _failed(ConnectionLost(f"link to the master lost: {self.lost_reason}"))
        if self.master_queue is None:
            return _failed(ConnectionLost("not logged in"))
        cid = self._asks.new_tag()
        d = self._asks.wait(cid)  # before publishing: a publish that fails at once fails it with the link
        self._publish(kind, body, cid).addErrback(self._send_failed)
        return d

    def _report(self) -> int:
        """The ``seen`` count for a message about to be sent."""
        self.reported = self.seen
        return self.seen

    def _took(self, size: int) -> None:
        """*size* bytes taken from the master: report them now or soon."""
        self.seen += size
        if self.master_queue is None or self.lost_reason is not None:
            return
        if self.seen - self.reported >= SEEN_EVERY:
            self._send_seen()
        elif self._report_call is None:
            self._report_call = self.connector.reactor.callLater(SEEN_DELAY, self._send_seen)

    def _send_seen(self) -> None:
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None
        if self.seen == self.reported or self.master_queue is None or self.lost_reason is not None:
            return
        self._publish(wire.SEEN, b"", None).addErrback(self._send_failed)

    def _send_failed(self, failure: Failure) -> None:
        self.lost(f"cannot reach the master: {failure.getErrorMessage()}")

    # -- receiving ---------------------------------------------------------------

    def message(self, msg: Message) -> None:
        try:
            self._message(msg)
        finally:
            if self.budget is not None and self.lost_reason is None:
                self.budget.after_read()

    def _message(self, msg: Message) -> None:
        if self.lost_reason is not None:
            return
        if msg.reply_to is not None and msg.reply_to == (self.master_queue or msg.reply_to):
            self._took(len(msg.body))  # from the master serving us (or the first to call)
        if msg.kind in (wire.WELCOME, wire.REFUSED) and not self.logged_in:
            if not self.answer.called:
                self.answer.callback(msg)
            return
        if self.master_queue is None and msg.reply_to:
            self.master_queue = msg.reply_to  # a master calls before it welcomes
        if msg.reply_to != self.master_queue:
            return  # a refusal or leftover from another master: not ours
        self.connector.on_traffic()
        kind = msg.kind
        if kind == wire.BYE:
            self.lost("the master closed the link", abort=False)
            self.link.close()
            return
        value = wire.decode_body(msg.body, self.connector.options.max_message_size, kind) if msg.body else None
        if kind == wire.CALL:
            self._serve(msg.correlation_id, value)
        elif kind == wire.ACK:
            wire.settle(self._asks, msg.correlation_id, value, "answer to what the worker sent, id")
        else:
            raise ProtocolError(f"unknown message kind {kind!r} from the master")

    def protocol_error(self, why: str) -> None:
        _log.warn("worker {name}: bad message from the master: {why}; dropping the link", name=self.connector.name,
                  why=why)
        self.link.abort()

    def _serve(self, correlation_id: str | None, value: Any) -> None:
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                and isinstance(value[1], list)):
            raise ProtocolError("a call must be [method, [args...]]")
        method, args = value
        serve_request(lambda: self._call(method, args), lambda result: self._result(correlation_id, True, result),
                      lambda exc: self._result(correlation_id, False, self._error(exc)))

    def _call(self, method: str, args: list[Any]) -> Any:
        """Run the master's call of *method*: its result, a Deferred of it, or raise."""
        if method == "ping":
            return None
        if method == "startCommand":
            if len(args) not in (4, 5):
                raise ProtocolError("startCommand takes builder, command id, command name, args[, handles]")
            return self._start_command(*args)
        return call_bot(self.connector.bot, method, *args)

    def _start_command(self, builder: Any, command_id: Any, command_name: Any, args: Any,
                       handles: Any = None) -> Deferred[Any]:
        if not isinstance(command_id, str) or not isinstance(builder, str):
            return _failed(ProtocolError("startCommand: builder and command id must be str"))
        if handles is not None:
            try:
                args = attach_proxies(args, handles, self.transfers, command_id)
            except Exception as e:
                return _failed(e)
        channel = _Channel(self, builder, command_id)
        self.add_channel(channel)
        d = call_bot(self.connector.bot, "startCommand", channel, builder, command_id, command_name, args)

        def refused(failure: Failure) -> Failure:
            self.forget_channel(channel)
            return failure

        return d.addErrback(refused)

    def _error(self, exc: BaseException) -> list[Any]:
        """The error answer for *exc* (with its traceback if ``send_tracebacks``)."""
        return error_detail(exc, self.connector.options.send_tracebacks)

    def _result(self, correlation_id: str | None, ok: bool, value: Any) -> None:
        if self.lost_reason is not None or self.master_queue is None:
            return
        try:
            body = wire.encode_result(ok, value)
        except Exception as e:
            body = wire.encode_result(False, wire.error_body(e))
        self._publish(wire.RESULT, body, correlation_id).addErrback(self._send_failed)

    # -- loss ------------------------------------------------------------------

    def lost(self, reason: str, abort: bool = True) -> None:
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        if self.budget is not None:
            self.budget.stop()
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None
        self.fail_pending(reason)
        self._asks.fail_all(ConnectionLost(f"link to the master lost: {reason}"))
        if not self.answer.called:
            self.answer.errback(Failure(ConnectionLost(reason)))
            self.answer.addErrback(lambda f: None)  # a login attempt given up already does not wait for it
        if self.logged_in:
            self.connector.session_lost(self, reason)
        if abort:
            self.link.abort()


class AMQPConnector(BaseWorkerConnector):
    """Dials the pool's broker; logs in to whichever master takes the request."""

    backendName = "amqp"

    def __init__(self, bot: WorkerBot, address: str, name: str, password: str, options: LinkOptions | None = None,
                 reactor: Any = None, backoff: Backoff | None = None):
        self.spec: DialSpec = parse_dial(address)
        super().__init__(bot, address, name, password, options, reactor, backoff)
        # What logs show: the broker URL without its password.
        self.address = f"amqp:url={self.spec.broker.redacted()}:pool={self.spec.pool}"

    def connect_once(self) -> Deferred[WorkerSession]:
        state: dict[str, Any] = {}
        d = ensureDeferred(self._attempt_login(state))

        def cancelled(failure: Failure) -> Failure:
            if failure.check(CancelledError):
                link = state.get("link")
                if link is not None:
                    link.abort()
                return Failure(ConnectionLost("login attempt cancelled"))
            return failure

        d.addErrback(cancelled)
        d.addTimeout(self.options.login_timeout, self.reactor,
                     onTimeoutCancel=lambda r, t: Failure(ConnectionLost(
                         f"no login answer from pool {self.spec.pool} within {t:g} s")))
        return d

    async def _attempt_login(self, state: dict[str, Any]) -> WorkerSession:
        spec = self.spec
        link = await connect(spec.broker, self.reactor, f"workerwire worker {self.name} pool {spec.pool}")
        state["link"] = link
        try:
            box = await Mailbox.open(link, self.options.max_message_size, f"worker {self.name}")
            declared = await box.channel.queue_declare("", exclusive=True, auto_delete=True)
            queue = declared.method.queue
            session = _Session(self, link, box, queue)
            link.on_lost(session.lost)
            await box.consume(queue, WORKER_PREFETCH, session.message, session.protocol_error)
            transport = getattr(link.proto, "transport", None)
            host = transport.getHost() if transport is not None else None
            peer = f"{host.host}:{host.port}" if host is not None and hasattr(host, "port") else "?"
            if host is not None and ":" in getattr(host, "host", ""):
                peer = f"[{host.host}]:{host.port}"
            request = encode({"name": self.name, "password": self.password, "peer": peer,
                              "version": wire.PROTOCOL_VERSION}, "login")
            try:
                # A request still queued when this attempt gives up is dropped by the broker, not
                # served to nobody: a login storm's retries do not pile up as work for the masters.
                await box.send(queue_name(spec.pool, "login"), wire.LOGIN, request, uuid.uuid4().hex, queue,
                               expires=self.options.login_timeout)
            except ConnectionLost as e:
                raise ConnectionLost(f"no master serves pool {spec.pool!r} at {link.describe()} ({e})") from None
            answer: Message = await session.answer
            if answer.kind == wire.REFUSED:
                error = wire.body_error(wire.decode_body(answer.body, 64 * 1024))
                if not isinstance(error, LoginRefused):
                    error = LoginRefused(str(error))
                session.lost_reason = f"login refused: {error}"
                session.window.lost(session.lost_reason)
                link.close()
                raise error
            welcome = wire.decode_body(answer.body, 64 * 1024)
            if not isinstance(welcome, dict) or not isinstance(welcome.get("queue"), str):
                raise ProtocolError("a welcome names the session queue")
            session.master_queue = welcome["queue"]
            master = welcome.get("master")
            session.peer = f"master {master or '?'} of pool {spec.pool} at {link.describe()}"
            # Which master: its name is unique among the pool's live masters.
            session.master = f"{spec.pool}/{master}" if isinstance(master, str) and master else None
            session.logged_in = True
            if welcome.get("receipts") is True:  # the master reports what it took: budget our sends
                session.start_budget(master if isinstance(master, str) else "?")
            if session.lost_reason is not None:
                raise ConnectionLost(session.lost_reason)
            return session
        except BaseException as e:
            link.abort()
            if isinstance(e, WorkerwireError):
                raise
            if isinstance(e, CancelledError):
                raise
            raise ConnectionLost(f"cannot log in to pool {spec.pool!r} at {link.describe()}: {e}") from None
