"""workerwire: the link between a CI master and its workers, made pluggable.

A master talks to workers through :class:`~workerwire.master.Listener` and
:class:`~workerwire.master.Connection`; which wire protocol carries the calls
is a :class:`~workerwire.backend.Backend` found by name with
:func:`~workerwire.registry.load_backend`.
"""

from .backend import Backend, LinkOptions
from .backoff import Backoff
from .errors import (
    AddressError,
    BackendLoadFailed,
    BackendNotFound,
    BuilderBusy,
    CommandConflict,
    ConnectionLost,
    DuplicateCommandId,
    DuplicateWorker,
    LoginRefused,
    ProtocolError,
    RegistrationError,
    RemoteCallFailed,
    UnknownBuilder,
    UnknownCommand,
    UnsupportedValue,
    WorkerwireError,
)
from .master import CommandTarget, Connection, Listener, MasterHooks, Registration, Subscription, Update
from .registry import BackendInfo, backend_names, list_backends, load_backend
from .worker import CommandChannel, WorkerBot, WorkerConnector

__all__ = [
    "AddressError",
    "Backend",
    "BackendInfo",
    "BackendLoadFailed",
    "BackendNotFound",
    "Backoff",
    "BuilderBusy",
    "CommandChannel",
    "CommandConflict",
    "CommandTarget",
    "Connection",
    "ConnectionLost",
    "DuplicateCommandId",
    "DuplicateWorker",
    "LinkOptions",
    "Listener",
    "LoginRefused",
    "MasterHooks",
    "ProtocolError",
    "Registration",
    "RegistrationError",
    "RemoteCallFailed",
    "Subscription",
    "UnknownBuilder",
    "UnknownCommand",
    "UnsupportedValue",
    "Update",
    "WorkerBot",
    "WorkerConnector",
    "WorkerwireError",
    "backend_names",
    "list_backends",
    "load_backend",
]

__version__ = "0.1.0"
