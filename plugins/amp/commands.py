"""The amp dialect's commands and argument types: the wire contract in code.

Every class here is one row of the command table in ``docs/protocols/amp.md``;
``tests/test_amp_spec.py`` checks that the two agree.  Argument types:

* ``Integer``: ASCII decimal, optional leading ``-``, no leading zeros.
* ``String``: raw bytes.  ``Unicode``: UTF-8 text.
* ``ListOf<Unicode>``: concatenated ``(2-byte big-endian length, UTF-8 bytes)``.
* ``Value<...>``: a contract value (:mod:`workerwire.values`) as its
  MessagePack encoding, inline under the argument's key; when the encoding is
  larger than one AMP value, either inline in parts (the keys ``<argument>``,
  ``<argument>.1``, ``<argument>.2``... of the same box, with the peer's
  ``parts`` capability) or carried by preceding ``Chunk`` boxes and named by
  the key ``<argument>.transfer`` (see :mod:`workerwire.parts`).
"""

from __future__ import annotations

import re
import struct
from typing import Any, ClassVar, Protocol

from twisted.protocols import amp

from workerwire.errors import (
    BuilderBusy,
    DuplicateCommandId,
    DuplicateWorker,
    LoginRefused,
    ProtocolError,
    UnknownBuilder,
    UnknownCommand,
    UnsupportedValue,
)
from workerwire.parts import Encoded

__all__ = [
    "PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "CAPABILITIES",
    "REQUIRED_BY_MASTER",
    "REQUIRED_BY_WORKER",
    "TRANSFER_SUFFIX",
    "Integer",
    "TextList",
    "Value",
    "OptionalValue",
    "Encoded",
    "ValueCarrier",
    "WireCommand",
    "VersionMismatch",
    "MissingCapability",
    "Hello",
    "Login",
    "Chunk",
    "Print",
    "GetWorkerInfo",
    "SetBuilderList",
    "StartBuild",
    "StartCommand",
    "InterruptCommand",
    "Shutdown",
    "Ping",
    "Update",
    "Complete",
    "Keepalive",
    "ShutdownRequest",
    "TransferCall",
    "COMMANDS",
    "type_name",
]

#: The newest dialect version this implementation speaks.
PROTOCOL_VERSION = 1
#: The oldest dialect version this implementation speaks.
MIN_PROTOCOL_VERSION = 1

#: Capabilities of dialect version 1 (see the spec, "Capabilities").
CAPABILITIES = ("chunks", "window", "parts", "transfers")
#: A worker lacking one of these is refused by the master.
REQUIRED_BY_MASTER = frozenset({"chunks", "window"})
#: A master lacking one of these is refused by the worker.
REQUIRED_BY_WORKER = frozenset({"chunks"})

#: Suffix of the key that names the transfer carrying a chunked Value.
TRANSFER_SUFFIX = b".transfer"

_INT_RE = re.compile(rb"\A(?:0|-?[1-9][0-9]{0,19})\Z")


class VersionMismatch(Exception):
    """The peers share no dialect version (error code ``VersionMismatch``)."""


class MissingCapability(Exception):
    """A peer lacks a capability the other requires (``MissingCapability``)."""


class Integer(amp.Argument):
    """ASCII decimal integer, strictly parsed (no spaces, ``+``, ``_`` or leading zeros)."""

    wire_type = "Integer"

    def fromString(self, inString: bytes) -> int:
        if not _INT_RE.match(inString):
            raise ProtocolError(f"not an Integer: {inString[:40]!r}")
        return int(inString)

    def toString(self, inObject: int) -> bytes:
        return b"%d" % (inObject,)


class TextList(amp.Argument):
    """``ListOf<Unicode>``: each item is a 2-byte big-endian length and UTF-8 bytes."""

    wire_type = "ListOf<Unicode>"
    max_items = 64

    def fromString(self, inString: bytes) -> list[str]:
        items: list[str] = []
        pos = 0
        while pos < len(inString):
            if len(items) >= self.max_items:
                raise ProtocolError(f"ListOf<Unicode> with more than {self.max_items} items")
            if pos + 2 > len(inString):
                raise ProtocolError("ListOf<Unicode> ends inside a length prefix")
            (n,) = struct.unpack("!H", inString[pos:pos + 2])
            if pos + 2 + n > len(inString):
                raise ProtocolError("ListOf<Unicode> item runs past the end of the value")
            try:
                items.append(inString[pos + 2:pos + 2 + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError("ListOf<Unicode> item is not UTF-8") from None
            pos += 2 + n
        return items

    def toString(self, inObject: list[str]) -> bytes:
        out = []
        for item in inObject:
            data = item.encode("utf-8")
            out.append(struct.pack("!H", len(data)))
            out.append(data)
        return b"".join(out)


class ValueCarrier(Protocol):
    """What a ``Value`` argument needs from the protocol it is used on."""

    def put_value(self, key: bytes, strings: dict[bytes, bytes], value: Any) -> None:
        """Encode *value* into *strings* (inline, or planned as chunks)."""

    def take_value(self, key: bytes, strings: dict[bytes, bytes], kinds: tuple[type, ...]) -> Any:
        """Decode the value of *key* (inline or from a finished transfer)."""


def _keyword(name: bytes) -> str:
    """The keyword argument of the wire name *name* (``command_id``: as AMP names it)."""
    return name.decode("ascii").replace("-", "_")


class Value(amp.Argument):
    """A contract value; *kinds* restricts the decoded top-level type."""

    _NAMES = {type(None): "nil", str: "str", list: "list", dict: "dict", object: "any"}

    def __init__(self, *kinds: type):
        super().__init__(optional=False)
        self.kinds = kinds or (object,)

    @property
    def wire_type(self) -> str:
        return "Value<" + "|".join(self._NAMES[k] for k in self.kinds) + ">"

    def toBox(self, name: bytes, strings: Any, objects: dict[str, Any], proto: ValueCarrier) -> None:
        value = objects.pop(_keyword(name))
        proto.put_value(name, strings, value)

    def fromBox(self, name: bytes, strings: Any, objects: dict[str, Any], proto: ValueCarrier) -> None:
        objects[_keyword(name)] = proto.take_value(
            name, strings, self.kinds)


class OptionalValue(Value):
    """A ``Value`` argument that may be absent (both its keys missing): ``None``."""

    def __init__(self, *kinds: type):
        super().__init__(*kinds)
        self.optional = True

    @property
    def wire_type(self) -> str:
        return super().wire_type + "?"

    def toBox(self, name: bytes, strings: Any, objects: dict[str, Any], proto: ValueCarrier) -> None:
        value = objects.pop(_keyword(name), None)
        if value is not None:
            proto.put_value(name, strings, value)

    def fromBox(self, name: bytes, strings: Any, objects: dict[str, Any], proto: ValueCarrier) -> None:
        if name not in strings and name + TRANSFER_SUFFIX not in strings:
            objects[_keyword(name)] = None
            return
        super().fromBox(name, strings, objects, proto)


def type_name(argument: amp.Argument) -> str:
    """The type name of *argument* as the spec writes it."""
    explicit = getattr(argument, "wire_type", None)
    if explicit is not None:
        return str(explicit)
    if isinstance(argument, amp.Unicode):
        return "Unicode"
    if isinstance(argument, amp.String):
        return "String"
    raise TypeError(f"no spec name for {argument!r}")


class WireCommand(amp.Command):
    """Base of the dialect's commands: adds who sends it, for the spec table."""

    #: ``"worker→master"``, ``"master→worker"`` or ``"both"``.
    direction: ClassVar[str] = "both"


# -- handshake ----------------------------------------------------------------


class Hello(WireCommand):
    """First box of every connection (worker to master): versions and capabilities."""

    direction = "worker→master"
    arguments = [
        (b"min_version", Integer()),
        (b"max_version", Integer()),
        (b"capabilities", TextList()),
        (b"max_message_size", Integer()),
    ]
    response = [
        (b"version", Integer()),
        (b"capabilities", TextList()),
        (b"challenge", amp.String()),
        (b"max_message_size", Integer()),
        (b"window", Integer()),
    ]
    errors = {
        VersionMismatch: b"VersionMismatch",
        MissingCapability: b"MissingCapability",
        ProtocolError: b"ProtocolError",
    }


class Login(WireCommand):
    """Second box: the worker's name and HMAC-SHA256(password, challenge)."""

    direction = "worker→master"
    arguments = [
        (b"username", amp.Unicode()),
        (b"response", amp.String()),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    errors = {
        LoginRefused: b"LoginRefused",
        DuplicateWorker: b"DuplicateWorker",
        ProtocolError: b"ProtocolError",
    }


# -- large values -------------------------------------------------------------


class Chunk(WireCommand):
    """One piece of a Value too large for one AMP value; never answered."""

    direction = "both"
    requiresAnswer = False
    arguments = [
        (b"transfer", Integer()),
        (b"offset", Integer()),
        (b"total", Integer()),
        (b"data", amp.String()),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []


# -- master to worker ---------------------------------------------------------


class Print(WireCommand):
    direction = "master→worker"
    arguments = [(b"message", Value(str))]


class GetWorkerInfo(WireCommand):
    direction = "master→worker"
    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response = [(b"info", Value(dict))]


class SetBuilderList(WireCommand):
    direction = "master→worker"
    arguments = [(b"builders", Value(list))]
    response = [(b"names", Value(list))]


class StartBuild(WireCommand):
    direction = "master→worker"
    arguments = [(b"builder", Value(str))]
    errors = {UnknownBuilder: b"UnknownBuilder"}


class StartCommand(WireCommand):
    direction = "master→worker"
    arguments = [
        (b"builder", Value(str)),
        (b"command_id", Value(str)),
        (b"command_name", Value(str)),
        (b"args", Value(dict)),
        (b"handles", OptionalValue(dict)),
    ]
    errors = {
        UnknownBuilder: b"UnknownBuilder",
        UnknownCommand: b"UnknownCommand",
        BuilderBusy: b"BuilderBusy",
        DuplicateCommandId: b"DuplicateCommandId",
        UnsupportedValue: b"UnsupportedValue",
    }


class InterruptCommand(WireCommand):
    direction = "master→worker"
    arguments = [
        (b"builder", Value(str)),
        (b"command_id", Value(str)),
        (b"why", Value(str)),
    ]


class Shutdown(WireCommand):
    direction = "master→worker"


class Ping(WireCommand):
    direction = "master→worker"


# -- worker to master ---------------------------------------------------------


class Update(WireCommand):
    direction = "worker→master"
    arguments = [
        (b"command_id", Value(str)),
        (b"updates", Value(list)),
    ]
    errors = {ProtocolError: b"ProtocolError"}


class Complete(WireCommand):
    direction = "worker→master"
    arguments = [
        (b"command_id", Value(str)),
        (b"error", Value(type(None), list)),
    ]
    errors = {ProtocolError: b"ProtocolError"}


class TransferCall(WireCommand):
    """A call on a transfer handle the master put in a command's args
    (capability ``transfers``)."""

    direction = "worker→master"
    arguments = [
        (b"command_id", Value(str)),
        (b"handle", Integer()),
        (b"method", Value(str)),
        (b"args", Value(list)),
    ]
    response = [(b"result", Value())]
    errors = {ProtocolError: b"ProtocolError"}


class Keepalive(WireCommand):
    direction = "worker→master"


class ShutdownRequest(WireCommand):
    direction = "worker→master"


#: Every command of the dialect, in spec order.
COMMANDS: tuple[type[WireCommand], ...] = (
    Hello,
    Login,
    Chunk,
    Print,
    GetWorkerInfo,
    SetBuilderList,
    StartBuild,
    StartCommand,
    InterruptCommand,
    Shutdown,
    Ping,
    Update,
    Complete,
    TransferCall,
    Keepalive,
    ShutdownRequest,
)
