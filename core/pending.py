"""Requests sent to the peer and not answered yet: the correlation table of a request/answer dialect.

Every backend whose messages are requests answered by a tag (amp's ``_ask``,
msgpack's ``seq_number``, the null and reference backends' call ids) keeps
the same table: a new tag per request, the request's Deferred fired when
the answer with that tag arrives, an answer to a tag that is not waiting is
a protocol error, and every request still waiting fails when the link is
lost (it never hangs).  :class:`PendingRequests` is that table; the backend
keeps its framing, its tag's form on the wire and what it fires the Deferred
with.  The other direction, the peer's requests, is :func:`serve_request`:
run the handler, answer with its result or with its failure.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .errors import ProtocolError, peer_text

__all__ = ["PendingRequests", "serve_request"]

Tag = TypeVar("Tag")


class PendingRequests(Generic[Tag]):
    """The requests a link sent and waits for, by tag.

    :param tag_of: the tag of the *n*-th request (its form on the wire, e.g.
        ``int`` or hex bytes); *n* counts from *first*.
    :param first: the number of the first request.
    """

    __slots__ = ("_waiting", "_count", "_tag_of")

    def __init__(self, tag_of: Callable[[int], Tag], first: int = 0) -> None:
        self._waiting: dict[Any, Deferred[Any]] = {}
        self._count = first - 1
        self._tag_of = tag_of

    def new_tag(self) -> Tag:
        """The tag of the next request (every call makes a new one)."""
        self._count += 1
        return self._tag_of(self._count)

    def wait(self, tag: Tag) -> Deferred[Any]:
        """The Deferred the answer to *tag* fires; call it once the request
        was handed to the transport (a request that could not be sent waits
        for nothing)."""
        d: Deferred[Any] = Deferred()
        self._waiting[tag] = d
        return d

    def answered(self, tag: object, what: str = "an answer to request") -> Deferred[Any]:
        """The Deferred of the request *tag* answers, no longer waiting; fire it.

        :raises ProtocolError: no request waits under *tag* (never sent, or
            answered already); the message starts with *what*.
        """
        try:
            return self._waiting.pop(tag)
        except (KeyError, TypeError):  # TypeError: a tag of an unhashable type from a decoder
            raise ProtocolError(f"{what} {peer_text(tag)}, which is not waiting "
                                "(never sent, or answered already)") from None

    def fail_all(self, failure: Failure | Exception) -> None:
        """The link is lost: every request still waiting fails with *failure*
        (later answers find nothing)."""
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(failure)

    def __len__(self) -> int:
        """Requests still waiting."""
        return len(self._waiting)

    def __contains__(self, tag: object) -> bool:
        return tag in self._waiting


def serve_request(run: Callable[[], Any], answer: Callable[[Any], object],
                  error: Callable[[BaseException], object]) -> None:
    """Run the handler of one request from the peer and send what came of it.

    *run()* is the handler: a value, a Deferred of one, or it raises.  Its
    result goes to *answer(result)* (at once for a value, when the Deferred
    fires); *error(exception)* gets what *run* raised, what its Deferred
    failed with, or what *answer* raised (a result that cannot be sent, e.g.
    one that does not encode).  Both are the backend's: they send nothing on
    a link that is gone.
    """
    try:
        result = run()
    except BaseException as e:
        error(e)
        return
    if isinstance(result, Deferred):
        result.addCallbacks(_answer, _failed, callbackArgs=(answer, error), errbackArgs=(error,))
    else:
        _answer(result, answer, error)


def _answer(result: Any, answer: Callable[[Any], object], error: Callable[[BaseException], object]) -> None:
    try:
        answer(result)
    except BaseException as e:
        error(e)


def _failed(failure: Failure, error: Callable[[BaseException], object]) -> None:
    error(failure.value if failure.value is not None else RuntimeError(failure.getErrorMessage()))
