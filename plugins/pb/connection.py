"""Master side of one pb link: the :class:`~workerwire.master.Connection`.

The calls go out in Buildbot's PB worker dialect: ``print(message=...)``,
``getWorkerInfo()``, ``setBuilderList([(name, builddir), ...])`` on the bot
(the login's *mind*), and ``startBuild()``, ``startCommand(cmdRef, id, name,
args)``, ``interruptCommand(id, why)`` on the builder references that
``setBuilderList`` answered.  The worker calls ``update`` / ``complete`` on
the per-command reference and ``keepalive`` / ``shutdown`` on its
perspective.  What comes back is normalized to the contract's shapes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.spread import pb

from workerwire.base_connection import BaseConnection, update_pairs
from workerwire.buildbot_dialect import builder_of, worker_info
from workerwire.errors import ProtocolError, WorkerwireError, peer_text
from workerwire.master import Update
from workerwire.transfer import HandleRef
from workerwire.values import decode, from_peer

from .broker import Servant, WireBroker
from .errors import core_error
from .security import ATOM_LIMIT, DEFAULT_NODES, node_limit

__all__ = ["PBConnection", "normalize_updates"]

#: The call a master pings a worker with: every PB worker answers it at once,
#: and a stock buildbot-worker logs nothing for it.
KEEPALIVE_CALL = "getVersion"


def normalize_updates(updates: Any, limit: int = DEFAULT_NODES) -> tuple[list[Update], int]:
    """``[[{key: value}, num], ...]`` -> ``([(key, value), ...], max num)``.

    A bare ``{key: value}`` entry is accepted too.  Values become contract
    values (tuples become lists).

    :raises ProtocolError: any other shape.
    """
    if type(updates) not in (list, tuple):
        raise ProtocolError(f"update expects a list of [{{key: value}}, n], not a {type(updates).__name__}")
    out: list[Update] = []
    top = 0
    budget = [limit]
    for entry in updates:
        num: Any = 0
        if type(entry) in (list, tuple) and len(entry) == 2 and isinstance(entry[0], dict):
            batch, num = entry
        elif isinstance(entry, dict):
            batch = entry
        else:
            raise ProtocolError(f"an update entry is [{{key: value}}, n], not {repr(entry)[:80]}")
        if type(num) is int:
            top = max(top, num)
        for key, value in batch.items():
            if not isinstance(key, str):
                raise ProtocolError(f"update key {peer_text(key)} is not a str")
            out.append((key, from_peer(value, f"update {key!r}", limit, budget)))
    return out, top


class _Perspective(Servant):
    """What the worker holds as its perspective (Buildbot's ``Connection`` avatar)."""

    prefix = "perspective_"

    def __init__(self, conn: "PBConnection"):
        self.conn = conn

    def perspective_keepalive(self) -> None:
        self.conn.on_worker_keepalive()

    def perspective_shutdown(self) -> None:
        self.conn.on_shutdown_request()


class _CommandRef(Servant):
    """The reference ``startCommand`` passes: Buildbot's ``RemoteCommand`` as
    the worker sees it."""

    def __init__(self, conn: "PBConnection", commandId: str):
        self.conn = conn
        self.commandId = commandId

    def remote_update(self, updates: Any) -> int | Deferred[int]:
        try:
            batch, top = normalize_updates(updates, node_limit(self.conn.options.max_message_size))
        except ProtocolError as e:
            self.conn._broker.protocol_error(str(e))  # malformed input closes the link, as on amp
            raise
        if batch:
            pending = self.conn.on_update(self.commandId, batch)
            if isinstance(pending, Deferred):
                # The answer (the worker's acknowledgement) waits for a master
                # that asks to be waited for: a slow master slows the worker.
                return pending.addBoth(lambda _: top)
        return top

    def remote_packedUpdate(self, packed: Any) -> Any:
        """Updates from a workerwire worker: MessagePack ``[[key, value], ...]``
        batches (one bytes item each), decoded and checked by the core codec."""
        if type(packed) is not list or not all(type(data) is bytes for data in packed):
            raise ProtocolError("packedUpdate expects a list of MessagePack-encoded update batches")
        conn = self.conn
        batch: list[Update] = []
        try:
            for data in packed:  # pairs are framing: values count from themselves
                batch += update_pairs(decode(data, conn.options.max_message_size, 2), "a packed update batch")
            # A workerwire worker keeps a window: the master counts it.
            return conn.on_windowed_update(self.commandId, batch, sum(map(len, packed))) if batch else None
        except ProtocolError as e:
            conn._broker.protocol_error(str(e))  # malformed input, or a window overrun, closes the link, as on amp
            raise

    def remote_complete(self, failure: Any = None) -> None:
        if failure is None:
            error: WorkerwireError | None = None
        elif isinstance(failure, pb.CopiedFailure):
            error = core_error(failure)
        else:
            raise ProtocolError(f"complete expects None or a failure, not a {type(failure).__name__}")
        self.conn.on_complete(self.commandId, error)
        self.conn._broker.release(self)  # the command is over: nothing more may arrive here


class _WriterRef(Servant):
    """A master-side writer handle as Buildbot's worker sees it (its
    ``FileWriterImpl``): ``write(data)``, ``utime((atime, mtime))``,
    ``unpack()``, ``close()``.  The reference itself names the handle; it is
    given to one command and released when that command ends."""

    def __init__(self, conn: "PBConnection", handleId: int):
        self.conn = conn
        self.handleId = handleId

    def _call(self, method: str, *args: Any) -> Deferred[Any]:
        return self.conn.on_transfer_call(None, self.handleId, method, list(args))

    def remote_write(self, data: Any) -> Deferred[Any]:
        return self._call("write", data)

    def remote_utime(self, times: Any) -> Deferred[Any]:
        return self._call("utime", times)

    def remote_unpack(self) -> Deferred[Any]:
        return self._call("unpack")

    def remote_close(self) -> Deferred[Any]:
        return self._call("close")


class _ReaderRef(_WriterRef):
    """A master-side reader handle (Buildbot's ``FileReaderImpl``):
    ``read(maxLength)``, ``close()``."""

    remote_write = remote_utime = remote_unpack = None  # type: ignore[assignment]

    def remote_read(self, max_length: Any) -> Deferred[Any]:
        if type(max_length) is int and max_length > ATOM_LIMIT:
            max_length = ATOM_LIMIT  # one banana string; a reader may answer less than asked
        return self._call("read", max_length)


class PBConnection(BaseConnection):
    """One worker logged in over PB.

    :ivar builders: the builder references the last ``setBuilderList`` answered.
    """

    def __init__(self, listener: Any, workerName: str, broker: WireBroker, bot: pb.RemoteReference):
        super().__init__(listener.master, workerName, listener.backendName, listener.options, listener.reactor)
        self._broker = broker
        self._bot = bot
        self.link_bytes = broker.link_bytes
        self.builders: dict[str, pb.RemoteReference] = {}
        self._handle_refs: dict[int, _WriterRef] = {}
        self.perspective = _Perspective(self)
        broker.on_traffic = self.on_traffic
        broker.on_lost = self.on_connection_lost
        broker.stream.worker_name = workerName
        if broker.disconnected:
            self.on_connection_lost(broker.stream.drop_reason or "connection closed during login")

    def get_peer(self) -> str:
        return self._broker.peer

    # -- the one place native failures become core errors ------------------------

    def translate_failure(self, failure: Failure) -> Failure:
        return Failure(core_error(failure))

    # -- primitives ---------------------------------------------------------------

    def call_print(self, message: str) -> Deferred[Any]:
        return self._broker.call(self._bot, "print", message=message).addCallback(_none)

    def call_get_worker_info(self) -> Deferred[dict[str, Any]]:
        limit = node_limit(self.options.max_message_size)
        d = self._broker.call(self._bot, "getWorkerInfo")
        return d.addCallback(from_peer, "worker info", limit).addCallback(worker_info)

    def call_set_builder_list(self, builders: list[list[str]]) -> Deferred[list[str]]:
        wanted = [(name, builddir) for name, builddir in builders]
        return self._broker.call(self._bot, "setBuilderList", wanted).addCallback(self._got_builders)

    def _got_builders(self, answer: Any) -> list[str]:
        if not isinstance(answer, dict) or not all(
            isinstance(k, str) and isinstance(v, pb.RemoteReference) for k, v in answer.items()
        ):
            raise ProtocolError("setBuilderList must answer {builder name: builder reference}")
        self.builders = dict(answer)
        return list(answer)

    # An unknown builder raises UnknownBuilder here; core fails the call with it.

    def call_start_build(self, builderName: str) -> Deferred[Any]:
        ref = builder_of(self.builders, builderName, self.workerName)
        return self._broker.call(ref, "startBuild").addCallback(lambda _: None)

    def call_start_command(self, builderName: str, commandId: str, commandName: str,
                              args: dict[str, Any]) -> Deferred[Any]:
        ref = builder_of(self.builders, builderName, self.workerName)
        command_ref = _CommandRef(self, commandId)
        for key, value in list(args.items()):
            if type(value) is HandleRef:  # a transfer handle: a reference, as Buildbot sends it
                servant = (_WriterRef if value.kind == "writer" else _ReaderRef)(self, value.handle_id)
                self._handle_refs[value.handle_id] = servant
                args[key] = servant

        def refused(failure: Failure) -> Failure:
            self._broker.release(command_ref)
            return failure

        d = self._broker.call(ref, "startCommand", command_ref, commandId, commandName, args)
        return d.addCallbacks(lambda _: None, refused)

    def transfer_handles_released(self, handle_ids: list[int]) -> None:
        for handle_id in handle_ids:
            servant = self._handle_refs.pop(handle_id, None)
            if servant is not None:
                self._broker.release(servant)  # later calls: ProtocolError, reaching nothing

    def call_interrupt_command(self, builderName: str, commandId: str, why: str) -> Deferred[Any]:
        ref = self.builders.get(builderName)
        if ref is None:
            return succeed(None)  # its builder is gone, so is the command
        return self._broker.call(ref, "interruptCommand", commandId, why).addCallback(lambda _: None)

    def call_shutdown(self) -> Deferred[Any]:
        return self._broker.call(self._bot, "shutdown").addCallback(lambda _: None)

    def call_keepalive(self) -> Deferred[Any]:
        return self._broker.call(self._bot, KEEPALIVE_CALL).addCallback(lambda _: None)

    def lose_connection(self, abort: bool) -> None:
        self._broker.close(abort)


def _none(result: object) -> None:
    return None
