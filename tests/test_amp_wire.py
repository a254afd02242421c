"""Pieces of the amp backend in isolation: argument parsing, reassembly,
error translation, addresses."""

from __future__ import annotations

import random

import pytest
from twisted.internet import error as net_error
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.python.failure import Failure

from workerwire import LinkOptions
from workerwire.errors import (
    ConnectionLost,
    DuplicateWorker,
    ProtocolError,
    RemoteCallFailed,
    UnknownBuilder,
)
from workerwire.addresses import client_address_for
from workerwire.credentials import ChallengeResponse, login_response
from workerwire.parts import TRANSFER, OutgoingValues, TransferIds, Transfers
from workerwire_amp.commands import Integer
from workerwire_amp.errors import TRACEBACK_SEPARATOR, error_answer, translate_failure
from workerwire_amp.wire import MAX_CHUNK, WireProtocol


def test_integers_are_strict_decimal() -> None:
    parse = Integer().fromString
    assert [parse(b"0"), parse(b"-7"), parse(b"18446744073709551615")] == [0, -7, 2**64 - 1]
    for bad in (b"", b"01", b"+1", b" 1", b"1 ", b"1_0", b"0x10", b"\xd9\xa1", b"9" * 21, b"-0"):
        with pytest.raises(ProtocolError):
            parse(bad)


def test_assembler_reassembles_and_forgets() -> None:
    a = Transfers(max_message_size=100)
    a.part(1, 0, 10, b"01234")
    assert a.buffered == 5
    a.part(1, 5, 10, b"56789")
    a.begin_message()
    assert a.take(1) == b"0123456789"
    a.end_message()
    assert a.buffered == 0
    with pytest.raises(ProtocolError):
        a.take(1)


def test_assembler_refuses_at_the_first_chunk_of_an_oversized_message() -> None:
    a = Transfers(max_message_size=100)
    a.part(1, 0, 60, b"x")
    a.part(1, 1, 60, b"y" * 59)
    with pytest.raises(ProtocolError, match="exceeds the limit of 100 bytes"):
        a.part(2, 0, 41, b"z")  # 60 + 41 waiting for one box


def test_outgoing_inlines_small_values_and_plans_transfers_for_big_ones() -> None:
    ids = TransferIds()
    out = OutgoingValues(limit=10 * MAX_CHUNK, part_size=MAX_CHUNK, next_id=ids)
    assert out.plan(MAX_CHUNK) is None
    assert out.plan(MAX_CHUNK + 1) is TRANSFER
    assert out.transfer(b"y" * (MAX_CHUNK + 1)) == 1
    pieces = list(out.pieces(out.transfers[0][1]))
    assert [off for off, _ in pieces] == [0, MAX_CHUNK] and len(pieces[1][1]) == 1
    with pytest.raises(ProtocolError):
        out.plan(9 * MAX_CHUNK)


def test_challenge_response_checks_the_hmac() -> None:
    creds = ChallengeResponse("w1", b"c" * 32, login_response("pässword", b"c" * 32))
    assert creds.checkPassword("pässword".encode()) and not creds.checkPassword(b"other")
    assert login_response("pw", b"a" * 32) != login_response("pw", b"b" * 32)


@pytest.mark.parametrize("native, core, check", [
    (amp.RemoteAmpError(b"UnknownBuilder", "no builder 'x'"), UnknownBuilder,
     lambda e: str(e) == "no builder 'x'"),
    (amp.RemoteAmpError(b"DuplicateWorker", "already here"), DuplicateWorker, lambda e: True),
    (amp.RemoteAmpError(b"OSError", "disk full" + TRACEBACK_SEPARATOR + "Traceback ..."), RemoteCallFailed,
     lambda e: (e.type_name, e.remote_message, e.remote_traceback) == ("OSError", "disk full", "Traceback ...")),
    (amp.UnknownRemoteError("boom"), RemoteCallFailed, lambda e: e.type_name == "UnknownError"),
    (amp.UnhandledCommand(amp.UNHANDLED_ERROR_CODE, "Unhandled Command: b'X'"), ProtocolError, lambda e: True),
    (net_error.ConnectionDone(), ConnectionLost, lambda e: "closed" in str(e)),
    (net_error.ConnectionLost(), ConnectionLost, lambda e: True),
    (ValueError("odd"), RemoteCallFailed, lambda e: e.type_name == "ValueError"),
])
def test_translate_failure_yields_core_errors_only(native: Exception, core: type, check: object) -> None:
    translated = translate_failure(Failure(native)).value
    assert type(translated) is core and check(translated)  # type: ignore[operator]


def test_error_answers_carry_tracebacks_only_when_asked() -> None:
    try:
        raise KeyError("missing")
    except KeyError as e:
        plain, verbose = error_answer(e), error_answer(e, send_traceback=True)
    assert plain.errorCode == b"KeyError" and TRACEBACK_SEPARATOR not in plain.description
    assert TRACEBACK_SEPARATOR in verbose.description and "raise KeyError" in verbose.description
    huge = error_answer(RuntimeError("é" * 100_000))
    assert len(huge.description.encode("utf-8")) <= 60_000 and huge.description.endswith("...")


def test_client_addresses_for_listening_ports() -> None:
    assert client_address_for(IPv4Address("TCP", "0.0.0.0", 9990)) == "tcp:host=127.0.0.1:port=9990"
    assert client_address_for(IPv4Address("TCP", "10.1.2.3", 9990)) == "tcp:host=10.1.2.3:port=9990"
    assert client_address_for(IPv6Address("TCP", "::", 9990)) == r"tcp:host=\:\:1:port=9990"
    assert client_address_for(UNIXAddress(b"/run/ww.sock")) == "unix:path=/run/ww.sock"


class _Boxes(WireProtocol):
    def __init__(self) -> None:
        super().__init__(LinkOptions(), Clock())
        self.received: list[dict[bytes, bytes]] = []

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        self.received.append(dict(box))


@pytest.mark.parametrize("seed", range(20))
def test_the_box_parser_matches_amps_however_the_input_is_split(seed: int) -> None:
    rnd = random.Random(seed)
    boxes = []
    for _ in range(rnd.randint(1, 6)):
        fields = {f"k{i}".encode(): rnd.randbytes(rnd.choice([0, 1, 100, 5000, MAX_CHUNK])) for i in range(4)}
        boxes.append(amp.AmpBox(fields))
    data = b"".join(b.serialize() for b in boxes)
    proto, pos = _Boxes(), 0
    while pos < len(data):
        step = rnd.choice([1, 2, 3, 500, 4096, 70_000])
        proto.dataReceived(data[pos:pos + step])
        pos += step
    assert proto.received == [dict(b) for b in amp._ParserHelper.parseString(data)]
    assert proto._unprocessed == b"" and proto._need == 0
