"""Keep a child process alive only while its parent holds its stdin open."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import fdesc
from twisted.internet.abstract import FileDescriptor

__all__ = ["watch_stdin"]


class _StdinWatch(FileDescriptor):
    def __init__(self, reactor: Any, on_close: Callable[[], object]) -> None:
        super().__init__(reactor)
        self.on_close = on_close
        fdesc.setNonBlocking(0)
        reactor.addReader(self)

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        return fdesc.readFromFD(0, lambda data: None)

    def connectionLost(self, reason: Any) -> None:
        reactor: Any = self.reactor
        reactor.removeReader(self)
        self.on_close()


def watch_stdin(reactor: Any, on_close: Callable[[], object], max_seconds: float) -> None:
    """Call *on_close* once: when stdin closes (the parent is done or died), or after *max_seconds*."""
    fired: list[bool] = []

    def once() -> None:
        if not fired:
            fired.append(True)
            on_close()

    _StdinWatch(reactor, once)
    reactor.callLater(max_seconds, once)
