"""Link events for whoever watches a process's links (metrics, event logs).

Core reports three things here that an operator wants counted and that no
master hook sees: a refused login (the credentials check fails inside the
listener, before any :class:`~workerwire.master.Connection` exists), a
keepalive round trip, and the bytes a file transfer carried.  (Bytes on the
links are plain counters, :mod:`workerwire.link_bytes`: they change on every
read and write, too often for a report each.)  Observers subscribe process-wide; with none, a report
costs one empty-list check.  An observer that raises is logged (by
:class:`~workerwire.subscriptions.SubscriptionList`) and does not stop the
others or the link.

Nothing in core depends on an observer being present, and an observer must
not block: it is called in the reactor thread, inside the link's code.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .master import Subscription
from .subscriptions import SubscriptionList

__all__ = ["LinkObserver", "observe", "login_refused", "keepalive_answered", "transfer_bytes", "LOGIN_THROTTLED",
           "UPLOAD", "DOWNLOAD"]

#: The *reason* of a login refused without checking (its host has too many refusals waiting).
LOGIN_THROTTLED = "throttled"
#: The *direction* of transfer bytes: worker to master (a writer handle's
#: ``write``), and master to worker (what a reader handle's ``read`` answered).
UPLOAD = "upload"
DOWNLOAD = "download"


@runtime_checkable
class LinkObserver(Protocol):
    """What an observer may implement (each method is optional)."""

    def login_refused(self, guard: object, backend: str, worker: str, peer: str, reason: str) -> None:
        """The credentials of *worker* from *peer* were refused on a *backend* port
        (the port's :class:`~workerwire.login_guard.LoginGuard` is *guard*).

        *reason* is what the master's log says (e.g. ``unknown worker 'x' on
        tcp:9989``, ``wrong password for worker 'x' on ...``), never a
        password, or :data:`LOGIN_THROTTLED`.
        """

    def keepalive_answered(self, owner: object, rtt: float) -> None:
        """A keepalive of *owner* (the connection pinging) was answered after *rtt* seconds."""

    def transfer_bytes(self, owner: object, direction: str, size: int) -> None:
        """A transfer call on a master-side handle of *owner* (the master's
        :class:`~workerwire.master.Connection`, or None) carried *size* bytes
        (> 0): *direction* is :data:`UPLOAD` (a ``write`` that succeeded) or
        :data:`DOWNLOAD` (a ``read`` answered)."""


_observers = SubscriptionList()


def observe(observer: object) -> Subscription:
    """Call *observer*'s :class:`LinkObserver` methods from now on (those it has)."""
    return _observers.subscribe(lambda method, *args: _call(observer, method, *args))


def _call(observer: object, method: str, *args: object) -> None:
    fn = getattr(observer, method, None)
    if fn is not None:
        fn(*args)


def _deliver(method: str, *args: object) -> None:
    _observers.deliver(method, *args)


def login_refused(guard: object, backend: str, worker: str, peer: str, reason: str) -> None:
    """Report a refused login (see :meth:`LinkObserver.login_refused`)."""
    if len(_observers):
        _deliver("login_refused", guard, backend, worker, peer, reason)


def keepalive_answered(owner: object, rtt: float) -> None:
    """Report a keepalive round trip (see :meth:`LinkObserver.keepalive_answered`)."""
    if len(_observers):
        _deliver("keepalive_answered", owner, rtt)


def transfer_bytes(owner: object, direction: str, size: int) -> None:
    """Report transfer bytes (see :meth:`LinkObserver.transfer_bytes`)."""
    if len(_observers):
        _deliver("transfer_bytes", owner, direction, size)
