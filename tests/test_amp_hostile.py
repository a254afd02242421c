"""Hostile input at a live amp listener (hypothesis).

Every attack opens a fresh TCP connection to a real listener on 127.0.0.1
(logging in first when the attack needs a session), sends bytes that break
the dialect, and half-closes.  Each such connection must be closed by the
master with a logged protocol error naming the peer, no traceback may be
logged, and afterwards the listener still serves: the worker that was
connected all along runs a command and a new worker logs in.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import ensureDeferred

from workerwire import LinkOptions, load_backend
from workerwire.conformance import Harness, WorkerHandle, within
from workerwire.values import encode
from workerwire_amp.commands import COMMANDS, TextList
from workerwire_amp.wire import MAX_KEYS

from test_amp_support import (
    LogRecorder,
    box,
    connect_raw,
    hello_box,
    key_too_long,
    raw_login,
    unexpected_failures,
)

MAX_MESSAGE = 8192
NAMES = [c.__name__ for c in COMMANDS]
MASTER_ANSWERS = {"Hello", "Login", "Chunk", "Update", "Complete", "Keepalive", "ShutdownRequest"}

Attack = tuple[str, bool, bytes]  # (what, log in first?, bytes to send)

small = st.binary(max_size=64)
user_keys = st.binary(min_size=1, max_size=12).filter(lambda k: not k.startswith(b"_"))
bad_ints = st.sampled_from([b"", b"x1", b" 1", b"+1", b"01", b"1_0", b"1.0", b"-", b"\xff", b"9" * 25])


def chunk(transfer: Any, offset: Any, total: Any, data: bytes, **extra: Any) -> bytes:
    return box(_command="Chunk", transfer=transfer, offset=offset, total=total, data=data, **extra)


@st.composite
def random_bytes(draw: Any) -> Attack:
    greeted = draw(st.booleans())
    prefix = hello_box("1") if greeted else b""
    return ("random bytes" + (" after Hello" if greeted else ""), False,
            prefix + draw(st.binary(min_size=1, max_size=300)))


@st.composite
def unknown_command(draw: Any) -> Attack:
    name = draw(st.text(min_size=1, max_size=40).filter(lambda n: n not in MASTER_ANSWERS))
    return ("unknown command", draw(st.booleans()), box(_command=name, _ask="9"))


@st.composite
def before_login(draw: Any) -> Attack:
    name = draw(st.sampled_from([n for n in NAMES if n != "Hello"]))
    extra = draw(st.dictionaries(user_keys, small, max_size=4))
    fields = {k.decode("latin-1"): v for k, v in extra.items()}
    return (f"{name} before login", False, box(_command=name, _ask="9", **fields))


@st.composite
def malformed_hello(draw: Any) -> Attack:
    field = draw(st.sampled_from(["min_version", "max_version", "max_message_size", "capabilities", "twice"]))
    if field == "twice":
        return ("Hello twice", False, hello_box("1") + hello_box("2"))
    if field == "capabilities":
        bad = draw(st.sampled_from([b"\x00\x05ab", b"\x00", b"\x00\x02\xff\xfe"]))
    elif field == "max_message_size" and draw(st.booleans()):
        bad = b"%d" % draw(st.integers(min_value=-10, max_value=1023))
    else:
        bad = draw(bad_ints)
    missing = draw(st.booleans())
    return (f"Hello with bad {field}", False, hello_box("1", **{field: None if missing else bad}))


@st.composite
def bad_chunks(draw: Any) -> Attack:
    t = draw(st.integers(min_value=1, max_value=2**31))
    data = draw(st.binary(min_size=1, max_size=200))
    total = len(data) + draw(st.integers(min_value=1, max_value=1000))
    kind = draw(st.sampled_from([
        "starts past 0", "total over limit", "wrong offset", "total changes", "runs past total", "empty data",
        "box while unfinished", "finished but unused", "id reused", "asks for an answer", "bad id",
        "unknown transfer named", "malformed integer",
    ]))
    if kind == "starts past 0":
        payload = chunk(t, draw(st.integers(1, 10**6)), total, data)
    elif kind == "total over limit":
        payload = chunk(t, 0, draw(st.integers(MAX_MESSAGE + 1, 10**12)), data)
    elif kind == "wrong offset":
        payload = chunk(t, 0, total, data) + chunk(t, len(data) + draw(st.integers(1, 50)), total, b"x")
    elif kind == "total changes":
        payload = chunk(t, 0, total, data) + chunk(t, len(data), total + 1, b"x")
    elif kind == "runs past total":
        payload = chunk(t, 0, len(data), data + b"!")
    elif kind == "empty data":
        payload = chunk(t, 0, total, b"")
    elif kind == "box while unfinished":
        payload = chunk(t, 0, total, data) + box(_command="Keepalive", _ask="9")
    elif kind == "finished but unused":
        payload = chunk(t, 0, len(data), data) + box(_command="Keepalive", _ask="9")
    elif kind == "id reused":
        payload = chunk(t, 0, len(data), data) + chunk(t, 0, len(data), data)
    elif kind == "asks for an answer":
        payload = chunk(t, 0, total, data, _ask="9")
    elif kind == "bad id":
        payload = chunk(draw(st.integers(-5, 0)), 0, total, data)
    elif kind == "unknown transfer named":
        payload = box(_command="Update", _ask="9", **{"command_id.transfer": t}, updates=encode([]))
    else:
        payload = box(_command="Chunk", transfer=draw(bad_ints), offset=0, total=total, data=data)
    return (f"chunks: {kind}", True, payload)


@st.composite
def bad_values(draw: Any) -> Attack:
    kind = draw(st.sampled_from([
        "not msgpack", "wrong kind", "both inline and transfer", "missing", "not pairs", "over the limit inline",
        "trailing bytes", "bad error value",
    ]))
    cid = encode("c1")
    if kind == "not msgpack":
        payload = box(_command="Update", _ask="9", command_id=cid, updates=b"\xc1" + draw(small))
    elif kind == "wrong kind":
        number = draw(st.integers(-(2**63), 2**64 - 1))
        payload = box(_command="Update", _ask="9", command_id=encode(number), updates=encode([]))
    elif kind == "both inline and transfer":
        payload = box(_command="Update", _ask="9", command_id=cid, updates=encode([]), **{"updates.transfer": 1})
    elif kind == "missing":
        payload = box(_command="Update", _ask="9", command_id=cid)
    elif kind == "not pairs":
        payload = box(_command="Update", _ask="9", command_id=cid,
                      updates=encode(draw(st.sampled_from([[1], [["k"]], [[1, 2]], [["k", 1, 2]]]))))
    elif kind == "over the limit inline":
        payload = box(_command="Update", _ask="9", command_id=cid,
                      updates=encode([["stdout", "x" * draw(st.integers(MAX_MESSAGE, 60000))]]))
    elif kind == "trailing bytes":
        payload = box(_command="Update", _ask="9", command_id=cid, updates=encode([]) + b"\x00")
    else:
        payload = box(_command="Complete", _ask="9", command_id=cid,
                      error=encode(draw(st.sampled_from([["only type"], [1, 2], "text", ["a", "b", "c", "d"]]))))
    return (f"values: {kind}", True, payload)


@st.composite
def bad_boxes(draw: Any) -> Attack:
    kind = draw(st.sampled_from([
        "key too long", "too many keys", "empty box", "answer to nothing", "error to nothing",
        "command and answer", "no _ask", "Hello after login", "worker-side command",
    ]))
    if kind == "key too long":
        payload = key_too_long()
    elif kind == "too many keys":
        payload = box(_command="Keepalive", _ask="9", **{f"k{i}": b"v" for i in range(MAX_KEYS + 1)})
    elif kind == "empty box":
        payload = b"\x00\x00"
    elif kind == "answer to nothing":
        payload = box(_answer=draw(st.sampled_from(["77", "", "zz"])))
    elif kind == "error to nothing":
        payload = box(_error="77", _error_code="X", _error_description="y")
    elif kind == "command and answer":
        payload = box(_command="Keepalive", _ask="9", _answer="1")
    elif kind == "no _ask":
        payload = box(_command="Keepalive")
    elif kind == "Hello after login":
        payload = hello_box("9")
    else:
        payload = box(_command=draw(st.sampled_from(["Print", "Ping", "StartCommand", "Shutdown"])), _ask="9")
    return (f"boxes: {kind}", kind != "key too long" or draw(st.booleans()), payload)


attacks = st.one_of(random_bytes(), unknown_command(), before_login(), malformed_hello(), bad_chunks(),
                    bad_values(), bad_boxes())


async def _attack(reactor: Any, port: int, attack: Attack) -> str:
    what, login, payload = attack
    if login:
        peer = await raw_login(reactor, port, "intruder", "pw-intruder")
    else:
        peer = await connect_raw(reactor, port)
    peer.send(payload)
    peer.transport.loseWriteConnection()
    await within(peer.closed, reactor, 5, f"the master to close the connection after {what}")
    return peer.local


class Target:
    """A live listener with one well-behaved worker connected all along."""

    def __init__(self, harness: Harness, good: WorkerHandle, port: int):
        self.harness = harness
        self.good = good
        self.port = port
        self.runs = 0


@pytest.fixture
def target(reactor: Any, tmp_path: Any) -> Iterator[Target]:
    options = LinkOptions(keepalive_interval=None, max_message_size=MAX_MESSAGE, login_timeout=10.0)
    h = Harness(load_backend("amp"), options, reactor, str(tmp_path))
    try:
        good = pytest_twisted.blockon(ensureDeferred(h.start_worker("good", "pw-good")))
        port = pytest_twisted.blockon(ensureDeferred(h.register("intruder", "pw-intruder"))).getPort()
        yield Target(h, good, port)
        # After all the attacks: the listener still takes new workers.
        late = pytest_twisted.blockon(ensureDeferred(h.start_worker("late", "pw-late")))
        assert late.conn.isConnected and good.conn.isConnected
    finally:
        pytest_twisted.blockon(ensureDeferred(h.close()))


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
@given(attack=attacks)
@pytest_twisted.ensureDeferred
async def test_hostile_input_is_refused_and_the_listener_keeps_serving(
        target: Target, reactor: Any, attack: Attack) -> None:
    with LogRecorder() as log:
        local = await _attack(reactor, target.port, attack)
    assert log.protocol_errors(local), f"{attack[0]}: closed without a logged protocol error"
    assert not unexpected_failures(log.events), unexpected_failures(log.events)[0]
    # The worker connected all along still runs a command.
    target.runs += 1
    rc = await target.harness.run(target.good, "emit", {"updates": [["stdout", f"still here {target.runs}"]]})
    assert rc.values("stdout") == [f"still here {target.runs}"] and rc.completions == [None]


def test_capability_list_parser_is_strict() -> None:
    from workerwire.errors import ProtocolError

    parser = TextList()
    assert parser.fromString(parser.toString(["chunks", "wíndow"])) == ["chunks", "wíndow"]
    for bad in (b"\x00", b"\x00\x03ab", b"\x00\x01\xff"):
        with pytest.raises(ProtocolError):
            parser.fromString(bad)
