"""Prometheus metrics of a master (``[master] metrics = "tcp:9100:interface=127.0.0.1"``).

:class:`MasterMetrics` holds one master's series in its own
:class:`prometheus_client.CollectorRegistry` (so several masters in one
process never mix); :func:`serve_metrics` serves it at ``/metrics`` on a
Twisted server endpoint.  The exposition text is ``prometheus_client``'s
(``choose_encoder`` honours an OpenMetrics ``Accept`` header); it is
generated in the reactor thread, where the master's state lives, instead of
``prometheus_client.twisted.MetricsResource``'s WSGI thread pool, which would
read that state from another thread.

Series (all named ``workerwire_*``):

* ``workerwire_connections{backend}``: connected workers now.
* ``workerwire_logins_total{backend,result,reason}``: ``result`` is
  ``accepted`` or ``refused``; a refusal's ``reason`` is ``wrong_password``,
  ``unknown_worker``, ``throttled`` (refused unchecked: the host has too many
  refusals waiting), ``protocol_not_allowed``, ``duplicate`` or ``other``.
* ``workerwire_login_guard_total{backend,event}``: the login guard's counts
  (``waited`` in the waiting room, ``closed_at_cap``, ``timed_out``,
  ``wait_timed_out``, ``delayed`` refusals, ...), read at scrape time.
* ``workerwire_keepalive_rtt_seconds{backend}``: histogram of the master's
  keepalive round trips.
* ``workerwire_commands_started_total{backend}``,
  ``workerwire_commands_completed_total{backend}`` (the worker reported an
  end), ``workerwire_commands_failed_total{backend,error}`` (ended by an
  error such as ``ConnectionLost``, or refused at start).
* ``workerwire_command_output_bytes_total{backend,stream}``: stdout/stderr
  bytes the master received from commands it started.
* ``workerwire_link_received_bytes_total{backend}``,
  ``workerwire_link_sent_bytes_total{backend}``: bytes the master read from
  and wrote to its workers' links, framing and logins included (what the
  backend's protocol sees: plaintext under TLS), read at scrape time from
  :mod:`workerwire.link_bytes` counters.  A backend that does not count
  shows 0.
* ``workerwire_transfer_bytes_total{direction}``: file transfer bytes,
  ``upload`` (worker to master: writes that succeeded) and ``download``
  (master to worker: what reads answered).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

__all__ = ["MasterMetrics", "serve_metrics", "refusal_kind"]

#: Keepalive round-trip buckets, in seconds (loopback to intercontinental).
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def refusal_kind(reason: str) -> str:
    """The ``reason`` label of a refusal the listener's credentials check made
    (its log text starts with the kind: see ``workerwire.base_listener``)."""
    if reason == "throttled":
        return "throttled"
    if reason.startswith("unknown worker"):
        return "unknown_worker"
    if reason.startswith("wrong password"):
        return "wrong_password"
    return "other"


class _StateCollector(Collector):
    """Series read from the master's state at scrape time."""

    def __init__(self, connections: Callable[[], dict[str, int]],
                 guard_stats: Callable[[], dict[str, dict[str, int]]],
                 link_bytes: Callable[[], dict[str, tuple[int, int]]]):
        self._connections = connections
        self._guard_stats = guard_stats
        self._link_bytes = link_bytes

    def collect(self) -> Iterable[Any]:
        conns = GaugeMetricFamily("workerwire_connections", "Connected workers", labels=["backend"])
        for backend, n in sorted(self._connections().items()):
            conns.add_metric([backend], n)
        yield conns
        guard = CounterMetricFamily("workerwire_login_guard", "Login guard events (waiting room, caps, timeouts)",
                                    labels=["backend", "event"])
        for backend, stats in sorted(self._guard_stats().items()):
            for event, n in sorted(stats.items()):
                guard.add_metric([backend, event], n)
        yield guard
        received = CounterMetricFamily("workerwire_link_received_bytes", "Bytes read from workers' links",
                                       labels=["backend"])
        sent = CounterMetricFamily("workerwire_link_sent_bytes", "Bytes written to workers' links",
                                   labels=["backend"])
        for backend, (n_received, n_sent) in sorted(self._link_bytes().items()):
            received.add_metric([backend], n_received)
            sent.add_metric([backend], n_sent)
        yield received
        yield sent


class MasterMetrics:
    """One master's series (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.logins = Counter("workerwire_logins", "Worker logins by result and reason",
                              ["backend", "result", "reason"], registry=r)
        self.rtt = Histogram("workerwire_keepalive_rtt_seconds", "Keepalive round trips seen by the master",
                             ["backend"], buckets=RTT_BUCKETS, registry=r)
        self.started = Counter("workerwire_commands_started", "Commands the master started", ["backend"],
                               registry=r)
        self.completed = Counter("workerwire_commands_completed", "Commands the worker reported ended",
                                 ["backend"], registry=r)
        self.failed = Counter("workerwire_commands_failed", "Commands ended by an error or refused at start",
                              ["backend", "error"], registry=r)
        self.output_bytes = Counter("workerwire_command_output_bytes", "Command output bytes received",
                                    ["backend", "stream"], registry=r)
        self.transfer_bytes = Counter("workerwire_transfer_bytes", "File transfer bytes by direction",
                                      ["direction"], registry=r)
        for direction in ("upload", "download"):
            self.transfer_bytes.labels(direction)  # both series exist from the start, at 0

    def watch_state(self, connections: Callable[[], dict[str, int]],
                    guard_stats: Callable[[], dict[str, dict[str, int]]],
                    link_bytes: Callable[[], dict[str, tuple[int, int]]]) -> None:
        """Read these at every scrape: connections per backend, the guards'
        counts, and (received, sent) link bytes per backend."""
        self.registry.register(_StateCollector(connections, guard_stats, link_bytes))

    def login(self, result: str, backend: str, reason: str) -> None:
        self.logins.labels(backend, result, reason).inc()

    def keepalive_rtt(self, backend: str, seconds: float) -> None:
        self.rtt.labels(backend).observe(seconds)

    def command_started(self, backend: str) -> None:
        self.started.labels(backend).inc()

    def command_ended(self, backend: str, error: BaseException | None) -> None:
        if error is None:
            self.completed.labels(backend).inc()
        else:
            self.failed.labels(backend, type(error).__name__).inc()

    def output(self, backend: str, stream: str, n: int) -> None:
        self.output_bytes.labels(backend, stream).inc(n)

    def transfer(self, direction: str, n: int) -> None:
        self.transfer_bytes.labels(direction).inc(n)


class MetricsPage(Resource):
    """``/metrics``: the registry's exposition, generated in the reactor thread."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry):
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader("accept")
        encoder, content_type = choose_encoder(accept or "")
        request.setHeader("Content-Type", content_type)
        return encoder(self.registry)


def serve_metrics(reactor: Any, endpoint: str, registry: CollectorRegistry) -> Deferred[Any]:
    """Listen on *endpoint* (a Twisted server endpoint string) with ``/metrics``; fires with the port."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    site = Site(root)
    site.noisy = False
    return endpoints.serverFromString(reactor, endpoint).listen(site)
