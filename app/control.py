"""The master's control channel: a UNIX socket (mode 0600) for local commands.

``workerwire status|run|disconnect|shutdown -c master.toml`` talk to a
running master through it.  Its path is ``[master] control_socket``
(default ``control.sock`` in the state directory, which the master creates
with mode 0700); it is never on the network.  Whoever can open the socket
can run commands on every worker: it is the master user's.

Protocol: line-delimited JSON (UTF-8, one object per ``\\n``-terminated line,
at most :data:`MAX_LINE` bytes).  The client sends one request; the master
answers, then closes the connection (except during ``run``).

* ``{"request": "status"}`` -> ``{"ok": true, "status": {...}}`` (see
  :meth:`~workerwire_app.master.Master.status`).
* ``{"request": "disconnect", "worker": NAME}`` and
  ``{"request": "shutdown", "worker": NAME}`` -> ``{"ok": true, "message": ...}``.
* ``{"request": "run", "worker": NAME, "command": [ARGV...] or "shell string",
  "builder": B or null, "timeout": S or null, "workdir": W or null,
  "stdin": BASE64 (optional: the command's stdin, at most
  :data:`MAX_RUN_STDIN` bytes once decoded)}`` ->
  ``{"started": {"command_id": ..., "worker": ..., "builder": ...}}``, then
  one line per update, ``{"update": KEY, "value": V}`` (a ``bytes`` value,
  such as raw stdout, as ``{"update": KEY, "b64": BASE64}``), and finally
  ``{"complete": true, "rc": RC, "failure": null or {"type", "message"}}``.
  While it runs the client may send ``{"request": "interrupt", "why": TEXT}``;
  if the client disconnects, the command is interrupted.
* Any mistake -> ``{"ok": false, "error": "what was wrong; valid: ..."}``.
"""

from __future__ import annotations

import base64
import json
import os
from typing import TYPE_CHECKING, Any

from twisted.internet import endpoints
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from workerwire.errors import WorkerwireError

from .command_output import SIGTERM_GRACE
from .remote_command import failure_dict

if TYPE_CHECKING:
    from .master import Master

__all__ = ["ControlServer", "encode_update", "MAX_LINE", "MAX_RUN_STDIN", "MAX_REQUEST"]

_log = Logger()

#: Longest request or answer line, in bytes (a ``run`` request with stdin: see :data:`MAX_REQUEST`).
MAX_LINE = 1024 * 1024
#: Most bytes of stdin ``run`` gives the command (Buildbot's ``initial_stdin``:
#: one value in the start of the command, so it also has to fit in the
#: link's ``max_message_size``).
MAX_RUN_STDIN = 16 * 1024 * 1024
#: Longest request line: a ``run`` with :data:`MAX_RUN_STDIN` bytes of stdin in base64.
MAX_REQUEST = MAX_LINE + (MAX_RUN_STDIN + 2) // 3 * 4


def encode_update(key: str, value: Any) -> dict[str, Any]:
    """An update as a JSON-able line (bytes as base64, see the module docstring)."""
    if isinstance(value, bytes):
        return {"update": key, "b64": base64.b64encode(value).decode("ascii")}
    return {"update": key, "value": _jsonable(value)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@implementer(IPushProducer)
class _Session(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def __init__(self, master: "Master"):
        self.master = master
        self.busy = False
        self.interrupt: Any = None
        # Flow control: while the client does not read, the transport pauses us
        # and ``run`` holds the worker back (remote_update's Deferred) instead
        # of buffering the command's output in the master.
        self._paused = False
        self._resumed: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        assert self.transport is not None  # set by makeConnection before this call
        IConsumer(self.transport).registerProducer(self, True)  # stream transports are consumers

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiters, self._resumed = self._resumed, []
        for d in waiters:
            d.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()

    def room(self) -> Deferred[None] | None:
        """None, or a Deferred that fires once the client reads again."""
        if not self._paused or self.transport is None:
            return None
        d: Deferred[None] = Deferred()
        self._resumed.append(d)
        return d

    def send(self, obj: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")

    def fail(self, error: str) -> None:
        self.send({"ok": False, "error": error})
        self.close()

    def close(self) -> None:
        """Close once everything sent is written.  This session stops being the
        transport's producer first: a transport whose producer was ever paused
        resumes it when its buffer drains, instead of closing (Twisted's
        ``FileDescriptor.doWrite``), so a ``run`` whose client once read slower
        than the output came never ended."""
        if self.transport is not None:
            IConsumer(self.transport).unregisterProducer()
            self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.fail(f"request longer than {MAX_REQUEST} bytes (a run's stdin: at most {MAX_RUN_STDIN} bytes)")

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line.decode("utf-8"))
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            self.fail(f"not a JSON request line ({e}); valid: one JSON object per line, see docs/operating.md")
            return
        kind = request.get("request")
        if self.busy:
            if kind == "interrupt" and self.interrupt is not None:
                self.interrupt(str(request.get("why") or "interrupted by the control client"))
            return
        handler = {"status": self.status, "run": self.run, "disconnect": self.disconnect,
                   "shutdown": self.shutdown}.get(kind)  # type: ignore[arg-type]
        if handler is None:
            self.fail(f"unknown request {kind!r}; valid: status, run, disconnect, shutdown")
            return
        self.busy = True
        ensureDeferred(self._handle(handler, request))

    async def _handle(self, handler: Any, request: dict[str, Any]) -> None:
        try:
            await handler(request)
        except Exception as e:  # one request failing never takes the master down
            _log.failure("control request {request} failed", request=request.get("request"))
            self.fail(f"the master failed: {e}")
            return
        self.close()

    def connectionLost(self, reason: Any = None) -> None:
        interrupt, self.interrupt = self.interrupt, None
        self.transport = None
        self.resumeProducing()
        if interrupt is not None:
            interrupt("the control client disconnected")

    # -- requests -----------------------------------------------------------------

    async def status(self, request: dict[str, Any]) -> None:
        self.send({"ok": True, "status": self.master.status()})

    def _connected(self, request: dict[str, Any]) -> Any:
        name = request.get("worker")
        if not isinstance(name, str) or name not in self.master.config.workers:
            self.send({"ok": False, "error": f"unknown worker {name!r}; valid: a configured worker: "
                                            f"{', '.join(sorted(self.master.config.workers)) or 'none'}"})
            return None
        conn = self.master.connection(name)
        if conn is None:
            self.send({"ok": False, "error": f"worker {name!r} is not connected"})
        return conn

    async def disconnect(self, request: dict[str, Any]) -> None:
        conn = self._connected(request)
        if conn is not None:
            self.master.disconnect(conn.workerName, "the operator asked (workerwire disconnect)")
            self.send({"ok": True, "message": f"worker {conn.workerName!r} disconnected"})

    async def shutdown(self, request: dict[str, Any]) -> None:
        conn = self._connected(request)
        if conn is None:
            return
        try:
            await self.master.shutdown_worker(conn.workerName, "the operator asked (workerwire shutdown)")
        except WorkerwireError as e:
            self.send({"ok": False, "error": f"shutting down worker {conn.workerName!r} failed: {e}"})
            return
        self.send({"ok": True, "message": f"worker {conn.workerName!r} was told to shut down"})

    async def run(self, request: dict[str, Any]) -> None:
        command = request.get("command")
        if not (isinstance(command, str) and command.strip()) and not (
                isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            self.send({"ok": False, "error": f"command {command!r} is not a command; valid: a non-empty argv list "
                                            "or a shell string"})
            return
        timeout = request.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                    or timeout <= 0):
            self.send({"ok": False, "error": f"timeout {timeout!r} is not a positive number of seconds"})
            return
        stdin = request.get("stdin")
        if stdin is not None:
            try:
                if not isinstance(stdin, str):
                    raise ValueError(f"a {type(stdin).__name__}")
                stdin = base64.b64decode(stdin, validate=True)
            except ValueError as e:
                self.send({"ok": False, "error": f"stdin is not base64 ({e}); valid: the command's stdin as a "
                                                "base64 string, or no stdin key"})
                return
            if len(stdin) > MAX_RUN_STDIN:
                self.send({"ok": False, "error": f"stdin is {len(stdin)} bytes; valid: at most {MAX_RUN_STDIN}"})
                return
        conn = self._connected(request)
        if conn is None:
            return
        worker = self.master.config.workers[conn.workerName]
        builders = [b for b, _ in worker.builders]
        builder = request.get("builder") or (builders[0] if builders else None)
        if builder is None or builder not in builders:
            self.send({"ok": False, "error": (f"worker {conn.workerName!r} has no builder {builder!r}" if builder else
                                              f"worker {conn.workerName!r} has no builders")
                       + f"; valid: {', '.join(builders) or 'add builders = [...] to its [[workers]] entry'}"})
            return
        workdir = request.get("workdir") or "build"
        args: dict[str, Any] = {"command": command, "workdir": workdir, "env": {}, "timeout": timeout, "want_stdout": True,
                "want_stderr": True, "logEnviron": False, "raw_output": True,
                # Interrupts and timeouts: SIGTERM first, SIGKILL SIGTERM_GRACE s later (as exec).
                "sigtermTime": SIGTERM_GRACE}
        if stdin:
            args["initial_stdin"] = stdin  # bytes: the shell command writes them as they are
        command_id = self.master.next_command_id("run")

        def updates(batch: list[Any]) -> Deferred[None] | None:
            for key, value in batch:
                self.send(encode_update(key, value))
            return self.room()

        target, started = await self.master.run_command(conn, builder, command_id, args, updates)
        if not started:
            result = await target.done
            self.send({"ok": False, "error": f"the command did not start: {result.failure}"})
            return
        self.send({"started": {"command_id": command_id, "worker": conn.workerName, "builder": builder}})

        def interrupt(why: str) -> None:
            self.interrupt = None
            conn.remoteInterruptCommand(builder, command_id, why).addErrback(
                lambda f: _log.warn("interrupting {command} failed: {why}", command=command_id,
                                    why=f.getErrorMessage()))

        self.interrupt = interrupt
        result = await target.done
        self.interrupt = None
        self.send({"complete": True, "rc": result.rc, "failure": failure_dict(result.failure)})


class _Factory(Factory):
    noisy = False

    def __init__(self, master: "Master"):
        self.master = master

    def buildProtocol(self, addr: Any) -> _Session:
        session = _Session(self.master)
        session.factory = self
        return session


class ControlServer:
    """Listens on the control socket for one master."""

    def __init__(self, master: "Master", path: str, reactor: Any):
        self.master = master
        self.path = path
        self.reactor = reactor
        self._port: Any = None

    async def start(self) -> None:
        """Listen (mode 0600); a stale socket of a dead master is replaced.

        :raises OSError: another running master holds the socket, or it cannot be created.
        """
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        # wantPID: a lock file beside the socket tells a live master's socket
        # (refused) from a dead one's (removed and replaced).
        endpoint = endpoints.UNIXServerEndpoint(self.reactor, self.path, mode=0o600, wantPID=True)
        try:
            self._port = await endpoint.listen(_Factory(self.master))
        except Exception as e:
            raise OSError(f"cannot listen on {self.path}: {e}") from None

    def stop(self) -> Deferred[None]:
        """Stop listening (the socket and its lock file are removed)."""
        port, self._port = self._port, None
        return port.stopListening() if port is not None else succeed(None)
