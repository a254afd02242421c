"""What receiving a message of ``max_message_size`` costs (issue 12, item 3).

The receiving end holds the message's encoding while it arrives, and while
it is decoded both the encoding and the decoded value exist: about twice the
message, measured here with ``tracemalloc`` on the receive path of the two
reassembling backends (amp's chunks in core's :class:`~workerwire.parts.Transfers`,
pb's parts in its :class:`~workerwire.parts.TransferPool`).  Before this test, pb
kept the pieces alive while it decoded (three times the message).
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any, Callable

import msgpack
import pytest

from workerwire.values import decode
from workerwire.parts import TransferPool, Transfers
from workerwire_amp.wire import MAX_CHUNK

MiB = 1024 * 1024
SIZE = 32 * MiB
#: Peak above the start, in multiples of the message, allowed while it is
#: received and decoded: the encoding plus the value, and 5 % for the lists
#: of pieces and the allocator.
FACTOR = 2.05


def _encoded(size: int) -> list[bytes]:
    data = msgpack.packb([["stdout", "x" * (size - 32)]])
    return [data[i:i + MAX_CHUNK] for i in range(0, len(data), MAX_CHUNK)]


def _amp(pieces: list[bytes]) -> Any:
    assembler = Transfers(64 * MiB)
    total, offset = sum(map(len, pieces)), 0
    while pieces:
        piece = memoryview(pieces.pop(0)).tobytes()  # a fresh copy, as a read; the source is released
        assembler.part(1, offset, total, piece)
        offset += len(piece)
        del piece
    return decode(assembler.take(1), 64 * MiB, 2)


def _pb(pieces: list[bytes]) -> Any:
    # As WireBroker: parts into its pool, then _claim (take, decode).
    pool = TransferPool(64 * MiB, "workerwire.part")
    total, offset = sum(map(len, pieces)), 0
    while pieces:
        piece = memoryview(pieces.pop(0)).tobytes()
        pool.part(7, offset, total, piece)
        offset += len(piece)
        del piece
    return decode(pool.take(7), 64 * MiB)


@pytest.mark.parametrize("receive", [_amp, _pb], ids=["amp", "pb"])
def test_receiving_a_large_value_costs_about_twice_its_size(receive: Callable[[list[bytes]], Any]) -> None:
    pieces = _encoded(SIZE)
    size = sum(map(len, pieces))
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        value = receive(pieces)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert value[0][0] == "stdout" and len(value[0][1]) == SIZE - 32
    cost = (peak - start) / size
    print(f"\n{receive.__name__[1:]}: receiving {size / MiB:.1f} MiB peaked at {(peak - start) / MiB:.1f} MiB "
          f"above the start ({cost:.2f}x), keeping {(current - start) / MiB:.1f} MiB (the value)")
    assert cost < FACTOR
