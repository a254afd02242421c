"""What a backend provides, and the options every backend understands."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields, replace
from typing import Any

from twisted.internet.interfaces import IReactorCore

from .backoff import Backoff
from .errors import AddressError
from .master import Listener, MasterHooks
from .worker import WorkerBot, WorkerConnector

__all__ = ["Backend", "LinkOptions", "API_VERSION"]

#: The backend API this workerwire provides (``workerwire.backend_api``):
#: ``(major, minor)``.  A backend declares the version it was written for in
#: :attr:`Backend.api_version`; one with another major version is refused at
#: load with a message naming both.  Major 1 still runs backends written for
#: API 0 (the underscore hooks of ``BaseListener``) and API 1.0 (the underscore
#: hook and event names of ``BaseConnection`` and the worker classes, see
#: :mod:`workerwire.api_compat`), with DeprecationWarnings.
API_VERSION = (1, 1)


@dataclass(frozen=True)
class LinkOptions:
    """Options shared by every backend, on both ends of a link.

    :ivar keepalive_interval: seconds between pings; ``None`` disables keepalive.
    :ivar keepalive_timeout: seconds after a ping before a silent peer is dead.
    :ivar max_message_size: largest single call or update batch, in bytes of
        its encoding, that a receiving end accepts; larger input is a
        :class:`~workerwire.errors.ProtocolError`.
    :ivar login_timeout: seconds an unauthenticated connection may stay open.
    :ivar send_tracebacks: send tracebacks of failed calls to the peer.
    :ivar output_window: bytes of command output a worker may have sent and
        not yet had acknowledged; backends with flow control honour it.
    :ivar send_queue_limit: bytes a link may hold queued for its peer (the
        transport's write buffer plus what the backend holds for it) before
        it stops reading from that peer (:mod:`workerwire.budget`).
    :ivar send_queue_resume: reading resumes once the queue is down to this.
    :ivar send_queue_timeout: seconds a peer may take nothing of a queue over
        the limit before the link is closed as a misbehaving peer.

    Master side only (see :mod:`workerwire.login_guard`):

    :ivar max_unauthenticated: connections a listener holds that have not
        logged in yet; beyond it new connections wait their turn unread (see
        ``max_waiting_logins``).
    :ivar max_unauthenticated_per_host: the same, per source host (IPv4
        address, IPv6 /64).
    :ivar max_waiting_logins: connections a listener keeps waiting, unread,
        while a cap above is reached (each holds a file descriptor, nothing
        else); they are served in turn, one host after another, as logins
        finish, and closed if still waiting after ``login_timeout``.  Beyond
        it new connections are closed at once; ``0`` closes every connection
        over a cap at once.
    :ivar failed_login_grace: failed logins of one host answered at once.
    :ivar failed_login_delay: seconds the refusal of the next failure waits;
        doubled for each further failure of that host.
    :ivar failed_login_max_delay: the longest such wait.
    """

    keepalive_interval: float | None = 60.0
    keepalive_timeout: float = 30.0
    max_message_size: int = 64 * 1024 * 1024
    login_timeout: float = 30.0
    send_tracebacks: bool = False
    output_window: int = 4 * 1024 * 1024
    send_queue_limit: int = field(default=16 * 1024 * 1024, metadata={"unit": "bytes", "minimum": 64 * 1024})
    send_queue_resume: int = field(default=4 * 1024 * 1024, metadata={"unit": "bytes", "minimum": 0})
    send_queue_timeout: float = 30.0
    max_unauthenticated: int = field(default=256, metadata={"unit": "connections", "minimum": 1})
    max_unauthenticated_per_host: int = field(default=64, metadata={"unit": "connections", "minimum": 1})
    max_waiting_logins: int = field(default=1024, metadata={"unit": "connections", "minimum": 0})
    failed_login_grace: int = field(default=3, metadata={"unit": "failed logins", "minimum": 0})
    failed_login_delay: float = 0.5
    failed_login_max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.keepalive_interval is not None and self.keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be positive or None")
        if self.keepalive_timeout <= 0:
            raise ValueError("keepalive_timeout must be positive")
        if self.max_message_size < 1024:
            raise ValueError("max_message_size must be at least 1024 bytes")
        if self.login_timeout <= 0:
            raise ValueError("login_timeout must be positive")
        if self.output_window < 1024:
            raise ValueError("output_window must be at least 1024 bytes")
        if self.send_queue_limit < 64 * 1024 or not 0 <= self.send_queue_resume < self.send_queue_limit:
            raise ValueError("send_queue_limit must be at least 64 KiB and send_queue_resume 0 or more and below it")
        if self.send_queue_timeout <= 0:
            raise ValueError("send_queue_timeout must be positive")
        if self.max_unauthenticated < 1 or self.max_unauthenticated_per_host < 1:
            raise ValueError("max_unauthenticated and max_unauthenticated_per_host must be at least 1")
        if self.max_waiting_logins < 0:
            raise ValueError("max_waiting_logins must be 0 or more")
        if self.failed_login_grace < 0:
            raise ValueError("failed_login_grace must be 0 or more")
        if self.failed_login_delay <= 0 or self.failed_login_max_delay < self.failed_login_delay:
            raise ValueError("failed_login_delay must be positive and failed_login_max_delay at least as long")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_(self, **changes: Any) -> "LinkOptions":
        return replace(self, **changes)


class Backend(abc.ABC):
    """One wire protocol, as the registry hands it out.

    A distribution registers an instance (or a no-argument class) under the
    entry-point group ``workerwire.backends``; the entry-point name is the
    name users write in config.
    """

    #: The name used in config; must equal the entry-point name.
    name: str
    #: One line for ``workerwire backends``.
    description: str
    #: True when the backend carries links over sockets (addresses are
    #: Twisted endpoint strings); False for in-process backends.
    network: bool = True
    #: The backend API major version the backend was written for (see
    #: :data:`API_VERSION`); a backend without it is taken as API 1.
    api_version: int = 1
    #: The master-side listener class (a ``workerwire.base_listener.BaseListener``)
    #: and the worker-side connector class (a ``BaseWorkerConnector``): with
    #: them the base :meth:`create_listener` / :meth:`create_connector` build
    #: both with the backend's registry name.  A backend sets both, or
    #: overrides both methods.
    listener_class: type | None = None
    connector_class: type | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "Backend":
        for method, attribute in (("create_listener", "listener_class"), ("create_connector", "connector_class")):
            if getattr(cls, method) is getattr(Backend, method) and getattr(cls, attribute) is None:
                raise TypeError(f"Can't instantiate abstract backend {cls.__name__}: "
                                f"set {attribute} or override {method}()")
        if not cls.network and cls.loopback_port is Backend.loopback_port:
            raise TypeError(f"Can't instantiate abstract backend {cls.__name__}: "
                            "an in-process backend overrides loopback_port()")
        return super().__new__(cls)

    @property
    def in_process(self) -> bool:
        """True when a worker can only attach from the master's own process
        (``null``); a backend whose addresses are not endpoint strings but
        still reach other processes (``amqp``: a broker) sets it to False."""
        return not self.network

    def create_listener(
        self,
        master: MasterHooks,
        options: LinkOptions | None = None,
        reactor: IReactorCore | None = None,
    ) -> Listener:
        """A master-side :class:`~workerwire.master.Listener` for *master*."""
        assert self.listener_class is not None
        listener: Listener = self.listener_class(master, options, reactor, backend_name=self.name)
        return listener

    def create_connector(
        self,
        bot: WorkerBot,
        address: str,
        name: str,
        password: str,
        options: LinkOptions | None = None,
        reactor: IReactorCore | None = None,
        backoff: Backoff | None = None,
    ) -> WorkerConnector:
        """A worker-side connector that dials *address* and serves *bot*.

        :raises AddressError: *address* is not a client address of this backend.
        """
        assert self.connector_class is not None
        connector: WorkerConnector = self.connector_class(
            bot, address, name, password, options, reactor, backoff, backend_name=self.name)
        return connector

    def loopback_port(self) -> str:
        """A port string that listens on loopback with an ephemeral port: by
        default ``tcp:port=0:interface=127.0.0.1`` for a :attr:`network`
        backend; an in-process backend must override it."""
        return "tcp:port=0:interface=127.0.0.1"

    def raw_frames(self, connector: WorkerConnector) -> Any:
        """Take over the logged-in link of *connector* (one this backend made)
        for the hostile-peer conformance tests: a
        :class:`workerwire.conformance.raw_frames.RawFrames` that builds this
        backend's frames by hand and writes them as they are.  A backend that
        does not offer it fails those tests (they do not skip).

        :raises NotImplementedError: not offered by this backend.
        """
        raise NotImplementedError(
            f"backend {self.name!r} offers no raw_frames() hook: the hostile-peer conformance tests need one "
            "(see docs/writing-a-backend.md)")

    def raw_connect(self, address: str, reactor: Any) -> Any:
        """For the hostile-peer conformance tests: a Deferred of a
        :class:`workerwire.conformance.raw_frames.RawFrames` on a fresh link to
        the master at *address* that has not logged in (a network backend:
        ``workerwire.conformance.raw_frames.dial_raw``).  A backend whose
        master holds no link before the login returns what its master does
        hold: a login request under way (amqp: the first part of one in the
        pool's login queue), closed when the master refuses it.

        :raises NotImplementedError: not offered by this backend.
        """
        raise NotImplementedError(
            f"backend {self.name!r} offers no raw_connect() hook: the hostile-peer conformance tests need one "
            "(see docs/writing-a-backend.md)")

    def check_port(self, portStr: str) -> None:
        """Raise :class:`AddressError` unless *portStr* is a listening address
        this backend accepts.  Opens nothing.

        By default: a Twisted server endpoint string (or a bare port number)
        for a :attr:`network` backend (:func:`workerwire.endpoints.parse_server_port`),
        a non-empty string otherwise."""
        if self.network and isinstance(portStr, (str, int)) and not isinstance(portStr, bool):
            from twisted.internet import reactor

            from .endpoints import parse_server_port

            parse_server_port(reactor, portStr, self.name)
            return
        if not isinstance(portStr, str) or not portStr:
            raise AddressError(f"a {self.name} port must be a non-empty string such as "
                               f"{self.loopback_port()!r}, not {portStr!r}")

    def make_interposer(self, address: str, reactor: Any) -> Any:
        """For the conformance suite's dead-peer tests: a
        ``workerwire.conformance.LinkInterposer`` (or a Deferred of one) that
        relays links to *address* and can blackhole them.  The default,
        ``None``, lets the suite relay TCP addresses (``tcp:host=H:port=N``)
        itself; a backend with other addresses overrides it."""
        return None
