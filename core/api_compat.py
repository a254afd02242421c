"""Backends written for backend API 1.0 keep working under 1.1, with warnings.

API 1.1 gave the hooks a backend writes and the events it calls public names
(``_remote_print`` became ``call_print``, ``_on_update`` became ``on_update``
...).  A backend class that still defines an old hook name gets it adopted
under the new name when the class is created; an old event name still works
when called.  Both warn once per class with :class:`DeprecationWarning`,
naming the new name.  API 1.0 names go away in API 2.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

__all__ = ["MASTER_HOOKS", "MASTER_EVENTS", "CHANNEL_HOOKS", "CONNECTOR_HOOKS", "CONNECTOR_EVENTS",
           "adopt_legacy_hooks", "legacy_event", "moved_module"]

#: API 1.0 name -> API 1.1 name, for hooks of :class:`~workerwire.base_connection.BaseConnection`.
MASTER_HOOKS = {
    "_remote_print": "call_print",
    "_remote_get_worker_info": "call_get_worker_info",
    "_remote_set_builder_list": "call_set_builder_list",
    "_remote_start_build": "call_start_build",
    "_remote_start_command": "call_start_command",
    "_remote_interrupt_command": "call_interrupt_command",
    "_remote_shutdown": "call_shutdown",
    "_remote_keepalive": "call_keepalive",
    "_lose_connection": "lose_connection",
    "_translate_failure": "translate_failure",
    "_transfer_handles_released": "transfer_handles_released",
}
#: ... for events of :class:`~workerwire.base_connection.BaseConnection`.
MASTER_EVENTS = {
    "_on_traffic": "on_traffic",
    "_on_update": "on_update",
    "_on_complete": "on_complete",
    "_on_transfer_call": "on_transfer_call",
    "_on_worker_keepalive": "on_worker_keepalive",
    "_on_shutdown_request": "on_shutdown_request",
    "_on_connection_lost": "on_connection_lost",
}
#: ... for hooks of :class:`~workerwire.base_worker.BaseCommandChannel`.
CHANNEL_HOOKS = {"_send_update": "send_update", "_send_complete": "send_complete"}
#: ... for the hook of :class:`~workerwire.base_worker.BaseWorkerConnector`.
CONNECTOR_HOOKS = {"_connect_once": "connect_once"}
#: ... for events of :class:`~workerwire.base_worker.BaseWorkerConnector`.
CONNECTOR_EVENTS = {"_on_traffic": "on_traffic", "_session_lost": "session_lost"}

_warned: set[tuple[type, str]] = set()


def _warn_once(cls: type, old: str, new: str, what: str) -> None:
    if (cls, old) in _warned:
        return
    _warned.add((cls, old))
    warnings.warn(
        f"{cls.__module__}.{cls.__qualname__}: the {what} {old!r} is workerwire backend API 1.0; "
        f"API 1.1 names it {new!r} (the old name goes away in API 2)",
        DeprecationWarning,
        stacklevel=4,
    )


def adopt_legacy_hooks(cls: type, renames: dict[str, str]) -> None:
    """Called from ``__init_subclass__`` (before ABCMeta counts abstract
    methods): a hook or event override *cls* defines under its API 1.0 name,
    and not under its new one, is used as the new one."""
    for old, new in renames.items():
        if old in cls.__dict__ and new not in cls.__dict__:
            _warn_once(cls, old, new, "name")
            setattr(cls, new, cls.__dict__[old])


def legacy_event(old: str, base_method: Callable[..., Any]) -> Callable[..., Any]:
    """The base class's *base_method* under its API 1.0 name *old*, warning once
    per class.  It calls the base implementation itself, so an API 1.0 override
    that calls ``super()._on_x(...)`` reaches the base, never itself."""
    new = base_method.__name__

    def event(self: Any, *args: Any, **kwargs: Any) -> Any:
        _warn_once(type(self), old, new, "name")
        return base_method(self, *args, **kwargs)

    event.__name__ = old
    event.__doc__ = f"Deprecated (backend API 1.0): use :meth:`{new}`."
    return event


def moved_module(old: str, new: Any, why: str) -> Callable[[str], Any]:
    """The module ``__getattr__`` of *old*, a module moved to *new*: each name
    read from it is *new*'s, with a :class:`DeprecationWarning` naming where it
    went and *why*."""

    def __getattr__(name: str) -> Any:
        value = getattr(new, name)  # AttributeError for a name it never had
        warnings.warn(f"{old}.{name} moved to {new.__name__}.{name} ({why})", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
