"""The master process's open-files limit: raised to what the system allows,
and a warning when that is still less than the configured links may need."""

from __future__ import annotations

import resource
from typing import Iterable

from twisted.logger import Logger

from workerwire import LinkOptions

__all__ = ["raise_open_files_limit", "files_needed", "workers_allowed", "open_files_capacity"]

_log = Logger()

#: Descriptors the master needs besides its connections (listening ports,
#: log files, a job's pipes, the reactor's own).
_SPARE = 64


def files_needed(workers: int, listener_options: Iterable[LinkOptions]) -> int:
    """Descriptors the master may hold at once: one per worker connection,
    plus, per listener, the connections not logged in yet and those waiting
    for a login slot (``max_unauthenticated`` + ``max_waiting_logins``)."""
    return workers + _SPARE + sum(o.max_unauthenticated + o.max_waiting_logins for o in listener_options)


def raise_open_files_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; warn if it stays below
    *needed*.  Returns the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            _log.warn("could not raise the open-files limit from {soft} to {target}: {e}", soft=soft,
                      target=target, e=e)
    if soft != resource.RLIM_INFINITY and soft < needed:
        _log.warn(
            "the open-files limit is {soft}, below the {needed} the configured workers and login caps may hold "
            "(workers + max_unauthenticated + max_waiting_logins per protocol); raise `ulimit -n` (hard limit "
            "{hard}) or lower those options, or connections will be refused when it runs out",
            soft=soft, needed=needed, hard=hard)
    return soft


def workers_allowed(open_files: int, listener_options: Iterable[LinkOptions]) -> int | None:
    """Worker connections that fit in *open_files* descriptors beside what
    :func:`files_needed` counts for the listeners (None: no limit)."""
    if open_files == resource.RLIM_INFINITY:
        return None
    return max(0, open_files - _SPARE - sum(o.max_unauthenticated + o.max_waiting_logins for o in listener_options))


def open_files_capacity(workers: int, listener_options: Iterable[LinkOptions]) -> dict[str, int | None]:
    """Raise the limit (:func:`raise_open_files_limit`) and say in one log
    line how many workers it allows; returns ``open_files_limit`` and
    ``workers_allowed`` (None: unlimited) for ``workerwire status``."""
    options = list(listener_options)
    soft = raise_open_files_limit(files_needed(workers, options))
    allowed = workers_allowed(soft, options)
    limit = None if soft == resource.RLIM_INFINITY else soft
    _log.info("open-files limit {limit}: room for {allowed} worker connections ({workers} configured)",
              limit="unlimited" if limit is None else limit, allowed="any number of" if allowed is None else allowed,
              workers=workers)
    return {"open_files_limit": limit, "workers_allowed": allowed}
