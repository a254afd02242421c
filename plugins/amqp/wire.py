"""The amqp dialect's message kinds and bodies (``docs/protocols/amqp.md``, section 4).

Every message's AMQP ``type`` property is one of the kinds below; its body is
MessagePack (:mod:`workerwire.values`).  Calls and the messages that want an
answer carry a ``correlation_id``; the answer carries the same one.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from workerwire.errors import ProtocolError, WorkerwireError, error_from_wire, error_to_wire
from workerwire.base_connection import update_pairs
from workerwire.flow import UpdateBatch, encode_updates, merge_updates
from workerwire.master import Update
from workerwire.pending import PendingRequests
from workerwire.values import array_header, decode, encode

__all__ = [
    "PROTOCOL_VERSION", "LOGIN", "WELCOME", "REFUSED", "CALL", "RESULT", "UPDATE", "COMPLETE",
    "KEEPALIVE", "SHUTDOWN_REQUEST", "SEEN", "TRANSFER", "ACK", "BYE", "encode_update", "decode_update", "encode_result",
    "decode_result", "error_body", "body_error", "decode_body",
]

PROTOCOL_VERSION = 1

# worker -> pool's login queue
LOGIN = "login"
# master -> worker's queue
WELCOME = "welcome"
REFUSED = "refused"
CALL = "call"
# worker -> session queue
RESULT = "result"
UPDATE = "update"
COMPLETE = "complete"
KEEPALIVE = "keepalive"
SHUTDOWN_REQUEST = "shutdown-request"
TRANSFER = "transfer"
#: worker -> session queue, no answer: "I have taken this many body bytes
#: from my queue" (also the ``seen`` header of every worker message); the
#: master's send budget counts what it published minus what was seen.
SEEN = "seen"
#: Either end reports what it took once this many bytes are unreported, or
#: :data:`SEEN_DELAY` seconds after a message when nothing it sent meanwhile
#: carried the count.
SEEN_EVERY = 16 * 1024
SEEN_DELAY = 0.05
# both ways
ACK = "ack"
BYE = "bye"


#: Levels of lists around the contract values in each kind's body: a
#: value's nesting (at most 256 levels) counts from the value itself, as it
#: does on every backend.  ``update`` is ``[command_id, [[key, value], ...]]``,
#: ``call`` ``[method, [args...]]``, ``transfer`` ``[command_id, handle_id,
#: method, [args...]]``, ``result``/``ack`` ``[ok, value or error]``.
FRAMING = {UPDATE: 3, CALL: 2, TRANSFER: 2, RESULT: 1, ACK: 1}


def decode_body(body: bytes, max_size: int, kind: str | None = None) -> Any:
    """A message body's value; *kind* says how many of its outer lists are framing."""
    return decode(body, max_size, FRAMING.get(kind or "", 0))


def encode_update(command_id: str, batches: list[UpdateBatch]) -> bytes:
    """``[command_id, [[key, value], ...]]`` from pre-encoded pair runs."""
    pairs, _ = merge_updates(batches)
    return b"".join([array_header(2), encode(command_id, "commandId", checked=True), *pairs])


#: Kept for callers of the old name.
encoded_pairs = encode_updates


def decode_update(value: Any) -> tuple[str, list[Update]]:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], list)):
        raise ProtocolError("update must be [command_id, [[key, value], ...]]")
    return value[0], update_pairs(value[1], "an update's pairs")


def error_body(exc: BaseException, traceback_text: str | None = None) -> list[Any]:
    out: list[Any] = list(error_to_wire(exc))
    if traceback_text:
        out.append(traceback_text)
    return out


def body_error(value: Any) -> WorkerwireError:
    if not (isinstance(value, list) and 2 <= len(value) <= 3 and all(isinstance(v, str) for v in value)):
        raise ProtocolError("an error must be [type_name, message] or [type_name, message, traceback]")
    return error_from_wire(*value)


def encode_result(ok: bool, value: Any) -> bytes:
    """A call's answer: ``[true, value]`` or ``[false, error]``."""
    return encode([ok, value], "result")


def decode_result(value: Any) -> tuple[bool, Any]:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], bool)):
        raise ProtocolError("a result must be [ok, value]")
    return value[0], value[1]


def settle(pending: PendingRequests[str], correlation_id: str | None, value: Any, what: str) -> None:
    """Fire the Deferred of the request *correlation_id* answers with the
    answer's *value*: its value, or the error it carries.

    :raises ProtocolError: no request waits under that id (*what* names it),
        or *value* is not ``[ok, value]`` (the request fails with that too:
        it is no longer in the table the lost link fails).
    """
    d = pending.answered(correlation_id, what)
    try:
        ok, result = decode_result(value)
    except ProtocolError as e:
        d.errback(Failure(e))
        raise
    if ok:
        d.callback(result)
    else:
        d.errback(Failure(body_error(result)))
