"""The amqp backend: workers and masters meet on a RabbitMQ broker.

No master listens on a port of its own.  A master's port string names a
broker and a *pool* (``amqp:url=amqp\\://user:pw@broker\\:5672/%2F:pool=ci``);
every master registered on the same pool serves its workers: a worker's login
request goes to the pool's login queue, and whichever master takes it first
serves the worker.  The broker enforces one live session per worker (an
exclusive queue per worker), and when a master dies its workers log in to
another master of the pool.  The wire format is ``docs/protocols/amqp.md``.

The AMQP client is pika (its ``TwistedProtocolConnection``); the default
broker is ``$WORKERWIRE_AMQP_URL``.
"""

from __future__ import annotations

from typing import Any

from workerwire.backend import Backend, LinkOptions
from workerwire.backoff import Backoff

from .address import URL_ENV, parse_port
from .master import AMQPConnection, AMQPListener
from .wire import PROTOCOL_VERSION
from .worker import AMQPConnector

__all__ = ["AMQPBackend", "backend", "AMQPListener", "AMQPConnection", "AMQPConnector", "PROTOCOL_VERSION",
           "URL_ENV"]


class AMQPBackend(Backend):
    """Workers and masters over RabbitMQ (AMQP 0-9-1, pika): pools of masters, failover."""

    name = "amqp"
    description = (f"AMQP 0-9-1 via a RabbitMQ broker, workerwire dialect v{PROTOCOL_VERSION} "
                   "(pools of masters, failover)")
    #: Addresses are not Twisted endpoint strings: they name a broker and a pool.
    network = False
    #: ...but they reach other processes (through the broker): ``workerwire worker`` runs it.
    in_process = False

    def create_listener(self, master: Any, options: LinkOptions | None = None, reactor: Any = None) -> AMQPListener:
        return AMQPListener(master, options, reactor)

    def create_connector(self, bot: Any, address: str, name: str, password: str,
                         options: LinkOptions | None = None, reactor: Any = None,
                         backoff: Backoff | None = None) -> AMQPConnector:
        return AMQPConnector(bot, address, name, password, options, reactor, backoff)

    def loopback_port(self) -> str:
        """A fresh pool (and master name) on the default broker ($WORKERWIRE_AMQP_URL)."""
        return "amqp:pool=0"

    def check_port(self, portStr: str) -> None:
        parse_port(portStr)

    def raw_frames(self, connector: Any) -> Any:
        """Hand-built ``basic.publish`` frames on *connector*'s broker connection
        (:mod:`workerwire_amqp.raw_frames`)."""
        from .raw_frames import AMQPRawFrames

        return AMQPRawFrames(connector)

    def raw_connect(self, address: str, reactor: Any) -> Any:
        from .raw_frames import raw_connect

        return raw_connect(address, reactor)

    async def make_interposer(self, address: str, reactor: Any) -> Any:
        """A relay in front of the broker for workers dialing *address* (the
        conformance suite's dead-peer tests); see :mod:`workerwire_amqp.interposer`."""
        from .interposer import relay_for

        return await relay_for(address, reactor)


backend = AMQPBackend()
