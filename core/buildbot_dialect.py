"""What every backend speaking Buildbot's worker dialect does the same way.

Two in-tree backends speak a dialect a stock Buildbot peer understands:
``pb`` (Buildbot's PB worker protocol) and ``msgpack`` (Buildbot's
``msgpack_experimental_v7``).  Their wire forms differ, but on the master's
side both read the worker's answers by the same rules, kept here once:

* ``getWorkerInfo`` answers a map (:func:`worker_info`); whatever else the
  worker answers is a :class:`~workerwire.errors.ProtocolError`, not a
  value handed to the master;
* a builder exists on the worker only after a ``setBuilderList`` answer named
  it: the master keeps what that answer gave it per builder (pb: the
  builder's remote reference; msgpack, for a stock worker: the builder's
  directory) and refuses any other builder name at once, without a call,
  with :class:`~workerwire.errors.UnknownBuilder` naming the builders there
  are (:func:`builder_of`).
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from .errors import ProtocolError, UnknownBuilder

__all__ = ["worker_info", "builder_of"]

T = TypeVar("T")


def worker_info(answer: Any) -> dict[str, Any]:
    """The worker's answer to ``getWorkerInfo``, which must be a map.

    :raises ProtocolError: it is not a ``dict`` (the message names its type).
    """
    if not isinstance(answer, dict):
        raise ProtocolError(f"getWorkerInfo must answer a dict, not a {type(answer).__name__}")
    return answer


def builder_of(builders: Mapping[str, T], name: str, worker: str | None = None) -> T:
    """What the last ``setBuilderList`` answer gave for builder *name*.

    :param builders: builder name -> what the answer gave for it.
    :param worker: the worker's name, for the message (``None``: "this worker").
    :raises UnknownBuilder: *name* is not among *builders*; the message names
        the worker and the valid builders (or says to set them first).
    """
    try:
        return builders[name]
    except KeyError:
        where = "this worker" if worker is None else f"worker {worker!r}"
        valid = ", ".join(sorted(builders)) or "none (call remoteSetBuilderList)"
        raise UnknownBuilder(f"no builder {name!r} on {where}; valid: {valid}") from None
