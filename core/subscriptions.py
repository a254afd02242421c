"""Callback lists with unsubscribe handles (disconnect notices and the like)."""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from .master import Subscription

__all__ = ["SubscriptionList"]

_log = Logger()


class _Handle(Subscription):
    __slots__ = ("_owner", "callback")  # several per connection on a master

    def __init__(self, owner: "SubscriptionList", callback: Callable[..., object]):
        self._owner = owner
        self.callback = callback

    def unsubscribe(self) -> None:
        self._owner._remove(self)


class SubscriptionList:
    """Callbacks called in subscription order; one failing callback is logged
    and does not stop the others."""

    __slots__ = ("_handles",)

    def __init__(self) -> None:
        self._handles: list[_Handle] = []

    def subscribe(self, callback: Callable[..., object]) -> Subscription:
        handle = _Handle(self, callback)
        self._handles.append(handle)
        return handle

    def _remove(self, handle: _Handle) -> None:
        try:
            self._handles.remove(handle)
        except ValueError:
            pass

    def deliver(self, *args: Any) -> None:
        for handle in list(self._handles):
            try:
                handle.callback(*args)
            except Exception:
                _log.failure("subscriber {callback!r} raised", callback=handle.callback)

    def __len__(self) -> int:
        return len(self._handles)
