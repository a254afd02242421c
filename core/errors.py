"""The errors every backend raises.

Masters catch these and nothing else: a backend translates its native failures
(``pb.PBConnectionLost``, ``amp.RemoteAmpError``, ...) into one of them at one
place.  Errors that cross the wire travel as ``(type name, message)``; the
receiving side rebuilds a core error with :func:`error_from_wire`.
"""

from __future__ import annotations

import traceback as _traceback

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

__all__ = [
    "WorkerwireError",
    "ConnectionLost",
    "RemoteCallFailed",
    "UnknownBuilder",
    "UnknownCommand",
    "CommandConflict",
    "BuilderBusy",
    "DuplicateCommandId",
    "LoginRefused",
    "DuplicateWorker",
    "ProtocolError",
    "UnsupportedValue",
    "RegistrationError",
    "AddressError",
    "BackendNotFound",
    "BackendLoadFailed",
    "error_to_wire",
    "error_from_wire",
    "error_detail",
    "clip_utf8",
    "describe_loss",
    "translate_native",
    "peer_text",
    "MAX_ECHO",
]

#: Most characters of the peer's own input an error message repeats
#: (:func:`peer_text`), and of a :class:`ProtocolError`'s message sent back
#: (:func:`error_to_wire`): an answer to bad input never grows with the input.
MAX_ECHO = 1024


def peer_text(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message about input from the peer, cut
    to about *limit* characters with the full length said, so that answering
    a request never echoes an unbounded part of it."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= limit + 2 else text[:limit] + f"... ({len(text)} characters)"


class WorkerwireError(Exception):
    """Base class of every error a workerwire contract method raises."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConnectionLost(WorkerwireError):
    """The link to the peer is gone.

    Raised by calls pending when the link dropped and by every call made after
    it; given to ``remote_complete`` of commands that were running.
    """


class RemoteCallFailed(WorkerwireError):
    """The peer raised an error while serving a call.

    :ivar type_name: the peer's exception type name (e.g. ``"OSError"``).
    :ivar remote_message: the peer's exception message.
    :ivar remote_traceback: the peer's traceback text, only when the peer was
        configured to send it; ``None`` otherwise.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str | None = None):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = remote_traceback


class UnknownBuilder(WorkerwireError):
    """The worker has no builder of that name (set it with ``remoteSetBuilderList``)."""


class UnknownCommand(WorkerwireError):
    """The worker does not offer a command of that name."""


class CommandConflict(WorkerwireError):
    """A command cannot start because of another one."""


class BuilderBusy(CommandConflict):
    """A command is already running on that builder; one runs per builder at a time."""


class DuplicateCommandId(CommandConflict):
    """A command with that id is already running on this connection."""


class LoginRefused(WorkerwireError):
    """The worker's login was refused: unknown worker name or wrong password."""


class DuplicateWorker(LoginRefused):
    """The master already has a live connection for this worker name."""


class ProtocolError(WorkerwireError):
    """The peer sent malformed, oversized or out-of-place input."""


class UnsupportedValue(WorkerwireError, TypeError):
    """A value that no backend can carry (see :mod:`workerwire.values`)."""


class RegistrationError(WorkerwireError):
    """A registration cannot be made (e.g. the same worker twice on one port)."""


class AddressError(WorkerwireError, ValueError):
    """A port or address string the backend cannot use; the message says what is valid."""


class BackendNotFound(WorkerwireError, LookupError):
    """No installed backend has that name; the message lists the installed ones."""


class BackendLoadFailed(WorkerwireError):
    """A backend is installed but failed to import or does not satisfy the contract."""


# Errors whose type survives the trip across the wire.  Anything else arrives
# as RemoteCallFailed carrying the original type name.
_WIRE_TYPES: dict[str, type[WorkerwireError]] = {
    cls.__name__: cls
    for cls in (
        ConnectionLost,
        UnknownBuilder,
        UnknownCommand,
        BuilderBusy,
        DuplicateCommandId,
        LoginRefused,
        DuplicateWorker,
        ProtocolError,
        UnsupportedValue,
    )
}


def error_to_wire(exc: BaseException) -> tuple[str, str]:
    """Return ``(type name, message)`` for sending *exc* to the peer.

    A :class:`ProtocolError` (an answer to the peer's bad input) is cut to
    :data:`MAX_ECHO` characters."""
    if isinstance(exc, RemoteCallFailed):
        return exc.type_name, exc.remote_message
    if isinstance(exc, ProtocolError):
        text = exc.message
        return type(exc).__name__, text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."
    if isinstance(exc, WorkerwireError):
        return type(exc).__name__, exc.message
    return type(exc).__name__, str(exc)


def error_from_wire(
    type_name: str, message: str, remote_traceback: str | None = None
) -> WorkerwireError:
    """Rebuild the core error the peer described.

    Core error names map back to their class; any other name becomes
    :class:`RemoteCallFailed` with that name.
    """
    cls = _WIRE_TYPES.get(type_name)
    if cls is not None:
        return cls(message)
    return RemoteCallFailed(type_name, message, remote_traceback)


# -- Twisted's own failures, and names of the peer's (moved here from pb) ------------
#
# describe_loss and translate_native are what the amp-slim branch adds to this
# file too, with the same names, signatures and behaviour (one copy survives
# the merge).


#: Type names a peer may fail a login with that mean "refused" (twisted.cred's
#: ``UnauthorizedLogin`` family, as Buildbot's master and PB's portal raise it).
LOGIN_REFUSAL_NAMES = frozenset({"UnauthorizedLogin", "LoginFailed", "UnhandledCredentials"})


def type_name_of(raw: object) -> str:
    """A peer's exception type name as core errors carry it: the last dotted
    component of a qualified name (``buildbot_worker.base.UnknownCommand`` is
    ``UnknownCommand``), from str, bytes or a class."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    elif isinstance(raw, type):
        raw = f"{raw.__module__}.{raw.__qualname__}"
    return str(raw).rsplit(".", 1)[-1] or "Exception"


def error_detail(exc: BaseException, send_traceback: bool = False) -> list[str]:
    """``[type name, message]`` for sending *exc* to the peer (:func:`error_to_wire`),
    with its formatted traceback appended when *send_traceback* and it has one
    (``LinkOptions.send_tracebacks``); :func:`error_from_wire` takes the three back."""
    detail = list(error_to_wire(exc))
    if send_traceback and exc.__traceback__ is not None:
        detail.append("".join(_traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return detail


def clip_utf8(text: str, limit: int) -> str:
    """*text* cut to at most *limit* bytes of UTF-8 (ending in ``...`` when cut),
    never in the middle of a character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:max(0, limit - 3)].decode("utf-8", "ignore") + "..."


def describe_loss(reason: Failure | BaseException | str) -> str:
    """A short human reason for a lost link, from the reason Twisted gave
    ``connectionLost`` (a text is taken as it is)."""
    if isinstance(reason, str):
        return reason
    value = reason.value if isinstance(reason, Failure) else reason
    if isinstance(value, net_error.ConnectionDone):
        return "connection closed"
    if isinstance(value, net_error.ConnectionAborted):
        return "connection aborted"
    text = str(value).strip() or type(value).__name__
    return f"connection lost: {text}"


def translate_native(failure: Failure) -> Failure:
    """What every backend's ``translate_failure`` does after its own native
    errors: core errors pass through; a closed or lost connection becomes
    :class:`ConnectionLost` (:func:`describe_loss`), as do a cancelled call
    and a connection that could not be made (Twisted's ``ConnectError``);
    twisted.cred's ``UnauthorizedLogin`` becomes :class:`LoginRefused`;
    anything else becomes :class:`RemoteCallFailed` with its type name."""
    value = failure.value
    if isinstance(value, WorkerwireError):
        return failure
    if isinstance(value, net_error.ConnectionClosed):
        return Failure(ConnectionLost(describe_loss(failure)))
    if isinstance(value, CancelledError):
        return Failure(ConnectionLost("call cancelled"))
    if isinstance(value, net_error.ConnectError):
        return Failure(ConnectionLost(f"connection lost: {value}" if str(value) else "connection lost"))
    if isinstance(value, UnauthorizedLogin):
        return Failure(LoginRefused(str(value)))
    return Failure(RemoteCallFailed(type(value).__name__, str(value)))


__all__ += ["LOGIN_REFUSAL_NAMES", "type_name_of"]
