"""workerwire_pb.codec.FastBanana against Twisted's own banana: the same bytes
out, the same items in (however the input is split), the same limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet.testing import StringTransport
from twisted.spread import banana

from workerwire.errors import ProtocolError
from workerwire_pb.codec import FastBanana, b128


class Fast(FastBanana, banana.Banana):
    pass


def _peer(cls: type[banana.Banana], dialect: bytes = b"pb") -> Any:
    b = cls(isClient=1)
    b.transport = StringTransport()
    b.connectionMade()
    b._selectDialect(dialect)
    b.received = []
    b.expressionReceived = b.received.append
    return b


def _encoded(cls: type[banana.Banana], obj: Any) -> bytes:
    b = _peer(cls)
    b.sendEncoded(obj)
    return bytes(b.transport.value())


# What jelly hands banana: lists of bytes, ints, floats (vocabulary words included).
_atoms = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"list", b"dictionary", b"unicode", b"None", b"tuple", b"message", b"answer"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.binary(min_size=4000, max_size=9000),
)
_sexps = st.recursive(_atoms, lambda inner: st.lists(inner, max_size=6), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(obj=_sexps)
def test_encoding_is_byte_for_byte_twisteds(obj: Any) -> None:
    assert _encoded(Fast, obj) == _encoded(banana.Banana, obj)


@settings(max_examples=300, deadline=None)
@given(objs=st.lists(_sexps.filter(lambda o: isinstance(o, list)), min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=1, max_value=9000), max_size=40))
def test_decoding_matches_twisteds_however_the_input_is_split(objs: list[Any], cuts: list[int]) -> None:
    data = b"".join(_encoded(banana.Banana, o) for o in objs)
    stock, fast = _peer(banana.Banana), _peer(Fast)
    pos = 0
    for cut in cuts + [len(data)]:
        chunk = data[pos:pos + cut]
        pos += len(chunk)
        stock.dataReceived(chunk)
        fast.dataReceived(chunk)
    assert fast.received == stock.received
    assert fast.buffer == b"" and fast.listStack == [] and fast.pending_bytes == 0


def test_a_long_string_arriving_byte_by_byte_is_joined_once_whole() -> None:
    fast = _peer(Fast)
    data = _encoded(banana.Banana, [b"x" * 100_000, 7])
    for i in range(0, len(data), 1000):
        fast.dataReceived(data[i:i + 1000])
        if i + 1000 < len(data):
            assert fast.received == []
    assert fast.received == [[b"x" * 100_000, 7]]


@pytest.mark.parametrize("data, error", [
    (b"\x01" * 65 + b"\x82", "prefix"),  # a prefix longer than 64 bytes
    (b"\x01" * 70, "prefix"),  # ... even before its type byte arrived
    (b128(banana.SIZE_LIMIT + 1) + b"\x82", "String too long"),
    (b128(banana.SIZE_LIMIT + 1) + b"\x80", "List too long"),
    (b"\x01\x8f", "Invalid Type Byte"),
])
def test_limits_are_twisteds(data: bytes, error: str) -> None:
    for cls in (banana.Banana, Fast):
        with pytest.raises(Exception, match=error):
            _peer(cls).dataReceived(data)


def test_a_message_over_the_size_limit_is_refused_while_it_arrives() -> None:
    fast = _peer(Fast)
    fast.max_message_size = 10_000
    data = _encoded(banana.Banana, [b"x" * 6000, b"y" * 6000])
    with pytest.raises(ProtocolError, match="larger than the limit of 10000 bytes"):
        fast.dataReceived(data)
    small = _peer(Fast)
    small.max_message_size = 10_000
    small.dataReceived(_encoded(banana.Banana, [b"x" * 6000]))
    small.dataReceived(_encoded(banana.Banana, [b"y" * 6000]))
    assert small.received == [[b"x" * 6000], [b"y" * 6000]], "the count starts again with each message"


def test_vocabulary_only_in_the_pb_dialect() -> None:
    for cls in (banana.Banana, Fast):
        with pytest.raises(NotImplementedError):
            _peer(cls, dialect=b"none").dataReceived(b"\x01\x87")
