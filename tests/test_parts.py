"""workerwire.parts: the splitting and bounded reassembly every backend with
frames smaller than a message uses (amp's chunks and parts, msgpack's
``ww_part`` messages, amqp's message parts).  The backends' own use is
covered by their tests and the conformance suite (16 MiB updates)."""

from __future__ import annotations

import pytest

from workerwire.errors import ProtocolError
from workerwire.parts import Reassembly, Transfers, split, split_pieces


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
