"""Flow control of command output: a bounded window of unacknowledged update bytes.

Protocol-neutral: the worker side of a link keeps one :class:`SendWindow` and
sends every command's updates and completions through it (every network
backend does; the window is ``LinkOptions.output_window``); the master side
keeps one :class:`ReceiveWindow`, which holds each update's acknowledgement
until the command's consumer took it and calls a worker that overruns the
window hostile.

Each update costs its size (bytes of its encoding, or an estimate of it, see
:func:`approx_size`) from the moment it is sent until the master's answer to
it arrives.  An update is sent only while the bytes in flight plus its own
size fit the window, or when nothing is in flight (so one update larger than
the window still goes, alone).  Several updates are in flight at once
(pipelined).

Updates queued with :meth:`SendWindow.send_mergeable` may share one message:
the window sends them a reactor turn later, and updates of the same command
(the same *key*) that are queued back to back then leave as one message of at
most ``batch_limit`` bytes.  A producer that awaits each ``update()`` in a loop
therefore fills messages of many updates while one turn lasts, instead of
paying the per-message cost for every update.  Such an update fires its
Deferred as soon as it is queued and the window (bytes in flight plus bytes
queued) still has room, so a producer that waits for it never has more than
the window committed plus the one batch it is about to hand over; a slow
master (one that answers late) therefore slows the producer instead of
growing memory.

``complete`` goes through the same queue (it must follow the command's
updates) but costs nothing and fires when the master answered it.

A master may refuse an update whose Deferred already fired (for example one
larger than it accepts).  That refusal is not lost: it is logged, and the
next update of the same *key* fails with it at once, as does the completion
sent with that *key* (:meth:`SendWindow.send_ordered`) -- after it was sent,
so the master still sees the command end.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Hashable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import ConnectionLost, ProtocolError
from .master import Update
from .values import array_header, encode_pairs

__all__ = ["SendWindow", "ReceiveWindow", "DEFAULT_WINDOW", "DEFAULT_BATCH", "approx_size", "UpdateBatch",
           "encode_updates", "merge_updates"]

_log = Logger()

#: Default window, in bytes (``LinkOptions.output_window``).
DEFAULT_WINDOW = 4 * 1024 * 1024
#: Default most bytes of updates merged into one message: four 64 KiB updates
#: and their framing.  Larger messages cost the receiving process more than they
#: save: its allocator then returns their memory to the OS after each one and
#: page-faults it back for the next (measured on the pb and amp masters).
DEFAULT_BATCH = 288 * 1024


class _Item:
    __slots__ = ("size", "send", "fires_on_answer", "label", "key", "owner", "payload", "done", "waiting")

    def __init__(self, size: int, send: Callable[..., Deferred[Any]], fires_on_answer: bool, label: str,
                 key: Hashable = None, payload: Any = None):
        self.size = size
        self.send = send
        self.fires_on_answer = fires_on_answer
        self.label = label
        self.key = key  # not None: mergeable; ``send(payloads)`` sends a batch
        self.owner: Hashable = key  # whose later sends hear of a late refusal
        self.payload = payload
        self.done: Deferred[None] = Deferred()
        self.waiting = False  # in the room waiters' list


class _Message:
    __slots__ = ("items", "size", "count")

    def __init__(self, items: list[_Item], size: int):
        self.items = items
        self.size = size
        self.count = sum(1 for item in items if item.size)


class SendWindow:
    """FIFO of ordered sends with a byte window over the unanswered ones.

    :param limit: the window in bytes (may be lowered later: :attr:`limit`).
    :param clock: a reactor; needed by :meth:`send_mergeable` (without it,
        mergeable updates are sent at once and merge only while they wait for
        room).
    :param batch_limit: most bytes of mergeable updates in one message.
    :param translate: turns a native failure of a send into a core one.
    :param name: names the link's side in log lines.
    """

    def __init__(self, limit: int = DEFAULT_WINDOW, clock: Any = None, batch_limit: int = DEFAULT_BATCH,
                 translate: Callable[[Failure], Failure] | None = None, name: str = "worker"):
        if limit < 1:
            raise ValueError("the window must be at least 1 byte")
        self.limit = limit
        self.batch_limit = batch_limit
        self.clock = clock
        self.name = name
        self._translate = translate or (lambda failure: failure)
        #: Bytes sent and not yet answered.
        self.in_flight = 0
        #: Updates sent and not yet answered.
        self.in_flight_count = 0
        #: Bytes of updates queued and not yet sent.
        self.queued = 0
        #: Highest ``in_flight``, ``in_flight_count`` and ``buffered`` seen, how
        #: many updates did not find room at once, and how many messages
        #: carried updates (for tests and benchmarks).
        self.peak_in_flight = 0
        self.peak_in_flight_count = 0
        self.peak_buffered = 0
        self.stalls = 0
        self.messages = 0
        self._queue: deque[_Item] = deque()
        self._room_waiters: deque[_Item] = deque()
        self._sent: dict[int, _Message] = {}
        self._lost: ConnectionLost | None = None
        self._pumping = False
        self._again = False
        self._releasing = False
        self._pump_call: Any = None
        #: Refusals of updates whose Deferred had fired, by key, until told.
        self._refusals: dict[Hashable, Failure] = {}

    @property
    def buffered(self) -> int:
        """Bytes held for this link: in flight plus queued."""
        return self.in_flight + self.queued

    def send_update(self, size: int, send: Callable[[], Deferred[Any]], label: str = "update",
                    key: Hashable = None) -> Deferred[None]:
        """Queue an update of *size* bytes that ``send()`` sends as one message;
        fires once it was sent and the window has room again.  With a *key*,
        fails at once with an unreported refusal of an earlier update of that
        key (see the module's docstring)."""
        refused = self._refusal(key)
        if refused is not None:
            return refused
        item = _Item(size, send, False, label)
        item.owner = key
        return self._enqueue(item)

    def send_mergeable(self, key: Hashable, size: int, payload: Any,
                       send_many: Callable[[list[Any]], Deferred[Any]], label: str = "update",
                       owner: Hashable = None) -> Deferred[None]:
        """Queue an update of *size* bytes that may share a message with the
        updates of the same *key* queued right after it.

        ``send_many(payloads)`` sends the *payload* of one or more such updates,
        in order, as one message and returns the Deferred of its answer; the
        same *key* must always come with the same *send_many*.  Fires once the
        update is queued and the window has room.  A refusal of it that
        arrives later fails the next send of its *owner* (default: *key*).
        """
        if key is None:
            raise ValueError("a mergeable update needs a key")
        owner = key if owner is None else owner
        refused = self._refusal(owner)
        if refused is not None:
            return refused
        item = _Item(size, send_many, False, label, key, payload)
        item.owner = owner
        return self._enqueue(item)

    def send_ordered(self, send: Callable[[], Deferred[Any]], label: str = "message",
                     key: Hashable = None) -> Deferred[None]:
        """Queue a message that must follow the queued updates; fires with its
        answer -- or, with a *key*, fails with an unreported refusal of an
        update of that key once the message was answered."""
        item = _Item(0, send, True, label)
        item.owner = key
        return self._enqueue(item)

    def _refusal(self, key: Hashable) -> Deferred[None] | None:
        failure = self._refusals.pop(key, None) if key is not None else None
        if failure is None:
            return None
        d: Deferred[None] = Deferred()
        d.errback(failure)
        return d

    def lost(self, reason: str) -> None:
        """The link is gone: everything waiting fails with ConnectionLost."""
        if self._lost is not None:
            return
        self._lost = ConnectionLost(f"link to the master lost: {reason}")
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        waiting = list(self._queue) + list(self._room_waiters)
        for message in self._sent.values():
            waiting.extend(message.items)
        self._queue.clear()
        self.queued = 0
        self._room_waiters.clear()
        self._sent = {}
        for item in waiting:
            if not item.done.called:
                item.done.errback(Failure(self._lost))

    # -- internals ------------------------------------------------------------

    def _enqueue(self, item: _Item) -> Deferred[None]:
        if self._lost is not None:
            item.done.errback(Failure(self._lost))
            return item.done
        self._queue.append(item)
        self.queued += item.size
        buffered = self.in_flight + self.queued
        if buffered > self.peak_buffered:
            self.peak_buffered = buffered
        if item.key is not None and self.clock is not None:
            # Committed now; sent a turn later, with whatever follows it.
            if buffered < self.limit and not self._room_waiters:
                # Room, and no earlier update waits for it: fired before it is
                # returned, so a producer awaiting it goes on without a
                # reactor callback (also while the loop in
                # _release_room_waiters resumes it).
                item.done.callback(None)
            else:
                item.waiting = True
                self._room_waiters.append(item)
                self._release_room_waiters()
            if self._pump_call is None:
                self._pump_call = self.clock.callLater(0, self._scheduled_pump)
        else:
            if item.key is not None:
                item.waiting = True
                self._room_waiters.append(item)
            self._pump()
        if item.size and not item.done.called:
            self.stalls += 1
        return item.done

    def _scheduled_pump(self) -> None:
        self._pump_call = None
        self._pump()

    def _fits(self, size: int) -> bool:
        return size == 0 or self.in_flight == 0 or self.in_flight + size <= self.limit

    def _pump(self) -> None:
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                # Room first: a producer released now queues more updates,
                # which then leave together with those already queued.
                self._release_room_waiters()
                queue = self._queue
                while queue and self._lost is None and self._fits(queue[0].size):
                    item = queue.popleft()
                    items, size = [item], item.size
                    if item.key is not None:
                        key, limit = item.key, min(self.batch_limit, self.limit - self.in_flight)
                        while queue:
                            nxt = queue[0]
                            if nxt.key is not key or size + nxt.size > limit:
                                break
                            items.append(queue.popleft())
                            size += nxt.size
                    self.queued -= size
                    self._send(_Message(items, size))
                self._release_room_waiters()
        finally:
            self._pumping = False

    def _send(self, message: _Message) -> None:
        self.in_flight += message.size
        self.in_flight_count += message.count
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        if self.in_flight_count > self.peak_in_flight_count:
            self.peak_in_flight_count = self.in_flight_count
        first = message.items[0]
        if first.size:
            self.messages += 1
        if first.key is None and not first.fires_on_answer:
            first.waiting = True
            self._room_waiters.append(first)
        self._sent[id(message)] = message
        try:
            if first.key is not None:
                payloads = [item.payload for item in message.items]
                for item in message.items:
                    item.payload = None  # sent: the window holds only the count of its bytes
                d = first.send(payloads)
                del payloads
            else:
                d = first.send()
        except Exception:
            d = Deferred()
            d.errback()
        d.addBoth(self._answered, message)

    def _answered(self, result: object, message: _Message) -> None:
        if self._lost is not None:
            return None
        del self._sent[id(message)]
        self.in_flight -= message.size
        self.in_flight_count -= message.count
        if isinstance(result, Failure):
            failure = self._translate(result)
            reported = False
            for item in message.items:
                if not item.done.called:
                    item.done.errback(failure)
                    reported = True
            if not reported and not failure.check(ConnectionLost):
                _log.warn("{name}: the master refused {label}: {why}", name=self.name,
                          label=message.items[0].label, why=failure.value)
                owner = message.items[0].owner
                if owner is not None:
                    self._refusals.setdefault(owner, failure)
        else:
            for item in message.items:
                if item.fires_on_answer and not item.done.called:
                    refused = self._refusals.pop(item.owner, None) if item.owner is not None else None
                    if refused is not None:
                        item.done.errback(refused)
                    else:
                        item.done.callback(None)
        self._pump()
        return None

    def _release_room_waiters(self) -> None:
        if self._releasing:
            return  # a producer resumed by the loop below queued more: the loop goes on
        self._releasing = True
        try:
            waiters = self._room_waiters
            while waiters and self.in_flight + self.queued < self.limit:
                item = waiters.popleft()
                item.waiting = False
                if not item.done.called:
                    item.done.callback(None)
        finally:
            self._releasing = False


class ReceiveWindow:
    """The master's end of the window: bytes of updates received and not yet acknowledged.

    An update counts its *size* (its bytes as the backend measures them: the
    message, or its values) from its arrival until its acknowledgement may be
    sent, which is when what the command's consumer returned from
    ``on_update`` fired (:meth:`hold`).  While updates are unacknowledged, one
    that would take the count past *limit* is an overrun (:meth:`admit`): a
    :class:`ProtocolError` the backend answers by closing the link.  When
    nothing is unacknowledged an update of any size is admitted, as the
    worker's :class:`SendWindow` sends one larger than the window alone.

    :param limit: the bytes allowed unacknowledged (a backend may allow slack
        over the window it announced, e.g. when the worker only estimates sizes).
    :param window: the window announced to the worker, named in the error
        (default: *limit*).
    """

    __slots__ = ("limit", "window", "unacked")  # one per connection: kept small

    def __init__(self, limit: int, window: int | None = None):
        if limit < 1:
            raise ValueError("the window must be at least 1 byte")
        self.limit = limit
        self.window = limit if window is None else window
        #: Bytes of updates received and not yet acknowledged.
        self.unacked = 0

    def admit(self, size: int) -> None:
        """An update of *size* bytes arrived.

        :raises ProtocolError: it overruns the window.
        """
        if self.unacked > 0 and self.unacked + size > self.limit:
            raise ProtocolError(f"the worker exceeded the flow-control window: {self.unacked + size} bytes of "
                                f"updates unacknowledged, window {self.window}")

    def hold(self, size: int, pending: object) -> "Deferred[Any] | None":
        """The admitted update of *size* bytes was delivered and its consumer
        returned *pending*: when that is a Deferred, the update counts until it
        fires (its result passes through) and the acknowledgement must wait for
        it; otherwise ``None``: acknowledge at once."""
        if not isinstance(pending, Deferred):
            return None
        self.unacked += size

        def acked(result: object) -> object:
            self.unacked -= size
            return result

        return pending.addBoth(acked)


#: Updates encoded for :meth:`SendWindow.send_mergeable` by a backend whose
#: messages carry them as one MessagePack array: ``(count, pieces, size)``,
#: the number of ``[key, value]`` pairs, their encodings as pieces (large
#: output is not copied), and their bytes.
UpdateBatch = tuple[int, list[bytes], int]


def encode_updates(updates: list[Update]) -> UpdateBatch:
    """*updates* (checked by ``BaseCommandChannel.update``) as an :data:`UpdateBatch`."""
    pieces, size = encode_pairs(updates)
    return len(updates), pieces, size


def merge_updates(batches: list[UpdateBatch]) -> tuple[list[bytes], int]:
    """One MessagePack array of every batch's pairs, as pieces (a header for
    their count, then their encodings, none joined), and its size in bytes."""
    header = array_header(sum(n for n, _, _ in batches))
    pieces = [header]
    for _, more, _ in batches:
        pieces.extend(more)
    return pieces, len(header) + sum(size for _, _, size in batches)


def approx_size(value: object) -> int:
    """About the bytes *value* takes encoded (MessagePack-like), cheaply:
    text and bytes by length, containers by their items, scalars as 9."""
    kind = type(value)
    some: Any = value
    if kind is str or kind is bytes:
        return len(some) + 5
    if kind is list or kind is tuple:
        return 5 + sum(approx_size(item) for item in some)
    if kind is dict:
        return 5 + sum(approx_size(k) + approx_size(v) for k, v in some.items())
    return 9
