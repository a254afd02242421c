"""Raw pika on the bench's RabbitMQ broker: the amqp backend's baseline, no workerwire.

The master (in the trial process) and the worker (``python -m bench.peer
raw-pika URL QUEUE``) each connect to the broker and consume an exclusive
server-named queue of their own; every message goes through the default
exchange to the other's queue.

* call: the master publishes ``print`` (a correlation id) to the worker's
  queue; the worker publishes ``ok`` back; several may be in flight.
* stream: the master publishes ``stream`` ``{nbytes, chunk, window}``; the
  worker publishes ``chunk``-byte messages with publisher confirms, at most
  ``window`` unconfirmed, then ``complete``.

No confirms on calls (the amqp backend pays them both ways), no session or
presence queues: the floor of what RabbitMQ and pika cost on this machine.
"""

from __future__ import annotations

import json
from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ClientCreator

from .base import PRINT_MESSAGE, Child, chunk_bytes, python_argv, spawn, within

__all__ = ["open_link", "run_worker"]


async def _connect(reactor: Any, url: str) -> Any:
    from workerwire_amqp.address import BrokerURL

    broker = BrokerURL(url)
    proto = await ClientCreator(reactor, TwistedProtocolConnection, broker.parameters()).connectTCP(
        broker.host, broker.port)
    await proto.ready
    return proto


async def _own_queue(channel: Any) -> tuple[str, Any]:
    queue = (await channel.queue_declare("", exclusive=True, auto_delete=True)).method.queue
    await channel.basic_qos(prefetch_count=64)
    incoming, _tag = await channel.basic_consume(queue, auto_ack=True)
    return queue, incoming


class PikaLink:
    """The master's end: calls and streams to one raw pika worker."""

    def __init__(self, proto: Any, channel: Any, queue: str, child: Child):
        self.proto = proto
        self.channel = channel
        self.queue = queue
        self.child = child
        self.worker_pid: int | None = child.pid
        self.worker_queue: str | None = None
        self.first: Deferred[None] = Deferred()
        self._calls: dict[str, Deferred[Any]] = {}
        self._serial = 0
        self._received = 0
        self._stream_done: Deferred[int] | None = None

    async def pump(self, incoming: Any) -> None:
        while True:
            msg = await incoming.get()
            kind = msg.properties.type
            if kind == "chunk":
                self._received += len(msg.body)
            elif kind == "ok":
                d = self._calls.pop(msg.properties.correlation_id, None)
                if d is not None:
                    d.callback(None)
            elif kind == "complete":
                done, self._stream_done = self._stream_done, None
                if done is not None:
                    done.callback(self._received)
            elif kind == "hello" and not self.first.called:
                self.worker_queue = msg.properties.reply_to
                self.first.callback(None)

    def _publish(self, kind: str, body: bytes, correlation_id: str | None = None) -> None:
        props = pika.BasicProperties(type=kind, reply_to=self.queue, correlation_id=correlation_id)
        self.channel.basic_publish("", self.worker_queue, body, props)

    # Link
    def call(self) -> Deferred[Any]:
        self._serial += 1
        cid = str(self._serial)
        d: Deferred[Any] = Deferred()
        self._calls[cid] = d
        self._publish("print", PRINT_MESSAGE.encode(), cid)
        return d

    def stream(self, nbytes: int) -> Deferred[int]:
        self._received = 0
        self._stream_done = Deferred()
        self._publish("stream", json.dumps({"nbytes": nbytes, "chunk": self.chunk, "window": self.window}).encode())
        return self._stream_done

    chunk = 64 * 1024
    window = 16

    def close(self) -> Deferred[None]:
        try:
            self.proto.close()
        except Exception:
            pass
        return self.child.terminate()


async def open_link(reactor: Any, url: str, chunk: int, window: int, timeout: float) -> PikaLink:
    proto = await _connect(reactor, url)
    channel = await proto.channel()
    queue, incoming = await _own_queue(channel)
    child = spawn("raw-pika worker", python_argv("bench.peer", "raw-pika", url, queue))
    link = PikaLink(proto, channel, queue, child)
    link.chunk, link.window = chunk, window
    ensureDeferred(link.pump(incoming)).addErrback(lambda f: None)  # ends when the channel closes
    await within(link.first, reactor, timeout, "the raw-pika worker to say hello")
    return link


def run_worker(reactor: Any, url: str, master_queue: str) -> None:
    """The worker process: answer calls, stream on request."""

    async def serve() -> None:
        proto = await _connect(reactor, url)
        channel = await proto.channel()
        await channel.confirm_delivery()
        queue, incoming = await _own_queue(channel)

        def publish(kind: str, body: bytes, correlation_id: str | None = None) -> Deferred[Any]:
            props = pika.BasicProperties(type=kind, reply_to=queue, correlation_id=correlation_id)
            return channel.basic_publish("", master_queue, body, props)

        async def stream(nbytes: int, chunk: int, window: int) -> None:
            data = chunk_bytes(chunk)
            outstanding: list[Deferred[Any]] = []
            left = nbytes
            while left > 0:
                piece = data if left >= chunk else data[:left]
                left -= len(piece)
                outstanding.append(publish("chunk", piece))
                if len(outstanding) >= window:
                    await outstanding.pop(0)
            for d in outstanding:
                await d
            await publish("complete", b"")

        await publish("hello", b"")
        while True:
            msg = await incoming.get()
            if msg.properties.type == "print":
                publish("ok", b"", msg.properties.correlation_id).addErrback(lambda f: None)
            elif msg.properties.type == "stream":
                req = json.loads(msg.body)
                ensureDeferred(stream(req["nbytes"], req["chunk"], req["window"])).addErrback(
                    lambda f: f.printTraceback())

    ensureDeferred(serve()).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
