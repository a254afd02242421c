"""The value rules and the canonical codec every backend follows."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from workerwire.errors import ProtocolError, UnsupportedValue
from workerwire.values import INT_MAX, INT_MIN, check_value, decode, encode, from_peer

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
scalars = st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX) | st.floats(allow_nan=False) | text | st.binary()
values = st.recursive(scalars, lambda children: st.lists(children) | st.dictionaries(text, children), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_contract_value_round_trips(value: object) -> None:
    assert decode(encode(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_never_crashes_on_garbage(data: bytes) -> None:
    try:
        value = decode(data)
    except ProtocolError:
        return
    check_value(value)  # whatever decodes is a contract value


def test_tuples_arrive_as_lists() -> None:
    assert decode(encode({"log": ("stdio", "text")})) == {"log": ["stdio", "text"]}


def test_nan_survives() -> None:
    assert math.isnan(decode(encode(float("nan"))))


@pytest.mark.parametrize(
    "bad, where",
    [
        ({1, 2}, "set"),
        (2**64, "outside the 64-bit range"),
        (INT_MIN - 1, "outside the 64-bit range"),
        ({1: "x"}, "keys must be str"),
        ({"ok": [object()]}, "value['ok'][0]: object"),
        ("\udc80", "lone surrogate"),
        (bytearray(b"x"), "bytearray"),
    ],
)
def test_unsupported_values_are_named(bad: object, where: str) -> None:
    with pytest.raises(UnsupportedValue) as err:
        encode(bad)
    assert where in str(err.value)
    assert "valid" in str(err.value) or "range" in str(err.value) or "keys" in str(err.value) \
        or "Unicode" in str(err.value)


def test_too_deep_nesting_is_refused() -> None:
    deep: list[object] = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(UnsupportedValue, match="deeper"):
        check_value(deep)


def test_oversized_input_is_a_protocol_error() -> None:
    data = encode("x" * 5000)
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024 bytes"):
        decode(data, max_size=1024)


def test_trailing_bytes_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode(encode(1) + b"\x01")


# Anything, valid or not: the fast check must agree with the one that names the path.
_any_scalar = scalars | st.integers() | st.just("\udc80") | st.sampled_from([object(), {1, 2}, bytearray(b"x"), 1j])
_anything = st.recursive(
    _any_scalar,
    lambda children: st.lists(children) | st.tuples(children, children)
    | st.dictionaries(text | st.integers() | st.binary(), children),
    max_leaves=40,
)


def _nested(depth: int, leaf: object) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=500, deadline=None)
@given(_anything)
def test_the_fast_check_accepts_exactly_what_the_named_check_accepts(value: object) -> None:
    from workerwire.values import _check, _valid

    try:
        _check(value, "value", 0)
    except UnsupportedValue:
        assert not _valid(value, 0)
    else:
        assert _valid(value, 0)


@pytest.mark.parametrize("depth", [255, 256, 257])
@pytest.mark.parametrize("leaf", ["ascii", "é", 1, None, [], {}, {"k": "v"}])
def test_nesting_limit_is_the_same_for_both_checks(depth: int, leaf: object) -> None:
    from workerwire.values import _check, _valid

    value = _nested(depth, leaf)
    try:
        _check(value, "value", 0)
        ok = True
    except UnsupportedValue:
        ok = False
    assert _valid(value, 0) is ok


@settings(max_examples=500, deadline=None)
@given(_anything)
def test_a_peers_value_is_taken_exactly_when_it_is_a_contract_value(value: object) -> None:
    """from_peer (a decoder's Python objects, e.g. jelly's) follows check_value's rules, tuples arriving as lists."""
    try:
        check_value(value)
    except UnsupportedValue as e:
        with pytest.raises(ProtocolError, match="peer sent an unsupported value") as refused:
            from_peer(value, "value", 10**6)
        assert str(e) in str(refused.value)
    else:
        assert from_peer(value, "value", 10**6) == decode(encode(value))


@pytest.mark.parametrize("depth", [255, 256, 257])
@pytest.mark.parametrize("leaf", ["ascii", "é", 1, None, [], {}, (), {"k": "v"}])
def test_a_peers_value_has_the_contracts_nesting_limit(depth: int, leaf: object) -> None:
    value = _nested(depth, leaf)
    try:
        check_value(value)
    except UnsupportedValue:
        with pytest.raises(ProtocolError, match="nested deeper than 256"):
            from_peer(value, "value", 10**6)
    else:
        from_peer(value, "value", 10**6)


def test_a_peers_value_unpacks_to_at_most_its_limit_of_values() -> None:
    shared = list(range(100))
    with pytest.raises(ProtocolError, match="args: the message unpacks to too many values"):
        from_peer([shared] * 100, "args", 10_000)  # 10,101 values from one list of 100 shared 100 times
    assert from_peer([shared] * 100, "args", 10_101) == [shared] * 100
    budget = [150]  # one message's values, over two calls
    from_peer(shared, "first", 0, budget)
    with pytest.raises(ProtocolError, match="second"):
        from_peer(shared, "second", 0, budget)
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ProtocolError, match="nested deeper"):
        from_peer(loop, "value", 10**6)


pair_values = st.one_of(
    values, text.map(lambda t: t * 40), st.binary(min_size=4000, max_size=70_000),
    st.sampled_from(["x" * 70_000, "é" * 5000, "x" * 4097, b"y" * 65_536, b"z" * 300]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(text, pair_values), max_size=6), st.lists(st.tuples(text, pair_values), max_size=6))
def test_encoded_pairs_are_the_canonical_encoding(first: list[tuple[str, object]],
                                                   second: list[tuple[str, object]]) -> None:
    from workerwire.values import array_header, encode_pairs

    (p1, n1), (p2, n2) = encode_pairs(first), encode_pairs(second)
    assert n1 == sum(map(len, p1)) and n2 == sum(map(len, p2))
    joined = array_header(len(first) + len(second)) + b"".join(p1 + p2)
    assert joined == encode([[k, v] for k, v in first + second])


def test_is_value_agrees_with_check_value() -> None:
    from workerwire.values import is_value

    good = [None, True, 1, -(2**63), 2**64 - 1, 1.5, "é", b"\x00", [1, ["a"]], {"k": {"n": [None]}}]
    bad = [2**64, -(2**63) - 1, object(), {1: "x"}, ["ok", set()], "\ud800", {"k": (1, object())}]
    for value in good:
        assert is_value(value)
        check_value(value)
    for value in bad:
        assert not is_value(value)
        with pytest.raises(UnsupportedValue):
            check_value(value)
