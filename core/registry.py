"""Finding backends: the ``workerwire.backends`` entry-point group, via stevedore."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from stevedore import DriverManager
from stevedore.exception import NoMatches

from .backend import API_VERSION, Backend
from .errors import BackendLoadFailed, BackendNotFound

__all__ = ["ENTRY_POINT_GROUP", "ALIASES", "BackendInfo", "load_backend", "list_backends", "backend_names",
           "canonical_name"]

ENTRY_POINT_GROUP = "workerwire.backends"

#: Other names a config may use for a backend: Buildbot's own protocol names.
#: An installed backend registered under the alias itself takes precedence.
ALIASES = {"msgpack_experimental_v7": "msgpack"}


@dataclass(frozen=True)
class BackendInfo:
    """What ``workerwire backends`` shows for one installed backend."""

    name: str
    distribution: str
    version: str
    entry_point: str
    description: str
    loads: bool
    error: str | None


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def backend_names() -> list[str]:
    """Names of the installed backends (without importing them)."""
    return sorted({ep.name for ep in _entry_points()})


def _installed_hint() -> str:
    names = backend_names()
    return ", ".join(names) if names else "none (is workerwire installed?)"


def _as_backend(name: str, obj: object) -> Backend:
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as e:
            raise BackendLoadFailed(f"backend {name!r}: creating {getattr(obj, '__name__', obj)}() failed: {e}") from e
    if not isinstance(obj, Backend):
        raise BackendLoadFailed(
            f"backend {name!r}: entry point gives a {type(obj).__name__}, not a workerwire.Backend"
        )
    if getattr(obj, "name", None) != name:
        raise BackendLoadFailed(
            f"backend {name!r}: the object calls itself {getattr(obj, 'name', None)!r}; "
            "its name must equal the entry-point name"
        )
    wanted = getattr(obj, "api_version", None)
    if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted not in (0, API_VERSION[0]):
        raise BackendLoadFailed(
            f"backend {name!r} needs workerwire backend API {wanted!r}; this workerwire provides API "
            f"{API_VERSION[0]}.{API_VERSION[1]} (and runs API 0 backends): install a version of "
            f"{name!r} written for API {API_VERSION[0]}, or a workerwire that provides API {wanted!r}"
        )
    return obj


def canonical_name(name: str) -> str:
    """*name*, or the backend it is an alias of (see :data:`ALIASES`) when no
    backend is registered under *name* itself."""
    target = ALIASES.get(name)
    if target is not None and not any(ep.name == name for ep in _entry_points()):
        return target
    return name


def load_backend(name: str) -> Backend:
    """Load the backend registered under *name* (or under the name it is an
    alias of, :data:`ALIASES`).

    :raises BackendNotFound: nothing is registered under *name*; the message
        lists the installed backends.
    :raises BackendLoadFailed: it is registered but does not import, or is not
        a :class:`~workerwire.backend.Backend` (abstract methods left
        unimplemented fail here, not in the middle of a build).
    """
    name = canonical_name(name)
    failures: list[str] = []

    def on_failure(manager: object, ep: metadata.EntryPoint, err: BaseException) -> None:
        failures.append(f"{type(err).__name__}: {err}")

    eps = [ep for ep in _entry_points() if ep.name == name]
    if not eps:
        raise BackendNotFound(f"no workerwire backend named {name!r}; installed: {_installed_hint()}")
    if len({ep.value for ep in eps}) > 1:
        raise BackendLoadFailed(
            f"backend {name!r} is registered more than once: {', '.join(sorted({ep.value for ep in eps}))}"
        )
    try:
        driver: DriverManager[Any] = DriverManager(ENTRY_POINT_GROUP, name, invoke_on_load=False, on_load_failure_callback=on_failure)
    except NoMatches:
        detail = failures[0] if failures else "it could not be loaded"
        raise BackendLoadFailed(
            f"backend {name!r} ({eps[0].value}) failed to load: {detail}; installed: {_installed_hint()}"
        ) from None
    except Exception as e:
        raise BackendLoadFailed(f"backend {name!r} ({eps[0].value}) failed to load: {e}") from e
    return _as_backend(name, driver.driver)


def list_backends() -> list[BackendInfo]:
    """Every installed backend, each with a load check; a broken one is
    reported with its error, never raised."""
    infos = []
    for ep in _entry_points():
        dist = ep.dist
        distribution = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        try:
            backend = load_backend(ep.name)
        except Exception as e:
            infos.append(BackendInfo(ep.name, distribution, version, ep.value, "", False, str(e)))
        else:
            infos.append(BackendInfo(ep.name, distribution, version, ep.value, backend.description, True, None))
    return infos
