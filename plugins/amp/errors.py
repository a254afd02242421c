"""Errors on the amp wire: the one place native failures become core errors.

An error answer is an AMP ``_error`` box whose ``_error_code`` is the error's
type name (``UnknownBuilder``, ``OSError``, ...) and whose
``_error_description`` is its message, UTF-8, optionally followed by
:data:`TRACEBACK_SEPARATOR` and the sender's traceback (only when the sender
was configured with ``send_tracebacks``).
"""

from __future__ import annotations

import traceback as _traceback

from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError
from twisted.protocols import amp
from twisted.python.failure import Failure

from workerwire.errors import (
    ConnectionLost,
    ProtocolError,
    RemoteCallFailed,
    WorkerwireError,
    error_from_wire,
    error_to_wire,
)

__all__ = ["TRACEBACK_SEPARATOR", "MAX_DESCRIPTION", "error_answer", "translate_failure", "describe_loss"]

#: Separates an error's message from the traceback that may follow it.
TRACEBACK_SEPARATOR = "\n--- remote traceback ---\n"
#: Longest ``_error_description`` sent, in bytes (it must fit one AMP value).
MAX_DESCRIPTION = 60000
_MAX_CODE = 200


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:max(0, limit - 3)].decode("utf-8", "ignore") + "..."


def error_answer(exc: BaseException, send_traceback: bool = False) -> amp.RemoteAmpError:
    """The error answer to send for *exc* (which a responder raised)."""
    type_name, message = error_to_wire(exc)
    description = _clip(message, MAX_DESCRIPTION)
    if send_traceback and exc.__traceback__ is not None:
        tb = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        room = MAX_DESCRIPTION - len(description.encode("utf-8")) - len(TRACEBACK_SEPARATOR)
        if room > 0:
            description += TRACEBACK_SEPARATOR + _clip(tb, room)
    code = type_name.encode("ascii", "replace")[:_MAX_CODE] or b"Error"
    return amp.RemoteAmpError(code, description)


def _from_answer(code: bytes, description: str | bytes) -> WorkerwireError:
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    message, sep, tb = description.partition(TRACEBACK_SEPARATOR)
    type_name = code.decode("ascii", "replace")[:_MAX_CODE]
    if code == amp.UNHANDLED_ERROR_CODE:
        return ProtocolError(f"the peer does not know the command: {message}")
    if code == amp.UNKNOWN_ERROR_CODE:
        return RemoteCallFailed("UnknownError", message)
    return error_from_wire(type_name, message, tb if sep else None)


def translate_failure(failure: Failure) -> Failure:
    """Turn a failure of an amp call into a core error.

    * core errors pass through;
    * an error answer (``RemoteAmpError``, ``UnknownRemoteError``,
      ``UnhandledCommand``) becomes the core error its code names, or
      :class:`RemoteCallFailed` with that type name;
    * a closed or lost connection becomes :class:`ConnectionLost`;
    * anything else becomes :class:`RemoteCallFailed`.
    """
    value = failure.value
    if isinstance(value, WorkerwireError):
        return failure
    if isinstance(value, amp.RemoteAmpError):
        return Failure(_from_answer(value.errorCode, value.description))
    if isinstance(value, amp.UnhandledCommand):
        code, description = (value.args + (b"", ""))[:2]
        return Failure(_from_answer(code if isinstance(code, bytes) else amp.UNHANDLED_ERROR_CODE, description))
    if isinstance(value, (net_error.ConnectionClosed, amp.ProtocolSwitched)):
        return Failure(ConnectionLost(describe_loss(failure)))
    if isinstance(value, CancelledError):
        return Failure(ConnectionLost("call cancelled"))
    if isinstance(value, amp.TooLong):
        return Failure(ProtocolError(f"AMP size limit: {value!r}"))
    return Failure(RemoteCallFailed(type(value).__name__, str(value)))


def describe_loss(reason: Failure) -> str:
    """A short human reason for a lost connection."""
    value = reason.value
    if isinstance(value, net_error.ConnectionDone):
        return "connection closed"
    if isinstance(value, net_error.ConnectionAborted):
        return "connection aborted"
    text = str(value).strip() or type(value).__name__
    return f"connection lost: {text}"
