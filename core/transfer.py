"""File transfer through the contract: writer and reader handles.

A master puts a handle in a command's ``args`` where Buildbot does: a
:class:`FileWriter` under ``args["writer"]`` (``uploadFile``,
``uploadDirectory``) or a :class:`FileReader` under ``args["reader"]``
(``downloadFile``).  Handles are allowed there only: as a top-level value of
the ``args`` of :meth:`~workerwire.master.Connection.remoteStartCommand`;
anywhere else :mod:`workerwire.values` refuses them like any other object.

On the worker the handle arrives as a :class:`TransferProxy`, whose
``callRemote(method, *args)`` returns a Deferred (the shape of a PB
``RemoteReference``, so worker code reads like buildbot-worker's).  The methods
are those of Buildbot's ``FileWriterImpl`` / ``FileReaderImpl``: writer
``write(data)``, ``utime((atime, mtime))``, ``unpack()``, ``close()``; reader
``read(max_length)`` (``b""`` at the end), ``close()``.

What core promises, whichever backend carries the calls:

* each connection keeps a :class:`HandleTable`: a handle has an id unique in
  the process, belongs to one command of one connection, and is released
  when that command completes, when its start is refused, or when the link
  drops (a handle released before it was closed is ``cancel()``-ed, so a
  writer never leaves a complete-looking destination behind);
* a call naming an unknown, released or closed handle (after ``close`` or
  ``unpack``, a writer takes ``utime`` only, and ``close`` after ``unpack``:
  buildbot-worker sends those), or a handle of another command, fails with :class:`~workerwire.errors.ProtocolError` and reaches
  no handle;
* calls on one handle run one after another in the order they arrived, each
  after the previous one's Deferred fired;
* an exception of the master-side handle fails the worker's call with
  :class:`~workerwire.errors.RemoteCallFailed` (its type name and message);
  a lost link fails it with :class:`~workerwire.errors.ConnectionLost`;
* window: the worker keeps at most ``LinkOptions.output_window`` bytes of
  transfer calls unanswered (write data, and the lengths asked by reads); the
  master refuses a worker that exceeds it (``ProtocolError``) and answers no
  read with more than the window, so neither end holds more than the window
  of a transfer in memory.
"""

from __future__ import annotations

import abc
import itertools
from collections import deque
from typing import Any, Callable, Union

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import observe
from .errors import ConnectionLost, ProtocolError, UnsupportedValue, WorkerwireError

__all__ = [
    "FileWriter",
    "FileReader",
    "LocalFileWriter",
    "DirectoryWriter",
    "LocalFileReader",
    "BuildbotWriterAdapter",
    "BuildbotReaderAdapter",
    "as_handle",
    "handle_kind",
    "split_handles",
    "HANDLE_KEYS",
    "WRITER_METHODS",
    "READER_METHODS",
    "METHODS",
    "HandleTable",
    "TransferProxy",
    "TransferLink",
    "check_call",
]

_log = Logger()

#: Calls a worker may make on a writer handle, and on a reader handle.
WRITER_METHODS = ("write", "utime", "unpack", "close")
READER_METHODS = ("read", "close")
METHODS = {"writer": WRITER_METHODS, "reader": READER_METHODS}
#: The ``args`` keys where a handle may appear, and the kind each holds.
HANDLE_KEYS = {"writer": "writer", "reader": "reader"}


class FileWriter(abc.ABC):
    """Master side of an upload (Buildbot's ``FileWriterImpl`` role).

    Each method may return a value or a Deferred; an exception (or a failed
    Deferred) fails the worker's call with ``RemoteCallFailed``.
    """

    @abc.abstractmethod
    def write(self, data: bytes) -> Any:
        """Append *data*."""

    def utime(self, times: tuple[float, float]) -> Any:
        """Set the destination's ``(atime, mtime)``.  May come before or
        after :meth:`close` (buildbot-worker sends it after)."""
        raise NotImplementedError(f"{type(self).__name__} does not set times")

    def unpack(self) -> Any:
        """Unpack what was written (a tar archive, for ``uploadDirectory``);
        this ends the upload like :meth:`close` (buildbot-worker sends no
        ``close`` after it; a ``close`` that does follow must be harmless)."""
        raise NotImplementedError(f"{type(self).__name__} does not unpack")

    @abc.abstractmethod
    def close(self) -> Any:
        """The upload is complete: make the destination appear."""

    def cancel(self) -> Any:
        """The upload was abandoned (link lost, command over before
        ``close``): remove anything half-written.  Default: nothing."""
        return None


class FileReader(abc.ABC):
    """Master side of a download (Buildbot's ``FileReaderImpl`` role)."""

    @abc.abstractmethod
    def read(self, max_length: int) -> Any:
        """Up to *max_length* bytes; ``b""`` at the end."""

    @abc.abstractmethod
    def close(self) -> Any:
        """The download is over."""

    def cancel(self) -> Any:
        """The download was abandoned; default: :meth:`close`."""
        return self.close()


class BuildbotWriterAdapter(FileWriter):
    """A :class:`FileWriter` over an object with Buildbot's ``remote_write``,
    ``remote_utime``, ``remote_unpack``, ``remote_close`` (and optionally
    ``cancel``) methods, e.g. Buildbot's own ``FileWriterImpl``."""

    def __init__(self, impl: Any):
        self.impl = impl

    def write(self, data: bytes) -> Any:
        return self.impl.remote_write(data)

    def utime(self, times: tuple[float, float]) -> Any:
        return self.impl.remote_utime(times)

    def unpack(self) -> Any:
        return self.impl.remote_unpack()

    def close(self) -> Any:
        return self.impl.remote_close()

    def cancel(self) -> Any:
        cancel = getattr(self.impl, "cancel", None)
        return cancel() if cancel is not None else None


class BuildbotReaderAdapter(FileReader):
    """A :class:`FileReader` over an object with ``remote_read`` / ``remote_close``."""

    def __init__(self, impl: Any):
        self.impl = impl

    def read(self, max_length: int) -> Any:
        return self.impl.remote_read(max_length)

    def close(self) -> Any:
        return self.impl.remote_close()


Handle = Union[FileWriter, FileReader]


def handle_kind(obj: object) -> str | None:
    """``"writer"``, ``"reader"`` or ``None`` (not a handle, nor adaptable)."""
    if isinstance(obj, FileWriter):
        return "writer"
    if isinstance(obj, FileReader):
        return "reader"
    if callable(getattr(obj, "remote_write", None)) and callable(getattr(obj, "remote_close", None)):
        return "writer"
    if callable(getattr(obj, "remote_read", None)) and callable(getattr(obj, "remote_close", None)):
        return "reader"
    return None


def as_handle(obj: object) -> Handle:
    """*obj* as a core handle (Buildbot-style objects are adapted)."""
    if isinstance(obj, (FileWriter, FileReader)):
        return obj
    kind = handle_kind(obj)
    if kind == "writer":
        return BuildbotWriterAdapter(obj)
    if kind == "reader":
        return BuildbotReaderAdapter(obj)
    raise UnsupportedValue(f"{type(obj).__name__} is neither a FileWriter nor a FileReader")


def split_handles(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Handle]]:
    """``(args without handles, {key: handle})``.

    :raises UnsupportedValue: a handle under a key other than ``writer`` /
        ``reader``, or of the wrong kind for its key.
    """
    plain: dict[str, Any] = {}
    handles: dict[str, Handle] = {}
    for key, value in args.items():
        kind = handle_kind(value)
        if kind is None:
            plain[key] = value
            continue
        if HANDLE_KEYS.get(key) != kind:
            raise UnsupportedValue(
                f"args[{key!r}]: a {kind} handle may appear only as args['{kind}'] "
                "(where Buildbot puts it for uploadFile/uploadDirectory/downloadFile)")
        handles[key] = as_handle(value)
    return plain, handles


#: Ready-made handles, defined in :mod:`workerwire.transfer_files` and
#: importable from here too (loaded on first use).
_FILE_HANDLES = ("LocalFileWriter", "DirectoryWriter", "LocalFileReader")


def __getattr__(name: str) -> Any:
    if name in _FILE_HANDLES:
        from . import transfer_files

        return getattr(transfer_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- master side: the handle table ----------------------------------------------


_ids = itertools.count(1)


class _Entry:
    __slots__ = ("handle_id", "command_id", "kind", "handle", "closed", "unpacked", "finished", "tail", "busy")

    def __init__(self, handle_id: int, command_id: str, kind: str, handle: Handle):
        self.handle_id = handle_id
        self.command_id = command_id
        self.kind = kind
        self.handle = handle
        self.closed = False  # close was called: later calls are refused
        self.unpacked = False  # unpack was called (a close may still follow)
        self.finished = False  # close or unpack succeeded: nothing to cancel
        self.tail: Deferred[Any] | None = None  # the last call, which the next waits for
        self.busy = 0  # calls queued or running


def check_call(kind: str, method: str, args: Any) -> tuple[Any, ...]:
    """Check a transfer call's method and arguments; returns them as handed
    to the handle (``utime``'s pair as a tuple of floats).

    :raises ProtocolError: an unknown method or malformed arguments.
    """
    if method not in METHODS[kind]:
        raise ProtocolError(f"{kind} handles have no method {method!r}; valid: {', '.join(METHODS[kind])}")
    args = tuple(args)
    if method == "write":
        if len(args) != 1 or not isinstance(args[0], bytes):
            raise ProtocolError("write takes one bytes argument")
    elif method == "utime":
        if (len(args) != 1 or not isinstance(args[0], (list, tuple)) or len(args[0]) != 2
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in args[0])):
            raise ProtocolError("utime takes one (atime, mtime) pair of numbers")
        args = ((float(args[0][0]), float(args[0][1])),)
    elif method == "read":
        if len(args) != 1 or type(args[0]) is not int or args[0] < 0:
            raise ProtocolError("read takes one non-negative int (the most bytes wanted)")
    elif args:
        raise ProtocolError(f"{method} takes no arguments")
    return args


class HandleTable:
    """The transfer handles of one connection (master side).

    :param window: most bytes of write data queued or running at once (and
        the largest read answered): ``LinkOptions.output_window``.
    :param describe: names the connection in log lines and errors.
    """

    def __init__(self, window: int, describe: str = "worker"):
        self.window = window
        self.describe = describe
        self._entries: dict[int, _Entry] = {}
        self._by_command: dict[str, list[int]] = {}
        self._in_flight = 0
        #: Most write bytes ever queued or running at once (tests, benchmarks).
        self.peak_in_flight = 0
        #: Called with the released handle ids (a backend frees what it sent for them).
        self.on_release: Callable[[list[int]], None] = lambda ids: None
        #: The connection these handles belong to (named in
        #: :func:`workerwire.observe.transfer_bytes` reports).
        self.owner: object = None
        #: Bytes written to writer handles (uploads) and answered by reader
        #: handles (downloads) through this table.
        self.uploaded = 0
        self.downloaded = 0

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, command_id: str, handles: dict[str, Handle]) -> dict[str, tuple[int, str]]:
        """Give each handle of a command an id; ``{key: (id, kind)}``."""
        out: dict[str, tuple[int, str]] = {}
        for key, handle in handles.items():
            kind = "writer" if isinstance(handle, FileWriter) else "reader"
            entry = _Entry(next(_ids), command_id, kind, handle)
            self._entries[entry.handle_id] = entry
            self._by_command.setdefault(command_id, []).append(entry.handle_id)
            out[key] = (entry.handle_id, kind)
        return out

    def kind_of(self, handle_id: int) -> str | None:
        entry = self._entries.get(handle_id)
        return entry.kind if entry is not None else None

    def of_command(self, command_id: str, kind: str) -> int | None:
        """The id of *command_id*'s handle of *kind*, while it is registered,
        else ``None``: for a dialect whose transfer messages name the command,
        not the handle (Buildbot's msgpack dialect)."""
        for handle_id in self._by_command.get(command_id, ()):
            if self._entries[handle_id].kind == kind:
                return handle_id
        return None

    def call(self, command_id: str | None, handle_id: Any, method: str, args: Any) -> Deferred[Any]:
        """Run a worker's call on a handle, after the calls before it on the
        same handle.

        :param command_id: the command the worker calls from; ``None`` when
            the carrying already ties the call to its command (a pb reference
            given to one command only).
        :returns: a Deferred of the handle's result (``None`` except for
            ``read``'s bytes); failed with ProtocolError for a bad call,
            RemoteCallFailed-able exceptions of the handle as they are.
        """
        entry = self._entries.get(handle_id) if type(handle_id) is int else None
        if entry is None:
            return fail(ProtocolError(
                f"no transfer handle {handle_id!r} on this connection to {self.describe}: never given, or "
                "released (its command is over)"))
        if command_id is not None and entry.command_id != command_id:
            return fail(ProtocolError(
                f"transfer handle {handle_id} belongs to command {entry.command_id!r}, not {command_id!r}"))
        if entry.closed and not (method == "utime" or (method == "close" and entry.unpacked)):
            # buildbot-worker sends utime after close (keepstamp); a close may follow unpack.
            return fail(ProtocolError(f"transfer handle {handle_id} is closed"))
        try:
            call_args = check_call(entry.kind, str(method), args)
        except ProtocolError as e:
            return fail(e)
        size = len(call_args[0]) if method == "write" else 0
        if size and self._in_flight and self._in_flight + size > self.window:
            return fail(ProtocolError(
                f"the worker exceeded the transfer window: {self._in_flight + size} bytes of writes "
                f"unanswered, window {self.window}"))
        if method == "read":
            call_args = (min(call_args[0], self.window),)
        if method == "close" or method == "unpack":
            # Later calls are refused at once; this one still runs in turn.
            # unpack ends an upload as close does (buildbot-worker sends no close after it).
            entry.unpacked = entry.unpacked or method == "unpack"
            entry.closed = True
        self._in_flight += size
        if self._in_flight > self.peak_in_flight:
            self.peak_in_flight = self._in_flight
        entry.busy += 1
        previous = entry.tail
        out: Deferred[Any] = Deferred()
        entry.tail = out

        def run(_: object) -> Deferred[Any]:
            if self._entries.get(entry.handle_id) is not entry:
                return fail(ConnectionLost(f"transfer handle {entry.handle_id} was released"))
            return maybeDeferred(getattr(entry.handle, method), *call_args)

        def done(result: object) -> object:
            self._in_flight -= size
            entry.busy -= 1
            if entry.tail is out:
                entry.tail = None
            if isinstance(result, Failure):
                return result
            if method == "close" or method == "unpack":
                entry.finished = True
            if method == "read":
                if not isinstance(result, bytes) or len(result) > call_args[0]:
                    return Failure(ProtocolError(
                        f"the master's reader answered {type(result).__name__} of "
                        f"{len(result) if isinstance(result, bytes) else '?'} bytes to read({call_args[0]})"))
                if result:
                    self.downloaded += len(result)
                    observe.transfer_bytes(self.owner, observe.DOWNLOAD, len(result))
                return result
            if size:
                self.uploaded += size
                observe.transfer_bytes(self.owner, observe.UPLOAD, size)
            return None

        start: Deferred[Any] = succeed(None) if previous is None else _after(previous)
        start.addCallback(run).addBoth(done).chainDeferred(out)
        return out

    def release_command(self, command_id: str) -> None:
        """The command is over: forget its handles (cancelling unclosed ones)."""
        ids = self._by_command.pop(command_id, [])
        self._release(ids)

    def release_all(self) -> None:
        """The link is gone: forget every handle."""
        ids = list(self._entries)
        self._by_command.clear()
        self._release(ids)

    def _release(self, ids: list[int]) -> None:
        released = []
        for handle_id in ids:
            entry = self._entries.pop(handle_id, None)
            if entry is None:
                continue
            released.append(handle_id)
            entry.closed = True
            if not entry.finished:
                entry.finished = True
                d = maybeDeferred(entry.handle.cancel)

                def cancel_failed(f: Failure, e: Any = entry) -> None:
                    _log.failure("cancelling transfer handle {id} of command {cid} failed", f,
                                 id=e.handle_id, cid=e.command_id)

                d.addErrback(cancel_failed)
        if released:
            try:
                self.on_release(released)
            except Exception:
                _log.failure("releasing transfer handles raised")


def _after(previous: Deferred[Any]) -> Deferred[None]:
    """Fires (with None) once *previous* settled, whatever its result."""
    d: Deferred[None] = Deferred()

    def settled(result: object) -> object:
        d.callback(None)
        return result

    previous.addBoth(settled)
    return d


# -- worker side: the proxy -------------------------------------------------------


class TransferLink:
    """The worker's end of one link's transfer calls, shared by its proxies.

    :param send: ``send(command_id, handle_id, method, args) -> Deferred`` —
        the backend's carrying; fails only with core errors.
    :param window: most bytes of transfer calls unanswered at once
        (``LinkOptions.output_window``); a call beyond it waits its turn.
    """

    def __init__(self, send: Callable[[str, int, str, list[Any]], Deferred[Any]], window: int):
        self._send = send
        self.window = window
        self.in_flight = 0
        self.peak_in_flight = 0
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()
        self._room_waiters: list[Deferred[None]] = []
        self._lost: ConnectionLost | None = None

    @property
    def has_room(self) -> bool:
        """A call made now goes out at once (nothing waits, the window is not full)."""
        return not self._waiting and self.in_flight < self.window

    def when_room(self) -> Deferred[None]:
        """Fires once :attr:`has_room` (at once if it already has, or when
        the link is lost: the next call then fails with ConnectionLost).

        A worker streaming a transfer calls without waiting for each answer
        while the window has room, and waits on this when it has not: the
        link stays full and neither end holds more than the window."""
        if self.has_room or self._lost is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._room_waiters.append(d)
        return d

    def _wake_room_waiters(self) -> None:
        if self._room_waiters and (self.has_room or self._lost is not None):
            waiters, self._room_waiters = self._room_waiters, []
            for d in waiters:
                d.callback(None)

    def lost(self, reason: str) -> None:
        """The link is gone: every waiting and later call fails with ConnectionLost."""
        if self._lost is None:
            self._lost = ConnectionLost(f"link to the master lost: {reason}")
            waiting, self._waiting = self._waiting, deque()
            for _, go in waiting:
                go()
            self._wake_room_waiters()

    def call(self, command_id: str, handle_id: int, method: str, args: list[Any], size: int) -> Deferred[Any]:
        if self._lost is not None:
            return fail(self._lost)
        out: Deferred[Any] = Deferred()

        def go() -> None:
            if self._lost is not None:
                out.errback(Failure(self._lost))
                return
            self.in_flight += size
            if self.in_flight > self.peak_in_flight:
                self.peak_in_flight = self.in_flight
            try:
                d = self._send(command_id, handle_id, method, args)
            except BaseException:
                d = fail()

            def answered(result: object) -> object:
                self.in_flight -= size
                self._pump()
                if isinstance(result, Failure) and self._lost is not None and result.check(ConnectionLost):
                    return Failure(self._lost)
                return result

            d.addBoth(answered).chainDeferred(out)

        if not self._waiting and (self.in_flight == 0 or self.in_flight + size <= self.window):
            go()
        else:
            self._waiting.append((size, go))
        return out

    def _pump(self) -> None:
        while self._waiting and (self.in_flight == 0 or self.in_flight + self._waiting[0][0] <= self.window):
            _, go = self._waiting.popleft()
            go()
        self._wake_room_waiters()


class TransferProxy:
    """A master-side handle as the worker holds it.

    ``callRemote(method, *args)`` returns a Deferred of the answer (``None``,
    or ``bytes`` for ``read``), failing with a core error:
    :class:`~workerwire.errors.RemoteCallFailed` (the master's handle raised),
    :class:`~workerwire.errors.ConnectionLost` or
    :class:`~workerwire.errors.ProtocolError` (unknown, closed or another
    command's handle; an unknown method).
    """

    def __init__(self, link: TransferLink, command_id: str, handle_id: int, kind: str):
        self.link = link
        self.command_id = command_id
        self.handle_id = handle_id
        self.kind = kind

    def callRemote(self, method: str, *args: Any) -> Deferred[Any]:
        try:
            if method not in METHODS[self.kind]:
                raise ProtocolError(
                    f"{self.kind} handles have no method {method!r}; valid: {', '.join(METHODS[self.kind])}")
            wire_args: list[Any] = [list(a) if isinstance(a, tuple) else a for a in args]
            check_call(self.kind, method, wire_args)
        except WorkerwireError as e:
            return fail(e)
        if method == "write":
            size = len(wire_args[0])
        elif method == "read":
            wire_args[0] = min(wire_args[0], self.link.window)
            size = wire_args[0]
        else:
            size = 0
        return self.link.call(self.command_id, self.handle_id, method, wire_args, size)

    def whenRoom(self) -> Deferred[None]:
        """Fires when a call made now would go out at once: the link's
        transfer window has room (see :meth:`TransferLink.when_room`).

        Calls on one handle are answered in order whether or not the worker
        waits for each answer, so a streaming upload is::

            while data := source.read(block):
                await writer.whenRoom()
                pending.append(writer.callRemote("write", data))  # check failures as they come

        buildbot-worker's code, which awaits each answer, works unchanged."""
        return self.link.when_room()

    def __repr__(self) -> str:
        return f"<TransferProxy {self.kind} {self.handle_id} of command {self.command_id!r}>"


def attach_proxies(args: dict[str, Any], handles: Any, link: TransferLink, command_id: str) -> dict[str, Any]:
    """Worker side: *args* with a :class:`TransferProxy` under each key of
    *handles* (``{key: [id, kind]}`` as it came over the wire).

    :raises ProtocolError: a malformed handle description.
    """
    if not handles:
        return args
    if not isinstance(handles, dict):
        raise ProtocolError("startCommand handles must be {key: [id, kind]}")
    out = dict(args)
    for key, spec in handles.items():
        if (not isinstance(spec, (list, tuple)) or len(spec) != 2 or type(spec[0]) is not int
                or HANDLE_KEYS.get(key) != spec[1]):
            raise ProtocolError(f"startCommand handle {key!r}: expected [id, {HANDLE_KEYS.get(key, 'kind')!r}]")
        out[key] = TransferProxy(link, command_id, spec[0], spec[1])
    return out


__all__.append("attach_proxies")


class HandleRef:
    """What a backend's ``call_start_command`` finds in ``args`` where the
    master put a handle: the handle's id and kind, to carry its own way."""

    __slots__ = ("handle_id", "kind")

    def __init__(self, handle_id: int, kind: str):
        self.handle_id = handle_id
        self.kind = kind

    def wire(self) -> list[Any]:
        return [self.handle_id, self.kind]

    def __repr__(self) -> str:
        return f"<HandleRef {self.kind} {self.handle_id}>"


def split_refs(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Backend side of ``call_start_command``: ``(plain args, {key: [id,
    kind]})`` — the description :func:`attach_proxies` turns back into proxies."""
    plain = {}
    refs: dict[str, list[Any]] = {}
    for key, value in args.items():
        if type(value) is HandleRef:
            refs[key] = value.wire()
        else:
            plain[key] = value
    return plain, refs


__all__ += ["HandleRef", "split_refs"]


class CarriedHandles:
    """Worker side, for a backend that carries each handle as an object of
    its own (pb: a remote reference in ``args``) instead of the master's id.

    Gives each such carrier an id unique in the process and a
    :class:`TransferProxy` on *link*, and ties it to the command it was given
    to: a carrier is named only by that command on this link, and the
    command's carriers are forgotten together (when it completes or its
    start is refused).
    """

    _ids = itertools.count(1)

    def __init__(self, link: TransferLink):
        self.link = link
        self._carriers: dict[tuple[str, int], Any] = {}
        self._of_command: dict[str, list[int]] = {}

    def proxy(self, command_id: str, kind: str, carrier: Any) -> TransferProxy:
        """The proxy the bot gets for *carrier*, given to *command_id*."""
        handle_id = next(self._ids)
        self._carriers[(command_id, handle_id)] = carrier
        self._of_command.setdefault(command_id, []).append(handle_id)
        return TransferProxy(self.link, command_id, handle_id, kind)

    def carrier(self, command_id: str, handle_id: int) -> Any:
        """The carrier of a proxy's call.

        :raises ProtocolError: no such handle for that command on this link
            (any other pairing names nothing the master gave).
        """
        carrier = self._carriers.get((command_id, handle_id))
        if carrier is None:
            raise ProtocolError(f"no transfer handle {handle_id} for command {command_id!r} on this link")
        return carrier

    def forget(self, command_id: str) -> None:
        for handle_id in self._of_command.pop(command_id, []):
            self._carriers.pop((command_id, handle_id), None)


__all__.append("CarriedHandles")
