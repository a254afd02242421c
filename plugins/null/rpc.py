"""Calls and answers over a null pipe, every message through the core codec.

Message shapes (each a MessagePack array, see :mod:`workerwire.values`):
``["call", id, method, [args...]]``, ``["answer", id, result]``,
``["error", id, type_name, message]``.  Ids are per direction.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire.backend import LinkOptions
from workerwire.budget import SendBudget
from workerwire.errors import ConnectionLost, ProtocolError, error_from_wire, error_to_wire, peer_text
from workerwire.pending import PendingRequests, serve_request
from workerwire.values import decode, encode

from .network import PipeEnd

__all__ = ["MessagePeer"]

_log = Logger()


class MessagePeer:
    """Request/response over one :class:`PipeEnd`.

    *serve(method, args)* answers the peer's calls, with a value already
    checked (:func:`~workerwire.base_worker.call_bot` checks the bot's) or
    ``None``, or a Deferred of one; *on_lost(reason)* runs once when the pipe
    closes; *on_traffic()* runs for every message received.
    """

    def __init__(
        self,
        pipe: PipeEnd,
        serve: Callable[[str, list[Any]], Any],
        on_lost: Callable[[str], None],
        max_message_size: int,
        on_traffic: Callable[[], None] = lambda: None,
        options: LinkOptions | None = None,
        side: str = "master",
        stats: Any = None,
    ):
        self.pipe = pipe
        self._serve = serve
        self._on_lost = on_lost
        self._on_traffic = on_traffic
        self._max = max_message_size
        self._pending: PendingRequests[int] = PendingRequests(int)
        self.lost = False
        pipe.on_message = self._received
        pipe.on_close = self._closed
        #: The name of the worker, once known (for log lines).
        self.worker_name: str | None = None
        #: Why this end dropped the link, when the budget did.
        self.drop_reason: str | None = None
        #: Bounds what this end holds queued for the peer: the peer's inbox.
        self.budget = SendBudget(options or LinkOptions(), pipe._reactor, lambda: pipe.queued, pipe.pauseProducing,
                                 pipe.resumeProducing, self._drop_misbehaving, self._who, f"null {side}", stats)

    def _who(self) -> str:
        name = self.pipe.description
        return f"worker {self.worker_name!r} at {name}" if self.worker_name else name

    def _drop_misbehaving(self, why: str) -> None:
        self.drop_reason = f"dropped as a misbehaving peer: {why}"
        self.pipe.close(self.drop_reason)

    def call(self, method: str, *args: Any, checked: bool = False) -> Deferred[Any]:
        """Call *method* on the peer; fires with its result.

        :param checked: the caller has checked *args* with
            :func:`~workerwire.values.check_value` already: the message is
            encoded without walking them again (it is checked once on this
            side, once on the receiving side, as on a network backend).
        """
        if self.lost or self.pipe.closed:
            return fail(ConnectionLost("link is closed"))
        call_id = self._pending.new_tag()
        try:
            data = encode(["call", call_id, method, list(args)], f"arguments of {method}", checked)
        except Exception as e:
            return fail(e)
        if len(data) > self._max:
            return fail(ProtocolError(
                f"{method} call of {len(data)} bytes exceeds the message limit of {self._max} bytes"))
        d = self._pending.wait(call_id)
        self.pipe.send(data)
        return d

    def close(self, reason: str = "closed") -> None:
        self.pipe.close(reason)

    def _received(self, data: bytes) -> None:
        self._on_traffic()
        try:
            # ["call", id, "update", [id, [[key, value]...]]]: the values of
            # updates (and of arguments, two levels less) count from themselves.
            msg = decode(data, self._max, 4)
            kind = msg[0]
            if kind == "call":
                _, call_id, method, args = msg
                self._dispatch(int(call_id), str(method), list(args))
            elif kind == "answer":
                _, call_id, result = msg
                self._pending.answered(call_id, "answer to call").callback(result)
            elif kind == "error":
                _, call_id, type_name, message = msg
                self._pending.answered(call_id, "answer to call").errback(
                    Failure(error_from_wire(str(type_name), str(message))))
            else:
                raise ProtocolError(f"unknown message kind {peer_text(kind)}")
        except (ValueError, TypeError, IndexError, KeyError, ProtocolError) as e:
            why = e if isinstance(e, ProtocolError) else ProtocolError(f"malformed message: {e}")
            _log.warn("protocol error from {peer}: {why}; closing the link", peer=self.pipe.description, why=why)
            self.pipe.close(f"protocol error: {why}")
            return
        if not self.pipe.closed:
            self.budget.after_read()

    def _dispatch(self, call_id: int, method: str, args: list[Any]) -> None:
        serve_request(lambda: self._serve(method, args), lambda result: self._answer(result, call_id),
                      lambda exc: self._error(exc, call_id))

    def _answer(self, result: Any, call_id: int) -> None:
        if not self.pipe.closed:  # a result that does not encode is answered as an error
            self.pipe.send(encode(["answer", call_id, result], checked=True))

    def _error(self, exc: BaseException, call_id: int) -> None:
        if not self.pipe.closed:
            type_name, message = error_to_wire(exc)
            self.pipe.send(encode(["error", call_id, type_name, message]))

    def _closed(self, reason: str) -> None:
        if self.lost:
            return
        self.lost = True
        self.budget.stop()
        self._pending.fail_all(Failure(ConnectionLost(reason)))
        self._on_lost(reason)
