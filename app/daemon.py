"""Running one async main function on the reactor: logging, signals, exit status."""

from __future__ import annotations

import signal
import sys
from typing import IO, Any, Callable, Coroutine

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

__all__ = ["setup_logging", "run", "on_signal", "LOG_LEVELS"]

_log = Logger()

LOG_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


def setup_logging(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send twisted.logger events at *level* and above to *stream* (stderr) as text lines."""
    observer = FilteringLogObserver(
        textFileLogObserver(stream or sys.stderr, timeFormat="%Y-%m-%d %H:%M:%S%z"),
        [LogLevelFilterPredicate(defaultLogLevel=LOG_LEVELS[level])],
    )
    globalLogBeginner.beginLoggingTo([observer], discardBuffer=True, redirectStandardIO=False)


def on_signal(reactor: Any, signum: int, callback: Callable[[], object]) -> None:
    """Call *callback* in the reactor thread when *signum* arrives.

    Install from inside the running reactor (it installs its own SIGINT and
    SIGTERM handlers when it starts).
    """
    signal.signal(signum, lambda *_: reactor.callFromThread(callback))


def run(main: Callable[[Any], Coroutine[Any, Any, int]], reactor: Any = None) -> int:
    """Run ``main(reactor)`` once the reactor runs; stop it when main returns.

    :returns: main's result (an exit status); 1 if it raised (the error is logged).
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    status = [1]

    def start() -> None:
        d: Deferred[int] = ensureDeferred(main(reactor))

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                if isinstance(result.value, SystemExit):
                    # as Python's own exit: None is 0, a number is the status, anything else is printed, 1
                    code = result.value.code
                    if code is None or isinstance(code, int):
                        status[0] = code or 0
                    else:
                        print(code, file=sys.stderr)
                        status[0] = 1
                else:
                    _log.failure("workerwire failed", result)
                    print(f"workerwire: {result.getErrorMessage()}", file=sys.stderr)
            else:
                status[0] = int(result or 0)
            if reactor.running:
                reactor.stop()

        d.addBoth(done)

    reactor.callWhenRunning(start)
    reactor.run()
    return status[0]
