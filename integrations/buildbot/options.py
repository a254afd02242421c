"""Splitting and checking the keywords of ``worker.WorkerwireWorker``.

A ``WorkerwireWorker`` takes every keyword Buildbot's ``Worker`` takes plus
the link options of :class:`workerwire.LinkOptions`.  This module decides
which is which and checks them when the master reads its config, so a mistake
is a config error with a clear message instead of a failure at the first
login.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from workerwire import LinkOptions, backend_names, load_backend
from workerwire.errors import AddressError, BackendLoadFailed, BackendNotFound

__all__ = ["WorkerSettings", "BUILDBOT_WORKER_KEYWORDS", "LINK_OPTION_KEYWORDS", "parse_settings", "SettingsError"]


def _buildbot_worker_keywords() -> tuple[str, ...]:
    from buildbot.worker.base import AbstractWorker

    params = inspect.signature(AbstractWorker.checkConfig).parameters
    return tuple(n for n in params if n not in ("self", "name", "password"))


#: Keywords handed to Buildbot's ``Worker`` (max_builds, properties, notify_on_missing, ...).
BUILDBOT_WORKER_KEYWORDS: tuple[str, ...] = _buildbot_worker_keywords()
#: Keywords that become the link's :class:`~workerwire.LinkOptions`.
LINK_OPTION_KEYWORDS: tuple[str, ...] = tuple(LinkOptions.names())


class SettingsError(ValueError):
    """A ``WorkerwireWorker`` keyword is wrong; the message says which and what is valid."""


@dataclass(frozen=True)
class WorkerSettings:
    """What one ``WorkerwireWorker`` asks of workerwire."""

    #: The workerwire backend name (an entry point of ``workerwire.backends``).
    backend: str
    #: The listening port string, normalised as Buildbot does (``9990`` -> ``tcp:9990``).
    port: str
    #: Link options of the port's listener.
    options: LinkOptions
    #: The keywords left for Buildbot's ``Worker``.
    buildbot_kwargs: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> tuple[str, str]:
        """Workers with the same key share one listener and one port."""
        return (self.backend, self.port)


def normalise_port(port: object) -> str:
    """``9990`` and ``"9990"`` mean ``"tcp:9990"``, as in Buildbot's ``c['protocols']``."""
    if isinstance(port, bool):
        raise SettingsError(f"port must be a port string such as 'tcp:9990', not {port!r}")
    if isinstance(port, int):
        return f"tcp:{port}"
    if isinstance(port, str) and port and ":" not in port and port.isdigit():
        return f"tcp:{port}"
    if not isinstance(port, str) or not port:
        raise SettingsError(f"port must be a port string such as 'tcp:9990', not {port!r}")
    return port


def parse_settings(name: str, backend: object, port: object, kwargs: dict[str, Any]) -> WorkerSettings:
    """Check a ``WorkerwireWorker``'s backend, port and keywords.

    :raises SettingsError: with a message naming the worker, the keyword and
        what would be valid (the installed backends for a wrong backend).
    """
    who = f"WorkerwireWorker {name!r}"
    if not isinstance(backend, str) or not backend:
        raise SettingsError(
            f"{who}: backend= is required, one of the installed workerwire backends: "
            f"{', '.join(backend_names()) or 'none'}"
        )
    try:
        loaded = load_backend(backend)
    except (BackendNotFound, BackendLoadFailed) as e:
        raise SettingsError(f"{who}: {e}") from None
    if port is None:
        raise SettingsError(f"{who}: port= is required (a listening port string such as {loaded.loopback_port()!r})")
    try:
        port_str = normalise_port(port)
    except SettingsError as e:
        raise SettingsError(f"{who}: {e}") from None
    try:
        loaded.check_port(port_str)
    except AddressError as e:
        raise SettingsError(f"{who}: port {port_str!r} is not valid for backend {backend!r}: {e}") from None

    unknown = sorted(k for k in kwargs if k not in BUILDBOT_WORKER_KEYWORDS and k not in LINK_OPTION_KEYWORDS)
    if unknown:
        raise SettingsError(
            f"{who}: unknown keyword{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; valid are "
            f"Buildbot's Worker keywords ({', '.join(BUILDBOT_WORKER_KEYWORDS)}) and workerwire link options "
            f"({', '.join(LINK_OPTION_KEYWORDS)})"
        )
    link = {k: v for k, v in kwargs.items() if k in LINK_OPTION_KEYWORDS}
    try:
        options = LinkOptions(**link)
    except (TypeError, ValueError) as e:
        raise SettingsError(f"{who}: link options {link!r}: {e}") from None
    # keepalive_interval is both Buildbot's Worker keyword and a link option: the link uses it.
    buildbot_kwargs = tuple(sorted((k, v) for k, v in kwargs.items() if k in BUILDBOT_WORKER_KEYWORDS))
    return WorkerSettings(backend, port_str, options, buildbot_kwargs)
