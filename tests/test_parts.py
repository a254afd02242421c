"""workerwire.parts: the splitting and bounded reassembly every backend with
frames smaller than a message uses (amp's chunks and parts, msgpack's
``ww_part`` messages, amqp's message parts).  The backends' own use is
covered by their tests and the conformance suite (16 MiB updates)."""

from __future__ import annotations

import pytest

from workerwire.errors import ProtocolError
from workerwire.parts import MAX_TRANSFERS, Reassembly, TransferPool, Transfers, numbered_parts, split, split_pieces


def test_split_cuts_without_copying_and_rejoins_exactly() -> None:
    data = bytes(range(256)) * 40
    parts = split(data, 1000)
    assert [len(p) for p in parts] == [1000] * 10 + [240]
    assert all(p.obj is data for p in parts), "views of the data, not copies"
    assert b"".join(parts) == data
    pieces = [data[:3], data[3:2500], data[2500:]]
    assert b"".join(b"".join(p.buffers) for p in split_pieces(pieces, len(data), 1000)) == data


def test_a_reassembly_refuses_the_part_that_crosses_the_limit_before_keeping_it() -> None:
    message = Reassembly(limit=100)
    message.add(b"a" * 60)
    with pytest.raises(ProtocolError, match="message of 101 bytes exceeds the limit of 100 bytes"):
        message.add(b"b" * 41)
    assert message.size == 60 and message.parts == [b"a" * 60], "the refused part is not kept"
    message.add(b"c" * 40)
    assert message.join() == b"a" * 60 + b"c" * 40
    assert message.size == 0 and message.parts == [], "empty again for the next message"


def test_transfers_name_the_part_kind_in_their_errors() -> None:
    transfers = Transfers(max_message_size=100, what="Chunk")
    with pytest.raises(ProtocolError, match="^Chunk: empty data$"):
        transfers.part(1, 0, 10, b"")
    transfers.part(1, 0, 10, b"x" * 4)
    with pytest.raises(ProtocolError, match="a message arrived while transfer 1 was unfinished"):
        transfers.begin_message()


def test_a_transfer_pool_reassembles_interleaved_transfers_claimed_by_id() -> None:
    pool = TransferPool(max_message_size=1000, what="workerwire.part")
    one, two = bytes(range(200)), b"second" * 20
    pool.part(1, 0, len(one), one[:50])
    pool.part(2, 0, len(two), two[:60])  # another transfer's parts in between
    pool.part(1, 50, len(one), one[50:])
    with pytest.raises(ProtocolError, match="transfer 2, which was not received"):
        pool.take(2)  # unfinished
    pool.part(2, 60, len(two), two[60:])
    assert pool.buffered == len(one) + len(two)
    assert pool.take(2) == two and pool.take(1) == one, "claimed in any order"
    with pytest.raises(ProtocolError, match="transfer 1, which was not received"):
        pool.take(1)  # once only
    with pytest.raises(ProtocolError, match="transfer 'x', which was not received"):
        pool.take("x")  # type: ignore[arg-type]
    assert pool.buffered == 0
    pool.part(1, 0, 3, b"abc")  # an id is free again once claimed
    assert pool.take(1) == b"abc"


def test_a_transfer_pool_reserves_declared_totals_before_keeping_data() -> None:
    pool = TransferPool(max_message_size=100)
    pool.part(1, 0, 60, b"a" * 10)
    with pytest.raises(ProtocolError, match="message of 101 bytes exceeds the limit of 100 bytes"):
        pool.part(2, 0, 41, b"b")
    assert pool.buffered == 10, "the refused part is not kept"
    pool.part(2, 0, 40, b"b")  # within the budget with transfer 1's declared 60
    pool.part(1, 10, 60, b"a" * 50)
    assert pool.take(1) == b"a" * 60
    pool.part(3, 0, 60, b"c" * 60)  # transfer 1's share of the budget is free again


@pytest.mark.parametrize("parts, says", [
    ([(True, 0, 1, b"x")], r"a part is \(int transfer, int offset, int total, bytes data\)"),
    ([(1, 0, "1", b"x")], r"a part is \(int transfer"),
    ([(1, 0, 1, "x")], r"a part is \(int transfer"),
    ([(1, 0, 1, memoryview(b"x"))], r"a part is \(int transfer"),
    ([(0, 0, 1, b"x")], "transfer id 0 must be positive"),
    ([(1, 0, 1, b"")], "empty data"),
    ([(1, 0, 0, b"x")], "total 0 must be positive"),
    ([(1, 5, 10, b"x")], "offset 5 of transfer 1, which is not in progress"),
    ([(1, 0, 2, b"x"), (1, 2, 2, b"y")], "transfer 1 expected offset 1, got 2"),
    ([(1, 0, 2, b"x"), (1, 1, 3, b"y")], "transfer 1 declared total 2, now 3"),
    ([(1, 0, 2, b"xyz")], "transfer 1 runs past its declared total of 2 bytes"),
    ([(1, 0, 1, b"x"), (1, 1, 1, b"y")], "offset 1 of transfer 1, which is not in progress"),
    ([(1, 0, 1, b"x"), (1, 0, 1, b"x")], "transfer id 1 is already in use"),
])
def test_a_transfer_pool_refuses_malformed_parts(parts: list[tuple[object, ...]], says: str) -> None:
    pool = TransferPool(max_message_size=100, what="workerwire.part")
    *good, bad = parts
    for part in good:
        pool.part(*part)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=f"^workerwire.part: {says}"):
        pool.part(*bad)  # type: ignore[arg-type]


def test_a_transfer_pool_takes_no_part_before_it_accepts() -> None:
    pool = TransferPool(max_message_size=100, what="workerwire.part", accepting=False)
    with pytest.raises(ProtocolError, match="^workerwire.part: transfer parts before the login$"):
        pool.part(1, 0, 1, b"x")
    pool.accepting = True
    pool.part(1, 0, 1, b"x")
    assert pool.take(1) == b"x"


def test_numbered_parts_cut_a_transfer_at_offsets() -> None:
    data = bytes(range(256)) * 10
    parts = list(numbered_parts(data, 1000))
    assert [(offset, len(part)) for offset, part in parts] == [(0, 1000), (1000, 1000), (2000, 560)]
    assert all(type(part) is bytes for _, part in parts), "bytes a wire can carry (banana takes no memoryview)"
    pool = TransferPool(max_message_size=len(data))
    for offset, part in parts:
        pool.part(7, offset, len(data), part)
    assert pool.take(7) == data


def test_a_transfer_pool_holds_at_most_max_transfers() -> None:
    # Each held transfer costs memory however small it is: without a cap, a peer
    # could hold max_message_size one-byte transfers.
    pool = TransferPool(max_message_size=1000, what="workerwire.part", max_transfers=3)
    for transfer in (1, 2, 3):
        pool.part(transfer, 0, 1, b"x")
    with pytest.raises(ProtocolError, match="^workerwire.part: transfer 4 starts while 3 transfers, the most "
                                            "allowed, wait to be claimed$"):
        pool.part(4, 0, 1, b"x")
    assert pool.take(2) == b"x"
    pool.part(4, 0, 1, b"x")
    assert TransferPool(1000).max_transfers == Transfers(1000).max_transfers == MAX_TRANSFERS == 32
