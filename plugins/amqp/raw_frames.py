"""The amqp backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
``basic.publish`` frames built by hand on a worker's broker connection taken
over from its connector.

After the takeover pika parses nothing more on that connection: every byte
the broker delivers (the master's answers, the broker's publisher confirms)
is only counted.  What the test writes goes to the broker's socket as it is,
on the session's channel, addressed to the master's session queue with the
worker's ``reply_to`` (so the master takes it as the worker's message).
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import pika
from pika import frame, spec

from workerwire.budget import transport_queued
from workerwire.conformance.raw_frames import RawFrames

from . import wire

__all__ = ["AMQPRawFrames"]

#: Body bytes per content frame: 4096 (the smallest ``frame_max`` a broker
#: may negotiate) minus the frame's own 8 bytes, so any broker takes them.
BODY_FRAME = 4096 - 8


class AMQPRawFrames(RawFrames):
    """Takes over ``connector._session.link``: its input is only counted."""

    def __init__(self, connector: Any):
        super().__init__()
        session = getattr(connector, "_session", None)
        if session is None or getattr(session, "master_queue", None) is None:
            raise RuntimeError("the amqp connector has not logged in")
        self.proto = session.link.proto
        self.channel_number: int = session.box.channel.channel_number
        self.master_queue: str = session.master_queue
        self.reply_to: str = session.queue
        self.proto.dataReceived = self.count  # pika parses nothing more on this connection
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

    def write(self, data: bytes) -> None:
        transport = self.proto.transport
        if transport is not None and not getattr(transport, "disconnected", False):
            transport.write(data)

    def unsent(self) -> int:
        return transport_queued(self.proto.transport)

    def stop_reading(self) -> None:
        if self.proto.transport is not None:
            self.proto.transport.pauseProducing()
