"""Errors on the msgpack wire: the one place native failures become core errors.

Buildbot's dialect answers a failed request with ``is_exception: True`` and
the exception's message as ``result`` (a str).  Between two workerwire ends
(the ``X-Workerwire-Dialect`` extension, ``docs/protocols/msgpack.md``) the
answer also carries ``error: [type name, message]`` (plus the traceback when
the sender was configured with ``send_tracebacks``), so the core error type
survives the trip.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from workerwire.errors import (
    RemoteCallFailed,
    UnknownBuilder,
    UnknownCommand,
    WorkerwireError,
    describe_loss,
    error_detail,
    error_from_wire,
    translate_native,
)

__all__ = ["RemoteError", "error_fields", "error_from_answer", "translate_failure", "describe_loss"]


class RemoteError(Exception):
    """The peer answered a request with ``is_exception``; :attr:`error` is the core error."""

    def __init__(self, error: WorkerwireError):
        super().__init__(str(error))
        self.error = error


def error_fields(exc: BaseException, extended: bool, send_traceback: bool = False) -> dict[str, Any]:
    """The keys of an error answer for *exc* (besides ``op`` and ``seq_number``)."""
    detail = error_detail(exc, send_traceback)
    fields: dict[str, Any] = {"result": detail[1], "is_exception": True}
    if extended:
        fields["error"] = detail
    return fields


def error_from_answer(msg: dict[str, Any]) -> WorkerwireError:
    """The core error an ``is_exception`` answer describes.

    A stock Buildbot peer sends only a message; the few it sends for the
    contract's own errors (an unknown command name) are recognised, anything
    else is :class:`RemoteCallFailed` of type ``RemoteWorkerError``, the name
    Buildbot gives it.
    """
    detail = msg.get("error")
    if (isinstance(detail, list) and len(detail) in (2, 3) and all(isinstance(p, str) for p in detail)):
        return error_from_wire(detail[0], detail[1], detail[2] if len(detail) == 3 else None)
    message = msg.get("result")
    text = message if isinstance(message, str) else repr(message)
    if "unrecognized WorkerCommand" in text:
        return UnknownCommand(text)
    if "unknown builder" in text.lower():
        return UnknownBuilder(text)
    return RemoteCallFailed("RemoteWorkerError", text)


def translate_failure(failure: Failure) -> Failure:
    """Turn a failure of a msgpack request into a core error."""
    if isinstance(failure.value, RemoteError):
        return Failure(failure.value.error)
    return translate_native(failure)
