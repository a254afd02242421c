"""The amqp backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
``basic.publish`` frames built by hand on a worker's broker connection taken
over from its connector.

After the takeover pika parses nothing more on that connection: every byte
the broker delivers (the master's answers, the broker's publisher confirms)
is only counted.  What the test writes goes to the broker's socket as it is,
on the session's channel, addressed to the master's session queue with the
worker's ``reply_to`` (so the master takes it as the worker's message).  The
unit of the dialect is the AMQP message: "garbage" is a message whose body
is not the dialect's encoding (bytes that break AMQP's own framing reach the
broker, which closes the connection, not the master).

There is no fresh link before the login (:data:`~workerwire.conformance.raw_frames.FRESH_LINK`):
the master holds none (see :attr:`AMQPRawFrames.not_applicable`).
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import pika
from pika import frame, spec
from twisted.internet.defer import Deferred, fail

from workerwire.conformance.raw_frames import FRESH_LINK, NotApplicable, TransportRawFrames, noise

from . import wire

__all__ = ["AMQPRawFrames", "raw_connect"]

#: Body bytes per content frame: 4096 (the smallest ``frame_max`` a broker
#: may negotiate) minus the frame's own 8 bytes, so any broker takes them.
BODY_FRAME = 4096 - 8

_NO_LINK = ("the master holds no link before the login: a worker logs in with one message in the pool's login "
            "queue at the broker, which the master drops when it is over 64 KiB, of another kind or malformed "
            "(docs/protocols/amqp.md); a connection that never logs in is the broker's, not the master's")


class AMQPRawFrames(TransportRawFrames):
    """Takes over ``connector._session.link``: its input is only counted."""

    not_applicable = {FRESH_LINK: _NO_LINK, "oversized": _NO_LINK}

    def __init__(self, connector: Any):
        super().__init__()
        session = getattr(connector, "_session", None)
        if session is None or getattr(session, "master_queue", None) is None:
            raise RuntimeError("the amqp connector has not logged in")
        self.proto = session.link.proto
        self.transport = self.proto.transport
        self.channel_number: int = session.box.channel.channel_number
        self.master_queue: str = session.master_queue
        self.reply_to: str = session.queue
        self.proto.dataReceived = self.count  # pika parses nothing more on this connection
        self.proto.connectionLost = self.closing_too(self.proto.connectionLost)
        self._ids = itertools.count(10_000_000)

    def _publish(self, kind: str, body: bytes) -> bytes:
        """``basic.publish`` + content header + body frames of one message."""
        props = pika.BasicProperties(type=kind, correlation_id=str(next(self._ids)), reply_to=self.reply_to,
                                     delivery_mode=1)
        n = self.channel_number
        frames = [frame.Method(n, spec.Basic.Publish(exchange="", routing_key=self.master_queue)).marshal(),
                  frame.Header(n, len(body), props).marshal()]
        for start in range(0, len(body), BODY_FRAME):
            frames.append(frame.Body(n, body[start:start + BODY_FRAME]).marshal())
        return b"".join(frames)

    def request(self, name: str) -> bytes:
        return self._publish(wire.UPDATE, msgpack.packb([name, []]))

    def nested_update(self, command_id: str, depth: int) -> bytes:
        value = b"\x91" * (depth - 1) + b"\x90"
        body = b"\x92" + msgpack.packb(command_id) + b"\x91\x92" + msgpack.packb("stdout") + value
        return self._publish(wire.UPDATE, body)

    def login(self, name: str, password: str) -> bytes:
        return self._publish(wire.LOGIN, msgpack.packb({"name": name, "password": password, "peer": "raw",
                                                        "version": wire.PROTOCOL_VERSION}))

    def update(self, command_id: str, payload_size: int) -> bytes:
        return self._publish(wire.UPDATE, msgpack.packb([command_id, [["stdout", "x" * payload_size]]]))

    def complete(self, command_id: str) -> bytes:
        return self._publish(wire.COMPLETE, msgpack.packb([command_id, None]))

    def oversized(self, size: int) -> bytes:
        raise NotImplementedError(self.not_applicable["oversized"])

    def garbage(self, n: int) -> bytes:
        return self._publish(wire.UPDATE, b"\xc1" + noise(n))  # 0xc1: never used in MessagePack


def raw_connect(address: str, reactor: Any) -> Deferred[AMQPRawFrames]:
    return fail(NotApplicable(_NO_LINK))
