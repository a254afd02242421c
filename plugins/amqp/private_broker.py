"""A private RabbitMQ broker: the ``amqp`` backend's peer in tests and benchmarks.

:class:`PrivateBroker` runs Debian's ``rabbitmq-server`` (``.ci/system-packages``
installs it) as a child process on free ports, with its node name, data, logs,
config and Erlang cookie in a temporary directory, the management plugin off,
and stops it at the end.  Nothing system-wide is used or left running.
:meth:`PrivateBroker.kill` crashes the node (SIGKILL) and keeps its ports and
data directory, so :meth:`PrivateBroker.start` brings the same broker back (a
broker restart, as its clients see it).

Readiness is event-based: the broker logs to its stdout (``RABBITMQ_LOGS=-``)
and we read it until the line saying startup completed, then check that the
AMQP port answers a protocol header; a broker that exits, or is not up within
the bound, fails the run with its last log lines.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque

__all__ = ["PrivateBroker", "BrokerFailed", "find_server", "URL_ENV"]

#: The environment variable the amqp backend reads its default broker from.
URL_ENV = "WORKERWIRE_AMQP_URL"

#: Where Debian's package puts the scripts that run the node as the calling user
#: (``/usr/sbin/rabbitmq-server`` would switch to the ``rabbitmq`` user).
_SERVER_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server",)

_STARTED = "Server startup complete"


class BrokerFailed(RuntimeError):
    """The private broker could not be started."""


def find_server() -> str:
    for path in _SERVER_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise BrokerFailed(
            "rabbitmq-server is not installed; install Debian's package "
            "(apt-get install -y --no-install-recommends rabbitmq-server, as .ci/run does)")
    return found


def _free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out (closed again; the broker binds them right after)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class PrivateBroker:
    """One RabbitMQ node of our own.  ``start()`` returns when it accepts AMQP."""

    def __init__(self, startup_timeout: float = 120.0) -> None:
        self.startup_timeout = startup_timeout
        self.tmp = tempfile.mkdtemp(prefix="workerwire-rabbitmq-")
        self.amqp_port, self.dist_port, self.epmd_port = _free_ports(3)
        self.nodename = f"ww-{uuid.uuid4().hex[:10]}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_tail: deque[str] = deque(maxlen=60)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def _env(self) -> dict[str, str]:
        conf = os.path.join(self.tmp, "rabbitmq.conf")
        with open(conf, "w") as f:
            f.write(
                "listeners.tcp.default = 127.0.0.1:%d\n"
                "disk_free_limit.absolute = 50MB\n"
                "vm_memory_high_watermark.relative = 0.6\n"
                "log.console = true\n"
                "log.console.level = info\n"
                "log.file = false\n" % self.amqp_port
            )
        plugins = os.path.join(self.tmp, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].\n")  # no management plugin, no other plugin
        env = dict(os.environ)
        env.update({
            "HOME": self.tmp,  # the Erlang cookie goes here, not in root's home
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": os.path.join(self.tmp, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.tmp, "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": conf,
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.tmp, "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": plugins,
            "RABBITMQ_PID_FILE": os.path.join(self.tmp, "rabbitmq.pid"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.tmp, "rabbitmq-env.conf"),
        })
        return env

    def start(self) -> "PrivateBroker":
        """Run the node (again, after :meth:`kill`: same ports, node name and data);
        return when it accepts AMQP."""
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerFailed("the private broker is already running")
        server = find_server()
        self.log_tail.clear()
        self.proc = subprocess.Popen(
            [server], env=self._env(), cwd=self.tmp, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            pending = self._wait_started()
            self._wait_amqp_answers()
        except BaseException:
            self.stop()
            raise
        # The broker logs every connection: keep reading, or its log blocks once the pipe is full.
        threading.Thread(target=self._drain, args=(pending,), name="rabbitmq-log", daemon=True).start()
        return self

    def _drain(self, pending: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdout is None:
            return
        fd = proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.log_tail.append(line.decode("utf-8", "replace"))

    def _wait_started(self) -> bytes:
        """Read the broker's log lines until startup completed (or it died, or the bound passed)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        fd = self.proc.stdout.fileno()
        pending = b""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerFailed(self._why(f"not started within {self.startup_timeout:g} s"))
                if not sel.select(timeout=left):
                    continue
                data = os.read(fd, 65536)
                if not data:
                    raise BrokerFailed(self._why(f"exited with status {self.proc.wait()} while starting"))
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    text = line.decode("utf-8", "replace")
                    self.log_tail.append(text)
                    if _STARTED in text:
                        return pending
        finally:
            sel.close()

    def _wait_amqp_answers(self) -> None:
        with socket.create_connection(("127.0.0.1", self.amqp_port), timeout=10) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            s.settimeout(10)
            first = s.recv(1)
            if first != b"\x01":  # a method frame: Connection.Start
                raise BrokerFailed(self._why(f"port {self.amqp_port} did not answer AMQP (got {first!r})"))

    def _why(self, what: str) -> str:
        tail = "\n".join(self.log_tail)
        return f"private rabbitmq-server {what}; its last log lines:\n{tail}"

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the node's processes (its process group) used so far."""
        proc = self.proc
        if proc is None:
            return None
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == proc.pid:  # the process group the node runs in
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def kill(self) -> None:
        """Crash the node at once (SIGKILL to the node's processes; epmd stays):
        every client connection drops, nothing is cleaned up, and the ports and
        data directory stay ours for :meth:`start`."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            raise BrokerFailed("the private broker is not running")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # The node and its epmd run in the session started for them.
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything of the node's that outlived it
            except (ProcessLookupError, PermissionError):
                pass
            # epmd daemonizes (a session of its own): stop ours by its private port.
            epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
            if os.access(epmd, os.X_OK):
                subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env={"ERL_EPMD_PORT": str(
                    self.epmd_port), "PATH": os.environ.get("PATH", "")}, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, timeout=30, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "PrivateBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # a broker for manual work: prints its URL, stops on Ctrl-C / SIGTERM
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    broker = PrivateBroker().start()
    print(f"{URL_ENV}={broker.url}", flush=True)
    try:
        while not stopping.wait(3600):
            pass
    finally:
        broker.stop()
