"""Small Deferred helpers the app uses in several places."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = ["wait_for", "TimedOut", "sleep"]

T = TypeVar("T")


class TimedOut(Exception):
    """:func:`wait_for` gave up waiting."""


def wait_for(d: Deferred[T], timeout: float, clock: Any) -> Deferred[T]:
    """A Deferred that fires like *d*, or fails with :class:`TimedOut` after
    *timeout* seconds.

    Unlike ``Deferred.addTimeout`` it never cancels *d*: a late result is
    simply dropped.  *d*'s result is consumed (add nothing else to *d*).
    """
    out: Deferred[T] = Deferred()

    def expire() -> None:
        if not out.called:
            out.errback(Failure(TimedOut(f"no answer within {timeout:g} s")))

    call = clock.callLater(timeout, expire)

    def settle(result: Any) -> Any:
        if call.active():
            call.cancel()
        if not out.called:
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
        return None

    d.addBoth(settle)
    return out


def sleep(seconds: float, clock: Any) -> Deferred[None]:
    """Fire after *seconds* on *clock* (without blocking it)."""
    d: Deferred[None] = Deferred()
    clock.callLater(seconds, d.callback, None)
    return d
