"""The values a contract call may carry, and the one codec that checks them.

Arguments, results and command updates are JSON-like:

* ``None``, ``bool``, ``float``;
* ``int`` in the signed/unsigned 64-bit range ``-2**63 .. 2**64 - 1``;
* ``str`` (any Unicode, including non-BMP characters; lone surrogates are not
  text and are refused) and ``bytes``;
* ``list`` (a ``tuple`` is accepted and arrives as a ``list``);
* ``dict`` whose keys are ``str``.

Every backend carries exactly these values and refuses anything else with
:class:`~workerwire.errors.UnsupportedValue`, so a master developed against one
backend never meets a surprise on another.  Sizes are not limited by the
contract: a backend that has a frame limit chunks.

File transfer handles are not values (nothing here accepts them): they may
appear only as ``args['writer']`` / ``args['reader']`` of a command start,
which :mod:`workerwire.transfer` takes out before the args are checked.
"""

from __future__ import annotations

from typing import Any, Union

import msgpack

from .errors import ProtocolError, UnsupportedValue

__all__ = ["Value", "check_value", "is_value", "from_peer", "encode", "encode_pairs", "array_header", "decode",
           "INT_MIN", "INT_MAX"]

Value = Union[None, bool, int, float, str, bytes, list[Any], dict[str, Any]]

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

_MAX_DEPTH = 256


def check_value(value: object, where: str = "value") -> None:
    """Raise :class:`UnsupportedValue` unless *value* is a contract value.

    :param where: names the value in the error message (e.g. ``"args"``).
    :raises UnsupportedValue: naming the path to the offending part and what
        would be valid.
    """
    if not _valid(value, 0):
        _check(value, where, 0)


def is_value(value: object) -> bool:
    """True if *value* is a contract value: :func:`check_value` without the
    error (no path is built, so a caller checking many values pays only for
    the walk and calls :func:`check_value` for the message when this fails)."""
    return _valid(value, 0)


def _valid(value: Any, depth: int) -> bool:  # Any: narrowed by `type(value) is`, which mypy does not follow
    """True if *value* passes :func:`_check`; no error paths are built (the
    common case pays only for the walk).  Must accept exactly what
    :func:`_check` accepts."""
    if depth > _MAX_DEPTH:
        return False
    kind = type(value)
    if kind is str:
        if value.isascii():
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if kind is int:
        return INT_MIN <= value <= INT_MAX
    if value is None or kind is bool or kind is float or kind is bytes:
        return True
    some: Any = value
    if kind is list or kind is tuple or kind is dict:
        if depth >= _MAX_DEPTH:
            return False  # the 257th level of containers
    if kind is list or kind is tuple:
        for item in some:
            if type(item) is str and item.isascii():
                continue
            if not _valid(item, depth + 1):
                return False
        return True
    if kind is dict:
        for key, item in some.items():
            if type(key) is not str:
                return False
            if type(item) is str and item.isascii():
                continue
            if not _valid(item, depth + 1):
                return False
        return True
    return False


def _check(value: Any, where: str, depth: int) -> None:  # Any: as _valid
    """Raise :class:`UnsupportedValue`, with the path to the offending part,
    unless *value* is a contract value."""
    kind = type(value)
    if depth > _MAX_DEPTH or (depth >= _MAX_DEPTH and kind in (list, tuple, dict)):
        if len(where) > 60:
            where = f"{where[:40]}...{where[-12:]}"
        raise UnsupportedValue(f"{where}: nested deeper than {_MAX_DEPTH} levels of lists and dicts")
    if value is None or kind is bool or kind is float or kind is bytes:
        return
    if kind is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise UnsupportedValue(
                    f"{where}: str with a lone surrogate at index {e.start} is not valid Unicode text"
                ) from None
        return
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise UnsupportedValue(
                f"{where}: int {value} is outside the 64-bit range {INT_MIN}..{INT_MAX}"
            )
        return
    if kind is list or kind is tuple:
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]", depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise UnsupportedValue(
                    f"{where}: dict key {key!r} is a {type(key).__name__}; keys must be str"
                )
            _check(item, f"{where}[{key!r}]", depth + 1)
        return
    raise UnsupportedValue(
        f"{where}: {kind.__name__} cannot be carried; valid values are None, bool, "
        "int (64-bit), float, str, bytes, list/tuple and dict with str keys"
    )


def from_peer(value: Any, where: str, limit: int, budget: list[int] | None = None) -> Any:
    """*value*, as a peer's decoder built it, as a contract value.

    For a backend whose codec builds Python objects itself (PB's jelly, a JSON
    or CBOR decoder...) rather than going through :func:`decode`: tuples
    become lists, and the contract's rules (:func:`check_value`) hold for
    what the peer sent.  At most *limit* values are unpacked, so a message
    whose decoder shares containers (jelly's references) cannot expand into
    a tree of unbounded size.

    :param where: names the value in the error message (e.g. ``"worker info"``).
    :param budget: a one-item list shared by several calls, counting down
        from *limit* (for the values of one message).
    :raises ProtocolError: naming *where* and what is not a contract value
        (it is the peer's error, not the caller's).
    """
    try:
        return _from_peer(value, 0, [limit] if budget is None else budget, where)
    except _Refused:
        try:
            _check(value, where, 0)  # says what is wrong, and where in the value
        except UnsupportedValue as e:
            raise ProtocolError(f"peer sent an unsupported value: {e}") from None
        raise AssertionError(f"{where}: _check accepted what from_peer refused") from None  # pragma: no cover


class _Refused(Exception):
    """Inside :func:`from_peer`: a part of the value is not a contract value."""


def _from_peer(value: Any, depth: int, budget: list[int], where: str) -> Any:  # Any: as _valid
    budget[0] -= 1
    if budget[0] < 0:
        raise ProtocolError(f"{where}: the message unpacks to too many values (shared references?)")
    kind = type(value)
    if (kind is str and value.isascii()) or kind is bytes or kind is float or kind is bool or value is None:
        return value
    if kind is int and INT_MIN <= value <= INT_MAX:
        return value
    if depth < _MAX_DEPTH:
        if kind is list or kind is tuple:
            return [_from_peer(item, depth + 1, budget, where) for item in value]
        if kind is dict and all(type(key) is str for key in value):
            return {key: _from_peer(item, depth + 1, budget, where) for key, item in value.items()}
    if kind is str and _valid(value, depth):
        return value
    raise _Refused


# One packer for the process: ``pack`` runs in C under the GIL without calling
# back into Python (no ``default`` hook), and resets itself after an error.
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def encode(value: object, where: str = "value", checked: bool = False) -> bytes:
    """Check *value* and return its canonical encoding (MessagePack).

    :param checked: the caller has already passed *value* (unchanged since)
        through :func:`check_value`; it is not walked again.
    :raises UnsupportedValue: if *value* is not a contract value.
    """
    if not checked and not _valid(value, 0):
        _check(value, where, 0)
    return _pack(value)


def encode_pairs(pairs: Any, big: int = 4096) -> tuple[list[bytes], int]:
    """The encodings of ``[key, value]`` *pairs*, back to back: what follows a
    MessagePack array header in :func:`encode` of a list of them (so several
    such runs after a header for their total count decode as one list), as
    pieces to concatenate, and their total length.

    A text or bytes value longer than *big* bytes is a piece of its own (text
    encoded to UTF-8 once, bytes not copied), so a sender can hand large
    output on without copying it through a packer.  The caller has checked
    the pairs (str keys, contract values).
    """
    pieces: list[bytes] = []
    size = 0
    for key, value in pairs:
        kind = type(value)
        if (kind is str or kind is bytes) and len(value) > big:
            data = value.encode("utf-8") if kind is str else value
            n = len(data)
            marks = b"\xd9\xda\xdb" if kind is str else b"\xc4\xc5\xc6"
            if n < 0x100:
                head = marks[0:1] + bytes((n,))
            elif n < 0x10000:
                head = marks[1:2] + n.to_bytes(2, "big")
            else:
                head = marks[2:3] + n.to_bytes(4, "big")
            prefix = b"\x92" + _pack(key) + head
            pieces.append(prefix)
            pieces.append(data)
            size += len(prefix) + n
        else:
            piece = _pack([key, value])
            pieces.append(piece)
            size += len(piece)
    return pieces, size


def array_header(n: int) -> bytes:
    """MessagePack's header of an array of *n* items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def decode(data: bytes, max_size: int | None = None, framing: int = 0) -> Any:
    """Decode bytes made by :func:`encode` (or by a peer following the same rules).

    :param max_size: refuse encodings longer than this many bytes.
    :param framing: levels of lists around the contract values that are the
        message's own framing (2 for a list of ``[key, value]`` update pairs):
        they do not count toward the nesting limit, so a value may be nested
        256 levels deep counted from itself on every backend.
    :raises ProtocolError: for malformed, trailing or oversized input, or for a
        decoded value that is not a contract value.
    """
    if max_size is not None and len(data) > max_size:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_size} bytes")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except msgpack.StackError:  # its decoder's own (non-recursive) nesting limit
        raise ProtocolError(f"peer sent an unsupported value: nested deeper than {_MAX_DEPTH} levels") from None
    except Exception as e:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed message: {type(e).__name__}: {e}") from None
    if not _valid(value, -framing):
        try:
            _check(value, "value", -framing)
        except UnsupportedValue as e:
            raise ProtocolError(f"peer sent an unsupported value: {e}") from None
    return value
