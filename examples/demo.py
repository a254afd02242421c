"""A master and a worker in one process over the ``null`` backend.

Shows the contract at work: a login, the calls a master makes, and one
command's ordered update stream arriving at the master's RemoteCommand.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

from twisted.internet import defer, task

from workerwire import LinkOptions, load_backend
from workerwire.conformance.harness import Harness, RecordingCommand


async def main(reactor: Any, backend_name: str) -> None:
    backend = load_backend(backend_name)
    with tempfile.TemporaryDirectory() as basedir:
        harness = Harness(backend, LinkOptions(keepalive_interval=5.0), reactor, basedir)
        try:
            w = await harness.start_worker("demo-worker", "demo-password", builders=[])
            print(f"[master] worker {w.conn.workerName!r} logged in over {w.conn.backendName} from {w.conn.get_peer()}")
            info = await w.conn.remoteGetWorkerInfo()
            print(f"[master] getWorkerInfo -> commands: {', '.join(sorted(info['worker_commands']))}")
            names = await w.conn.remoteSetBuilderList([("build-linux", "build-linux")])
            print(f"[master] setBuilderList -> {names}")
            await w.conn.remotePrint("hello from the master")
            print(f"[worker] printed: {w.bot.prints[-1]!r}")

            class Printer(RecordingCommand):
                def remote_update(self, updates: list[tuple[str, Any]]) -> None:
                    super().remote_update(updates)
                    for key, value in updates:
                        print(f"[master] update {len(self.updates):2d}: {key:<7} {value!r}")

            rc = Printer()
            updates = [["header", "running 'make check'\n"], ["stdout", "compiling... ✓\n"],
                       ["stderr", "warning: 1 deprecated call\n"], ["stdout", "42 tests passed 😀\n"],
                       ["rc", 0], ["elapsed", 1.25]]
            await w.conn.remoteStartCommand(rc, "build-linux", "cmd-1", "emit", {"updates": updates})
            print("[master] command accepted by the worker")
            await rc.done
            print(f"[master] remote_complete({rc.completions[0]!r}) after {len(rc.updates)} updates, in order: "
                  f"{[k for k, _ in rc.updates] == [k for k, _ in updates]}")
        finally:
            await harness.close()


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "null"
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, name)))
