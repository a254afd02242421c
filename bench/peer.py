"""The worker side of a link trial, in its own process.

``python -m bench.peer raw-tcp|raw-pb|raw-amp|raw-ws HOST PORT``
``python -m bench.peer raw-pika BROKER_URL MASTER_QUEUE``
``python -m bench.peer ww BACKEND ADDRESS NAME PASSWORD``

Runs until its stdin closes (the measuring master ends it) or a time cap.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any


def main(argv: list[str]) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    kind, *rest = argv
    cleanup: list[Any] = []
    if kind == "raw-tcp":
        from .sides import raw_tcp

        raw_tcp.run_worker(reactor, rest[0], int(rest[1]))
    elif kind == "raw-pb":
        from .sides import raw_pb

        raw_pb.run_worker(reactor, rest[0], int(rest[1]))
    elif kind == "raw-amp":
        from .sides import raw_amp

        raw_amp.run_worker(reactor, rest[0], int(rest[1]))
    elif kind == "raw-ws":
        from .sides import raw_ws

        raw_ws.run_worker(reactor, rest[0], int(rest[1]))
    elif kind == "raw-pika":
        from .sides import raw_pika

        raw_pika.run_worker(reactor, rest[0], rest[1])
    elif kind == "ww":
        from .sides import ww

        connector, tmp = ww.worker_main(reactor, rest[0], rest[1], rest[2], rest[3])
        cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    else:
        sys.stderr.write(f"bench.peer: unknown kind {kind!r}\n")
        return 2

    from .lifeline import watch_stdin

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    watch_stdin(reactor, stop, max_seconds=1800)
    from .profiling import profiled

    profiled(f"worker-{kind}-{rest[0] if kind == 'ww' else ''}", reactor.run)
    for step in cleanup:
        step()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
