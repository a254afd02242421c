"""What jelly may carry on a workerwire PB link, in each direction.

Jelly can rebuild arbitrary object graphs (classes, instances, modules,
functions).  A workerwire broker accepts only the contract's plain data
(:mod:`workerwire.values`) plus the two PB things Buildbot's dialect needs:
references to remote objects (the bot, the builders, the command reference)
and copied failures (``complete(failure)`` and call errors).  Everything else
is refused while unjellying, before any object is built.

Also here: :func:`node_limit`, how many values one message may unpack to
(what jelly delivered becomes a contract value through core's
:func:`~workerwire.values.from_peer`), and :func:`fits`, which says whether a
value can travel as ordinary jelly, given banana's per-string and per-list
limit of 640 KiB.
"""

from __future__ import annotations

from typing import Any

from twisted.spread import banana, jelly


__all__ = ["IncomingSecurity", "OutgoingSecurity", "INCOMING", "OUTGOING", "fits", "node_limit", "ATOM_LIMIT", "PLAIN_DEPTH"]

#: Largest str (in UTF-8 bytes) or bytes value, and longest list, one banana
#: frame element may hold.
ATOM_LIMIT = banana.SIZE_LIMIT - 16

#: Deepest nesting sent as ordinary jelly (jelly recurses per level); deeper
#: values travel through the chunking extension.
PLAIN_DEPTH = 64

_COPIED_FAILURE = b"twisted.spread.pb.CopyableFailure"


class _AllowList(jelly.SecurityOptions):
    """Jelly rules that allow exactly the type names in :attr:`ALLOWED`:
    no modules, no classes."""

    ALLOWED: frozenset[bytes] = frozenset()

    def isTypeAllowed(self, typeName: Any) -> bool:
        if isinstance(typeName, str):
            typeName = typeName.encode("utf-8")
        return typeName in self.ALLOWED

    def isModuleAllowed(self, moduleName: Any) -> bool:
        return False

    def isClassAllowed(self, klass: Any) -> bool:
        return False


class IncomingSecurity(_AllowList):
    """Unjelly only plain data, remote references and copied failures."""

    ALLOWED = frozenset({
        b"None", b"unicode", b"boolean", b"list", b"tuple", b"dictionary",
        b"reference", b"dereference", b"remote", _COPIED_FAILURE,
    })


class OutgoingSecurity(_AllowList):
    """Jelly only the builtin plain types (plus PB's own jellyables:
    references and failures, which jelly handles before asking)."""

    ALLOWED = frozenset(
        f"builtins.{name}".encode() for name in
        ("str", "bytes", "int", "float", "bool", "NoneType", "list", "tuple", "dict")
    )


#: The rules every broker shares: they hold no per-connection state, and one
#: instance each saves a broker the two ~600-byte type tables jelly's
#: SecurityOptions builds (measured with tracemalloc during a 1,000-worker storm).
INCOMING = IncomingSecurity()
OUTGOING = OutgoingSecurity()


def node_limit(max_message_size: int) -> int:
    """Most values one message may unpack to: a jelly value costs at least two
    bytes on the wire, so no tree within the message size limit reaches it;
    only shared references (jelly's ``dereference``) expanded could."""
    return max(max_message_size // 2, 1024)


#: :func:`node_limit` of the default message size limit.
DEFAULT_NODES = node_limit(64 * 1024 * 1024)


def fits(value: Any, depth: int = 0) -> bool:
    """True if *value* can be sent as ordinary jelly within banana's limits.

    Leaves that are not containers and not str/bytes (numbers, references,
    failures) always fit.
    """
    kind = type(value)
    if kind is str:
        n = len(value)
        if n * 4 <= ATOM_LIMIT:
            return True
        return n <= ATOM_LIMIT and len(value.encode("utf-8", "surrogatepass")) <= ATOM_LIMIT
    if kind is bytes:
        return len(value) <= ATOM_LIMIT
    if kind is list or kind is tuple:
        if len(value) >= ATOM_LIMIT or depth >= PLAIN_DEPTH:
            return False
        return all(fits(item, depth + 1) for item in value)
    if kind is dict:
        if len(value) >= ATOM_LIMIT or depth >= PLAIN_DEPTH:
            return False
        return all(fits(k, depth + 1) and fits(v, depth + 1) for k, v in value.items())
    return True
