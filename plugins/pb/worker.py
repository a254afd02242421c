"""Worker side of the pb backend: dial a master, log in, serve the bot.

Speaks the same dialect as ``buildbot-worker`` 4.x, so it can stand in for it
in front of a Buildbot master: it logs in with PB's challenge-response and
passes its bot as the *mind*; the bot answers ``print``, ``getWorkerInfo``,
``setBuilderList`` (with ``{name: builder reference}``) and ``shutdown``; each
builder answers ``startBuild``, ``startCommand(cmdRef, id, name, args)`` and
``interruptCommand(id, why)``; commands report with ``update([[{key: value},
0], ...])`` and ``complete(failure)`` on ``cmdRef``; ``keepalive`` and
``shutdown`` go to the perspective.  Calls from the master are served while
the login answer is still pending (a PB master attaches before answering).
The link's bookkeeping (window, transfer calls, login outcome, loss) is
core's :class:`~workerwire.worker_link.WorkerLink`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure
from twisted.spread import pb

from workerwire.base_worker import BaseCommandChannel, BaseWorkerConnector, WorkerSession, call_bot, call_bot_now
from workerwire.errors import ProtocolError
from workerwire.flow import approx_size
from workerwire.master import Update
from workerwire.transfer import HANDLE_KEYS
from workerwire.values import encode, from_peer
from workerwire.worker_link import WorkerLink

from .broker import Servant, WireBroker
from .errors import core_error, wire_failure
from .security import ATOM_LIMIT, fits, node_limit

__all__ = ["PBConnector"]

_VERSION = "workerwire-pb/1"

#: Most bytes of updates merged into one ``packedUpdate`` (a workerwire
#: master's extension; core's default, kept for ``update`` to a stock master,
#: is 288 KiB).
PACKED_BATCH = 1024 * 1024


def _core_failure(failure: Failure) -> Failure:
    return Failure(core_error(failure))


class _Channel(BaseCommandChannel):
    """One running command's reference back to the master.

    Updates and the completion go through the link's :class:`SendWindow`:
    several updates are in flight at once (up to ``output_window`` bytes), and
    updates handed over in one reactor turn share one ``update`` call.
    """

    def __init__(self, link: "_Link", builderName: str, commandId: str, command_ref: pb.RemoteReference):
        super().__init__(builderName, commandId)
        self._link = link
        self._ref = command_ref
        self._label = f"an update of command {commandId!r}"
        self._packed_key = object()  # merges packed updates (self merges Buildbot-form ones)

    def send_update(self, updates: list[Update]) -> Deferred[None]:
        window = self._link.window
        features = self._link.wire.peer_features
        if features and features.get("packed_updates"):
            # A workerwire master: MessagePack, which both ends handle in C
            # (update() has checked the values).
            data = encode([[key, value] for key, value in updates], checked=True)
            if len(data) <= ATOM_LIMIT:
                return window.send_mergeable(self._packed_key, len(data), data, self._send_packed, self._label,
                                              owner=self)
        wire = [[{key: value}, 0] for key, value in updates]
        if fits(wire):
            return window.send_mergeable(self, approx_size(updates), wire, self._send_many, self._label)
        # Too large for one PB frame: sent alone and at once (through the
        # chunking extension), so that a refusal reaches this update's caller.
        broker, ref = self._link.wire, self._ref
        return window.send_update(approx_size(updates), lambda: broker.call(ref, "update", wire), self._label,
                                  key=self)

    def _send_packed(self, packed: list[bytes]) -> Deferred[Any]:
        return self._link.wire.call(self._ref, "packedUpdate", packed)

    def _send_many(self, batches: list[list[Any]]) -> Deferred[Any]:
        wire = batches[0] if len(batches) == 1 else [entry for batch in batches for entry in batch]
        return self._link.wire.call(self._ref, "update", wire)

    def send_complete(self, failure: BaseException | None) -> Deferred[None]:
        self._link.forget_channel(self)  # and the command's handles
        sent = None if failure is None else wire_failure(failure, self._link.connector.options.send_tracebacks)
        broker, ref = self._link.wire, self._ref
        return self._link.window.send_ordered(lambda: broker.call(ref, "complete", sent),
                                              f"the completion of command {self.commandId!r}", key=self)


class _Builder(Servant):
    """Buildbot's ``WorkerForBuilder``: one builder, as the master calls it."""

    def __init__(self, link: "_Link", name: str):
        self.link = link
        self.name = name

    def remote_startBuild(self) -> Deferred[Any]:
        return call_bot(self.link.connector.bot, "startBuild", self.name)

    def remote_startCommand(self, command_ref: Any, commandId: Any, commandName: Any, args: Any) -> Deferred[Any]:
        if not isinstance(command_ref, pb.RemoteReference):
            raise ProtocolError("startCommand expects a command reference first")
        link, limit = self.link, self.link.limit
        commandId, commandName = from_peer(commandId, "commandId", limit), from_peer(commandName, "commandName", limit)
        handles: dict[str, pb.RemoteReference] = {}
        if isinstance(args, dict):
            # Transfer handles: references where Buildbot puts them, nowhere else.
            handles = {k: v for k, v in args.items() if k in HANDLE_KEYS and isinstance(v, pb.RemoteReference)}
            args = {k: v for k, v in args.items() if k not in handles}
        args = from_peer(args, "args", limit)
        if not isinstance(commandId, str) or not isinstance(commandName, str) or not isinstance(args, dict):
            raise ProtocolError("startCommand(cmdRef, commandId: str, commandName: str, args: dict)")
        for key, ref in handles.items():
            args[key] = link.carried.proxy(commandId, HANDLE_KEYS[key], ref)
        channel = _Channel(link, self.name, commandId, command_ref)
        return link.start_command(channel, commandName, args)  # a refusal forgets the command's handles too

    def remote_interruptCommand(self, commandId: Any, why: Any) -> Deferred[Any]:
        limit = self.link.limit
        return call_bot(self.link.connector.bot, "interruptCommand", self.name,
                        str(from_peer(commandId, "commandId", limit)), str(from_peer(why, "why", limit)))


class _Bot(Servant):
    """Buildbot's ``Bot``: the login's mind."""

    def __init__(self, link: "_Link"):
        self.link = link
        self.builders: dict[str, _Builder] = {}

    def remote_print(self, message: Any) -> Any:
        return call_bot_now(self.link.connector.bot, "print", from_peer(message, "message", self.link.limit))

    def remote_getWorkerInfo(self) -> Deferred[Any]:
        return call_bot(self.link.connector.bot, "getWorkerInfo")

    def remote_getVersion(self) -> str:
        return _VERSION

    def remote_setBuilderList(self, wanted: Any) -> Deferred[Any]:
        return self.link.set_builder_list(from_peer(wanted, "builders", self.link.limit)).addCallback(self._present)

    def _present(self, names: list[str]) -> dict[str, _Builder]:
        self.builders = {n: self.builders.get(n) or _Builder(self.link, n) for n in names}
        return dict(self.builders)

    def remote_shutdown(self) -> Deferred[Any]:
        return call_bot(self.link.connector.bot, "shutdown")


class _Link(WorkerLink):
    """One connection attempt, and once logged in, the session."""

    def __init__(self, connector: "PBConnector"):
        super().__init__(connector, translate=_core_failure)
        self.broker: WireBroker | None = None
        self.perspective: pb.RemoteReference | None = None
        #: Most values one message from the master may unpack to.
        self.limit = node_limit(connector.options.max_message_size)

    def send_transfer(self, commandId: str, handleId: int, method: str, args: list[Any]) -> Deferred[Any]:
        try:
            ref = self.carried.carrier(commandId, handleId)  # the master's reference
        except ProtocolError:
            return fail()
        if method == "utime":
            args = [tuple(args[0])]  # Buildbot's FileWriterImpl unpacks (atime, mtime)
        return self.wire.call(ref, method, *args).addErrback(_core_failure)

    @property
    def wire(self) -> WireBroker:
        """The broker; it exists from the connection on (channels and the
        session's calls come later)."""
        assert self.broker is not None, "no broker before the connection"
        return self.broker

    # -- dialling and login -----------------------------------------------------

    def build_factory(self) -> "_ClientFactory":
        return _ClientFactory(self)

    def build_broker(self) -> WireBroker:
        broker = WireBroker(True, self.connector.options, self.reactor)
        broker.on_traffic = self.connector.on_traffic
        broker.on_lost = self.lost
        broker.link_bytes = self.connector.link_bytes
        self.broker = broker
        return broker

    def connected(self, broker: WireBroker) -> None:
        self.peer = broker.peer  # the login starts once the PB dialect is agreed: ready()

    def ready(self, broker: WireBroker) -> None:
        """The PB dialect is agreed: log in."""
        password = self.connector.password.encode("utf-8")
        bot = _Bot(self)
        d = broker.remoteForName("root").callRemote("login", self.connector.name.encode("utf-8"))

        def respond(answer: Any) -> Deferred[Any]:
            if not (isinstance(answer, (list, tuple)) and len(answer) == 2 and isinstance(answer[0], bytes)
                    and isinstance(answer[1], pb.RemoteReference)):
                raise ProtocolError("the master's login answer is not (challenge, challenger)")
            challenge, challenger = answer
            return challenger.callRemote("respond", pb.respond(challenge, password), bot)

        def perspective(ref: Any) -> Deferred[None]:
            if not isinstance(ref, pb.RemoteReference):
                raise ProtocolError("the master's login did not answer a perspective")
            self.perspective = ref
            return broker.features_known()

        d.addCallback(respond)
        d.addCallback(perspective)
        d.addCallbacks(self._logged_in, lambda failure: self.login_failed(core_error(failure)))

    def _logged_in(self, _: Any) -> None:
        if self.broker is not None and self.broker.peer_features and self.broker.peer_features.get("packed_updates"):
            self.window.batch_limit = PACKED_BATCH
        self.login_succeeded()

    # -- the session ------------------------------------------------------------

    def keepalive(self) -> Deferred[None]:
        return self.not_logged_in() or self.settled(self.wire.call(self.perspective, "keepalive"))

    def request_shutdown(self) -> Deferred[None]:
        return self.not_logged_in() or self.settled(self.wire.call(self.perspective, "shutdown"))

    def close(self, abort: bool = False) -> None:
        if self.broker is not None:
            self.broker.close(abort)


class _ClientFactory(protocol.ClientFactory):
    """Builds the broker of one attempt; PB calls ``clientConnectionMade``
    once the dialect is agreed."""

    # One factory per attempt: Twisted's "Starting factory" line on each would be noise.
    noisy = False

    def __init__(self, link: _Link):
        self.link = link
        self.unsafeTracebacks = link.connector.options.send_tracebacks

    def buildProtocol(self, addr: Any) -> Any:
        broker = self.link.build_broker()
        broker.factory = self
        return broker

    def clientConnectionMade(self, broker: WireBroker) -> None:
        self.link.ready(broker)


class PBConnector(BaseWorkerConnector):
    """Dials a pb master (workerwire's, or Buildbot's) and serves a bot."""

    backendName = "pb"
    dials_address = True  # AddressError when made, not at the first attempt

    def connect_once(self) -> Deferred[WorkerSession]:
        return _Link(self).start()
