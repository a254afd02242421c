"""Errors on the amp wire: the one place native failures become core errors.

An error answer is an AMP ``_error`` box whose ``_error_code`` is the error's
type name (``UnknownBuilder``, ``OSError``, ...) and whose
``_error_description`` is its message, UTF-8, optionally followed by
:data:`TRACEBACK_SEPARATOR` and the sender's traceback (only when the sender
was configured with ``send_tracebacks``).  What is not amp's own (the type
names, cutting the peer's text, lost connections) is core's
(:mod:`workerwire.errors`).
"""

from __future__ import annotations

from twisted.protocols import amp
from twisted.python.failure import Failure

from workerwire.errors import (
    ConnectionLost,
    ProtocolError,
    RemoteCallFailed,
    WorkerwireError,
    clip_utf8,
    describe_loss,
    error_detail,
    error_from_wire,
    translate_native,
)

__all__ = ["TRACEBACK_SEPARATOR", "MAX_DESCRIPTION", "error_answer", "translate_failure", "describe_loss"]

#: Separates an error's message from the traceback that may follow it.
TRACEBACK_SEPARATOR = "\n--- remote traceback ---\n"
#: Longest ``_error_description`` sent, in bytes (it must fit one AMP value).
MAX_DESCRIPTION = 60000
_MAX_CODE = 200


def error_answer(exc: BaseException, send_traceback: bool = False) -> amp.RemoteAmpError:
    """The error answer to send for *exc* (which a responder raised)."""
    type_name, message, *tb = error_detail(exc, send_traceback)
    description = clip_utf8(message, MAX_DESCRIPTION)
    room = MAX_DESCRIPTION - len(description.encode("utf-8")) - len(TRACEBACK_SEPARATOR)
    if tb and room > 0:
        description += TRACEBACK_SEPARATOR + clip_utf8(tb[0], room)
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

    * an error answer (``RemoteAmpError``, ``UnknownRemoteError``,
      ``UnhandledCommand``) becomes the core error its code names, or
      :class:`RemoteCallFailed` with that type name;
    * AMP's size limit is a :class:`ProtocolError`, a switched protocol a
      :class:`ConnectionLost`;
    * the rest as on every backend (:func:`workerwire.errors.translate_native`).
    """
    value = failure.value
    if isinstance(value, amp.RemoteAmpError):
        return Failure(_from_answer(value.errorCode, value.description))
    if isinstance(value, amp.UnhandledCommand):
        code, description = (value.args + (b"", ""))[:2]
        return Failure(_from_answer(code if isinstance(code, bytes) else amp.UNHANDLED_ERROR_CODE, description))
    if isinstance(value, amp.ProtocolSwitched):
        return Failure(ConnectionLost(describe_loss(failure)))
    if isinstance(value, amp.TooLong):
        return Failure(ProtocolError(f"AMP size limit: {value!r}"))
    return translate_native(failure)
