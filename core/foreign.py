"""Naming what a client speaks when it does not speak a port's protocol.

A worker dialling the wrong port (another backend's, or a plain port with a
``tls:`` address) is a protocol error for the listener; the error alone
("Security precaution: more than 64 bytes of prefix", "key of 384 bytes")
does not tell an operator what went wrong.  :func:`foreign_hint` looks at
the first bytes the client sent (kept by the
:class:`~workerwire.login_guard.LoginTicket`) and says what they look like.
"""

from __future__ import annotations

__all__ = ["guess_protocol", "foreign_hint", "KEPT_BYTES"]

#: Bytes of a connection's input kept for the guess.
KEPT_BYTES = 32

_HTTP = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"OPTIONS ", b"DELETE ", b"PRI * ")


def guess_protocol(first: bytes) -> str | None:
    """``"tls"``, ``"http"``, ``"amp"``, ``"pb"`` or None (unknown), from a connection's first bytes."""
    if len(first) >= 3 and first[0] == 0x16 and first[1] == 0x03 and first[2] <= 0x04:
        return "tls"  # a TLS handshake record (ClientHello)
    if first.startswith(_HTTP):
        return "http"
    if len(first) >= 3 and first[1] == 0x80 and b"pb" in first[:KEPT_BYTES]:
        return "pb"  # banana: a list header, then the dialect offer b"pb"
    if len(first) >= 3 and first[0] == 0 and 1 <= first[1] <= 255 and first[2:3] == b"_":
        return "amp"  # a box: 2-byte key length, then an AMP key such as _ask or _command
    return None


def foreign_hint(first: bytes, backend: str) -> str:
    """``""``, or a clause to append to a protocol error on a *backend* port
    saying what the client seems to speak instead."""
    what = guess_protocol(first)
    if what is None or what == backend:
        return ""
    if what == "tls":
        return (f" (the client started a TLS handshake: it dialled a tls: address, but this {backend} port is not "
                "a TLS port; use tcp: on the worker, or ssl: in the master's port string)")
    if what == "http":
        return f" (the client speaks HTTP, not {backend}: a browser or an HTTP client on a worker port)"
    return (f" (the client speaks {what}, but this port is the master's {backend} port: the worker's --backend "
            f"and --master do not match)")
