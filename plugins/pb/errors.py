"""PB's native failures in, core errors out; and errors as PB sends them.

:func:`core_error` is the one translation from anything PB, jelly, banana or
the peer can fail with into a :mod:`workerwire.errors` type.  A failure the
peer sent (a ``CopiedFailure``) is mapped by the last dotted component of its
type name, so ``buildbot_worker.base.UnknownCommand`` becomes
:class:`~workerwire.errors.UnknownCommand` and ``builtins.ValueError`` becomes
:class:`~workerwire.errors.RemoteCallFailed` with type name ``ValueError``.

:func:`wire_failure` builds what this side sends: a failure that a stock PB
peer unjellies as its usual ``CopiedFailure``, carrying the type name and
message only (a traceback only when the link options ask for it).
"""

from __future__ import annotations

from typing import Any

from twisted.cred import error as cred_error
from twisted.python.failure import Failure
from twisted.python.reflect import qual
from twisted.spread import banana, jelly, pb

from workerwire.errors import (
    LOGIN_REFUSAL_NAMES,
    ConnectionLost,
    LoginRefused,
    ProtocolError,
    RemoteCallFailed,
    UnsupportedValue,
    WorkerwireError,
    error_from_wire,
    error_to_wire,
    translate_native,
    type_name_of,
)

__all__ = ["core_error", "remote_type_name", "wire_failure", "WireFailure", "NO_TRACEBACK", "MAX_ERROR_MESSAGE"]

#: What PB sends in place of a traceback it does not send.
NO_TRACEBACK = "Traceback unavailable\n"

#: Longest error message sent (longer ones are cut; a message is not a value).
MAX_ERROR_MESSAGE = 64 * 1024


def remote_type_name(failure: Any) -> str:
    """The peer's exception type name (last dotted component) of a copied failure."""
    return type_name_of(failure.type)


def core_error(failure: Failure | BaseException) -> WorkerwireError:
    """Translate a native failure or exception into a core error (what is
    PB's here, the rest by :func:`workerwire.errors.translate_native`)."""
    if isinstance(failure, pb.CopiedFailure):
        name = remote_type_name(failure)
        tb = getattr(failure, "traceback", None)
        if name in LOGIN_REFUSAL_NAMES:
            return LoginRefused(str(failure.value))
        return error_from_wire(name, str(failure.value), tb if isinstance(tb, str) and tb != NO_TRACEBACK else None)
    exc = failure.value if isinstance(failure, Failure) else failure
    if isinstance(exc, pb.RemoteError):
        tb = exc.remoteTraceback if isinstance(exc.remoteTraceback, str) else None
        return error_from_wire(type_name_of(exc.remoteType), str(exc), tb if tb != NO_TRACEBACK else None)
    if isinstance(exc, (pb.PBConnectionLost, pb.DeadReferenceError)):
        return ConnectionLost(f"connection lost: {exc}" if str(exc) else "connection lost")
    if isinstance(exc, (banana.BananaError, jelly.InsecureJelly)):
        return UnsupportedValue(f"PB cannot carry this value: {exc}")
    if isinstance(exc, pb.ProtocolError):
        return ProtocolError(str(exc))
    error = translate_native(Failure(exc)).value if isinstance(exc, BaseException) else None
    return error if isinstance(error, WorkerwireError) else RemoteCallFailed(type(exc).__name__, str(exc))


class WireFailure(pb.Copyable):
    """A failure as this side sends it.

    On the wire it is exactly a stock ``CopyableFailure`` (a stock peer
    unjellies it as its usual ``CopiedFailure``), without frames, carrying
    the type name, message and parents chosen by :func:`wire_failure`.
    """

    def __init__(self, wire_type: str, message: str, parents: list[str], traceback: str | None):
        self.wire_type = wire_type
        self.message = message if len(message) <= MAX_ERROR_MESSAGE else message[:MAX_ERROR_MESSAGE] + " [cut]"
        self.parents = parents
        self.traceback = traceback

    def getTypeToCopy(self) -> bytes:
        return qual(pb.CopyableFailure).encode("utf-8")

    def getStateToCopy(self) -> dict[str, Any]:
        return {
            "type": self.wire_type.encode("utf-8"),
            "value": self.message,
            "parents": list(self.parents),
            "traceback": self.traceback if self.traceback is not None else NO_TRACEBACK,
            "count": 0, "captureVars": False, "tb": None, "pickled": 1,
            "frames": [], "stack": [], "unsafeTracebacks": int(self.traceback is not None),
        }

    def __repr__(self) -> str:
        return f"<WireFailure {self.wire_type}: {self.message[:80]!r}>"


def wire_failure(error: Failure | BaseException, tracebacks: bool = False) -> WireFailure:
    """The failure to send for *error*: type name and message as the
    contract's :func:`~workerwire.errors.error_to_wire` gives them.

    A refused login also names twisted.cred's ``UnauthorizedLogin`` among its
    parents, so a stock buildbot-worker treats it as a refusal and retries
    rather than stopping.
    """
    if isinstance(error, pb.CopiedFailure):  # relaying what a peer sent
        error = core_error(error)
    failure = error if isinstance(error, Failure) else Failure(error)
    exc = failure.value if isinstance(failure.value, BaseException) else Exception(str(failure.value))
    type_name, message = error_to_wire(exc)
    if isinstance(exc, RemoteCallFailed):
        wire_type = type_name
        parents = [type_name, "builtins.Exception"]
    else:
        wire_type = qual(type(exc))
        parents = [qual(c) for c in type(exc).__mro__]
    if isinstance(exc, LoginRefused):
        parents += [qual(cred_error.UnauthorizedLogin), qual(cred_error.LoginFailed)]
    traceback = None
    if tracebacks:
        traceback = failure.getTraceback()
    return WireFailure(wire_type, message, parents, traceback)
