"""The tests' private RabbitMQ broker: :mod:`workerwire_amqp.private_broker`
(one launcher for the tests and the benchmarks)."""

from workerwire_amqp.private_broker import URL_ENV, BrokerFailed, PrivateBroker, find_server

__all__ = ["PrivateBroker", "BrokerFailed", "find_server", "URL_ENV"]
