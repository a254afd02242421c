"""The PB broker both ends of a workerwire pb link use.

It is a :class:`twisted.spread.pb.Broker` that

* reports every complete inbound message (``on_traffic``) and the loss of the
  link (``on_lost``), and sets TCP keepalive (and ``TCP_NODELAY``);
* treats malformed, truncated or oversized input, jelly it does not accept
  (:mod:`.security`) and unknown PB messages as a protocol error: it logs one
  line and drops the connection, leaving everything else running;
* sends failures as type name and message, with a traceback only when
  ``LinkOptions.send_tracebacks`` asks for it, and never logs a traceback for
  an error it merely passes to the peer;
* carries values larger than banana allows through the chunking extension
  (:mod:`.transfers`, core's parts) when the peer is a workerwire broker of
  the same extension version.

Objects this side serves subclass :class:`Servant`; calls to the peer go
through :meth:`WireBroker.call`.
"""

from __future__ import annotations

from types import CoroutineType
from typing import Any, Callable

from twisted.internet import protocol
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import jelly, pb

from workerwire.backend import LinkOptions
from workerwire.errors import ProtocolError, UnsupportedValue, describe_loss, peer_text
from workerwire.link_bytes import LinkBytes
from workerwire.parts import TransferIds, TransferPool, numbered_parts
from workerwire.stream_link import StreamLink
from workerwire.values import decode, encode

from .codec import FastBanana
from .errors import WireFailure, remote_type_name, wire_failure
from .security import INCOMING, OUTGOING, fits
from .transfers import EXT_CALL, EXT_NAME, FEATURES, PART_SIZE, WorkerwireTransfer

__all__ = ["WireBroker", "Servant"]

_log = Logger()

# The PB messages a workerwire peer may send (no cache protocol).
_PROTO = frozenset({"version", "message", "answer", "error", "decref", "didNotUnderstand"})


class Servant(pb.Referenceable):
    """An object the peer may call: ``callRemote("x", ...)`` runs ``<prefix>x``.

    Arguments are unjellied under the broker's rules; a method may return a
    value or a Deferred, and raise to fail the call.
    """

    prefix = "remote_"

    def remoteMessageReceived(self, broker: Any, message: Any, args: Any, kw: Any) -> Any:
        return broker.dispatch(self, self.prefix, message, args, kw)


class _Extension(Servant):
    """The object every workerwire broker publishes as ``workerwire``."""

    def __init__(self, broker: "WireBroker"):
        self.broker = broker

    def remote_features(self) -> dict[str, Any]:
        return dict(FEATURES)

    def remote_part(self, *part: Any) -> None:
        # Parts are sent without answers: a bad one is a protocol error.
        try:
            if len(part) != 4:
                raise ProtocolError("workerwire.part takes (transfer, offset, total, data)")
            self.broker.transfers.part(*part)
        except ProtocolError as e:
            self.broker.protocol_error(str(e))


class WireBroker(FastBanana, pb.Broker):
    """A PB broker with workerwire's rules (see the module docstring).

    :ivar peer: ``"host:port"`` of the other end.
    :ivar peer_features: the peer's extension features; ``None`` for a stock
        PB peer, one of another extension version, or while not yet known.
    :ivar peer_version: the extension version a peer of another one answered.
    """

    knownDialects = [b"pb"]
    transport: Any
    factory: Any = None
    #: Set once this connection's login was attempted (the master allows one).
    logged_in = False

    def __init__(self, isClient: bool, options: LinkOptions, reactor: Any, stats: Any = None):
        super().__init__(isClient, security=INCOMING)
        self.options = options
        self.reactor = reactor
        self._outgoing = OUTGOING
        #: The transport's plumbing (peer, TCP options, send budget, login
        #: ticket, closing and why); a master sets ``stream.ticket``.
        self.stream = StreamLink(options, reactor, "pb " + ("worker" if isClient else "master"), stats)
        self.peer_features: dict[str, Any] | None = None
        self.peer_version: Any = None
        self._features_settled: Deferred[None] = Deferred()  # the peer answered (or refused) ``features``
        # A master takes parts once the login's password check passed.
        self.transfers = TransferPool(options.max_message_size, "workerwire.part", accepting=bool(isClient))
        self._transfer_ids = TransferIds()
        # FastBanana counts what an unfinished message holds, so that no
        # message, however it is split into lists, grows past the size limit.
        self.max_message_size = options.max_message_size
        self.on_traffic: Callable[[], None] = lambda: None
        self.on_lost: Callable[[str], None] = lambda reason: None
        self.setNameForLocal(EXT_NAME, _Extension(self))

    # -- connection events ------------------------------------------------------

    @property
    def peer(self) -> str:
        return self.stream.peer

    @property
    def link_bytes(self) -> LinkBytes:
        """Bytes read and written: the link's counter, ``stream.link_bytes``
        (a master's port factory sets its listener's, a worker its connector's)."""
        return self.stream.link_bytes

    @link_bytes.setter
    def link_bytes(self, counter: LinkBytes) -> None:
        self.stream.link_bytes = counter

    def connectionMade(self) -> None:
        super().connectionMade()
        self.stream.made(self.transport)

    def connectionReady(self) -> None:
        super().connectionReady()
        d = self.remoteForName(EXT_NAME).callRemote("features")
        d.addCallbacks(self._got_features, lambda f: None)
        d.addBoth(self._settle_features)

    def _got_features(self, result: Any) -> None:
        if not isinstance(result, dict):
            return
        if result.get("protocol") == FEATURES["protocol"]:
            self.peer_features = dict(result)
            return
        self.peer_version = result.get("protocol")
        _log.warn("pb peer {peer} speaks version {theirs} of workerwire's pb extension, this side {ours}: treated as "
                  "a stock PB peer (no value over 640 KiB, no packed updates) until the older end is upgraded",
                  peer=self.peer, theirs=peer_text(self.peer_version), ours=FEATURES["protocol"])

    def _settle_features(self, _: Any) -> None:
        if not self._features_settled.called:
            self._features_settled.callback(None)

    def features_known(self) -> Deferred[None]:
        """Fires once the peer answered (or refused) the features question, or the link was lost."""
        d: Deferred[None] = Deferred()
        self._features_settled.addCallback(lambda _: d.callback(None))
        return d

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.stream.closing and (self.buffer or self.listStack):
            pending = self.pending_bytes + self._partial
            self.stream.log_protocol_error(f"connection closed in the middle of a message ({pending} bytes pending)",
                                           "pb", "")
        why = self.stream.drop_reason or describe_loss(reason)
        self.stream.gone()
        super().connectionLost(reason)
        self._settle_features(None)
        self.on_lost(why)

    # -- inbound bytes and messages ---------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.stream.read(data, self.protocol_error):
            return
        try:
            super().dataReceived(data)
        except Exception as e:
            self.protocol_error(_describe(e))
        self.stream.after_read()

    def callExpressionReceived(self, obj: Any) -> None:
        if self.stream.closing:
            return
        if not self.currentDialect:
            offered = obj if self.isClient else [obj]
            if not isinstance(offered, list) or b"pb" not in offered:
                raise ProtocolError(f"the peer does not speak banana's pb dialect (it sent {repr(obj)[:80]})")
        super().callExpressionReceived(obj)

    def expressionReceived(self, sexp: Any) -> None:
        if self.stream.closing:
            return
        self.on_traffic()
        if not isinstance(sexp, list) or not sexp:
            raise ProtocolError("a PB message must be a non-empty list")
        command = sexp[0]
        if isinstance(command, bytes):
            command = command.decode("utf-8")
        if command not in _PROTO:
            raise ProtocolError(f"unknown PB message {peer_text(command)}")
        getattr(self, "proto_" + command)(*sexp[1:])

    def localObjectForID(self, luid: Any) -> Any:
        try:
            return super().localObjectForID(luid)
        except (TypeError, UnicodeError):
            return None

    def proto_message(self, requestID: Any, objectID: Any, message: Any, answerRequired: Any, netArgs: Any,
                      netKw: Any) -> None:
        # The peer may call only what this side gave it (and has not released):
        # anything else is answered with a ProtocolError and reaches nothing.
        if self.localObjectForID(objectID) is None:
            if self.stream.ticket is not None and not self.logged_in:  # a master's link, before the login
                self.protocol_error(f"a message to object {peer_text(objectID, 40)} before logging in")
                return
            if answerRequired:
                self._sendFailureOrError(Failure(ProtocolError(
                    f"no object {peer_text(objectID, 40)} on this link: it was never given to the peer, or was "
                    "released (a finished command)")), requestID)
            return
        super().proto_message(requestID, objectID, message, answerRequired, netArgs, netKw)

    def proto_decref(self, objectID: Any) -> None:
        # A reference this side already released (see release()) may still be
        # decref'd by the peer later: that is normal, not an error.
        try:
            known = self.localObjects.get(objectID.encode("utf-8") if isinstance(objectID, str) else objectID)
        except TypeError:
            known = None
        if known is not None:
            super().proto_decref(objectID)

    def release(self, servant: pb.Referenceable) -> None:
        """Stop serving *servant* even if the peer still holds references to it.

        PB frees an object only when the peer's references are garbage
        collected, and refuses new ones past ``MAX_BROKER_REFS`` (1024); a
        worker that keeps finished commands' references must not exhaust that.
        Later calls on it are answered with a ProtocolError (see proto_message).
        """
        if self.luids is None:
            return  # disconnected
        luid = self.luids.pop(servant.processUniqueID(), None)
        if luid is not None:
            self.localObjects.pop(luid, None)

    def protocol_error(self, reason: str) -> None:
        """Log a protocol error from the peer and drop the connection."""
        self.stream.protocol_error(reason, "pb")

    def close(self, abort: bool = False) -> None:
        """Close the link (abort: without waiting for pending writes)."""
        self.stream.close(abort)

    # -- jelly -----------------------------------------------------------------

    def serialize(self, object: Any, perspective: Any = None, method: Any = None, args: Any = None,
                  kw: Any = None) -> Any:
        if isinstance(object, Deferred):
            return object.addCallback(self.serialize, perspective, method, args, kw)
        self.serializingPerspective = perspective
        self.jellyMethod = method
        self.jellyArgs = args
        self.jellyKw = kw
        try:
            return jelly.jelly(object, self._outgoing, None, self)
        finally:
            self.serializingPerspective = None
            self.jellyMethod = None
            self.jellyArgs = None
            self.jellyKw = None

    # -- serving calls ---------------------------------------------------------

    def dispatch(self, target: Any, prefix: str, message: Any, netArgs: Any, netKw: Any) -> Any:
        """Run ``target.<prefix><message>`` for a call from the peer.

        Returns the serialized result, or a Deferred of it (a failed one for
        any error); PB sends it as the answer (or its failure as the error).
        """
        try:
            if isinstance(message, bytes):
                message = message.decode("utf-8")
            args = self.unserialize(netArgs)
            kw = self.unserialize(netKw)
            if type(args) not in (list, tuple) or type(kw) is not dict:
                raise ProtocolError("call arguments must be a list and a dict")
            kw = {(k.decode("utf-8") if isinstance(k, bytes) else k): v for k, v in kw.items()}
            if not all(isinstance(k, str) for k in kw):
                raise ProtocolError("keyword names must be str")
            if message == EXT_CALL:
                message, args, kw = self._unwrap(args, kw)
        except Exception as e:
            self.protocol_error(f"unacceptable call {peer_text(message)}: {_describe(e)}")
            return fail(ProtocolError("unacceptable call"))
        method = getattr(target, prefix + message, None) if isinstance(message, str) else None
        if method is None:
            return fail(pb.NoSuchMethod(f"no such method: {prefix}{peer_text(message)}"))
        try:
            result = method(*args, **kw)
            if not isinstance(result, (Deferred, Failure)) and type(result) is not CoroutineType:
                return self._pack_result(result, message)  # answered at once: no Deferred
        except BaseException:
            return fail()
        return maybeDeferred(lambda: result).addCallback(self._pack_result, message)

    def _unwrap(self, args: Any, kw: dict[str, Any]) -> tuple[str, list[Any], dict[str, Any]]:
        if len(args) != 3 or kw:
            raise ProtocolError(f"{EXT_CALL} takes (method, transfer id, refs)")
        method, transfer_id, refs = args
        if not isinstance(method, str) or method == EXT_CALL or not isinstance(refs, dict):
            raise ProtocolError(f"malformed {EXT_CALL}")
        value = self._claim(transfer_id)
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], list)
                and isinstance(value[1], dict)):
            raise ProtocolError(f"transfer {transfer_id} does not hold call arguments")
        call_args, call_kw = value
        for index, ref in refs.items():
            if type(index) is not int or not 0 <= index < len(call_args) or call_args[index] is not None:
                raise ProtocolError(f"bad reference position {index!r} in {EXT_CALL}")
            if not isinstance(ref, (pb.RemoteReference, pb.CopiedFailure)):
                raise ProtocolError(f"{EXT_CALL} position {index} holds no reference")
            call_args[index] = ref
        return method, call_args, call_kw

    def _pack_result(self, result: Any, method: str) -> Any:
        if fits(result):
            return self.serialize(result)
        if not self.peer_features:
            raise self._no_parts(f"the result of {method} is")
        transfer_id = self.send_transfer(encode(result, where=f"result of {method}"), f"result of {method}")
        raise WorkerwireTransfer(str(transfer_id))

    def _sendFailureOrError(self, fail: Failure, requestID: Any) -> None:
        # Every failure goes back as type name and message; none is logged as
        # a traceback here (PB's default logs each one it sends).
        if not fail.check(WorkerwireTransfer):
            _log.debug("answering call {request} from {peer} with {error}", request=requestID, peer=self.peer,
                       error=fail.getErrorMessage())
        self.sendCall(b"error", requestID, self.serialize(wire_failure(fail, self.options.send_tracebacks)))

    # -- calling the peer --------------------------------------------------------

    def call(self, ref: Any, method: str, *args: Any, **kw: Any) -> Deferred[Any]:
        """``ref.callRemote(method, ...)``, chunking what does not fit.

        Fails with PB's native errors; callers translate them with
        :func:`.errors.core_error`.
        """
        try:
            if fits(args) and fits(kw):
                d = ref.callRemote(method, *args, **kw)
            else:
                d = self._call_chunked(ref, method, args, kw)
        except Exception as e:
            return fail(e)
        return d.addErrback(self._claim_result)

    def _call_chunked(self, ref: Any, method: str, args: tuple[Any, ...], kw: dict[str, Any]) -> Deferred[Any]:
        if not self.peer_features:
            raise self._no_parts(f"the arguments of {method} are")
        refs: dict[int, Any] = {}
        data: list[Any] = []
        for index, arg in enumerate(args):
            if isinstance(arg, (pb.Referenceable, pb.RemoteReference, WireFailure)):
                refs[index] = arg
                data.append(None)
            else:
                data.append(arg)
        transfer_id = self.send_transfer(encode([data, kw], where=f"arguments of {method}"), method)
        return ref.callRemote(EXT_CALL, method, transfer_id, refs)

    def _no_parts(self, what: str) -> UnsupportedValue:
        if self.peer_version is None:
            why = ("the peer has no workerwire chunking (a stock PB peer, such as buildbot-worker or a Buildbot "
                   "master, accepts strings up to 640 KiB)")
        else:
            why = (f"the peer speaks version {peer_text(self.peer_version)} of workerwire's pb extension, this side "
                   f"{FEATURES['protocol']} (upgrade the older end)")
        return UnsupportedValue(f"{what} too large for one PB frame and {why}")

    def send_transfer(self, payload: bytes, what: str) -> int:
        """Send *payload* as a transfer in parts; returns the transfer id.

        :raises ProtocolError: larger than the message size limit.
        """
        limit = self.options.max_message_size
        if len(payload) > limit:
            raise ProtocolError(f"{what} is {len(payload)} bytes, over the message limit of {limit} bytes")
        if self.disconnected:
            raise pb.DeadReferenceError("Calling Stale Broker")
        transfer_id = self._transfer_ids()
        ext = self.remoteForName(EXT_NAME)
        for offset, part in numbered_parts(payload, PART_SIZE):
            ext.callRemote("part", transfer_id, offset, len(payload), part, pbanswer=False)
        return transfer_id

    def _claim(self, transfer_id: Any) -> Any:
        """The decoded value of a finished transfer from the peer.

        :raises ProtocolError: no such transfer, or not a contract value.
        """
        return decode(self.transfers.take(transfer_id), self.options.max_message_size)

    def _claim_result(self, failure: Failure) -> Any:
        if isinstance(failure, pb.CopiedFailure) and remote_type_name(failure) == "WorkerwireTransfer":
            try:
                return self._claim(int(str(failure.value)))
            except (ValueError, ProtocolError) as e:
                self.protocol_error(f"bad transferred result: {e}")
                return Failure(ProtocolError(f"bad transferred result: {e}"))
        return failure


def _describe(e: BaseException) -> str:
    text = str(e)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
