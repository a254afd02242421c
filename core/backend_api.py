"""The backend API: everything a backend author builds on, in one place.

``workerwire.backend_api`` is the public, versioned surface between core and a
backend (:data:`API_VERSION`).  A backend implements the *hooks* below and
calls the *events*; core owns everything else -- registrations and shared
ports, opening ports, the login sequence and its guard, credentials, the
worker's login attempt and its timeout, reconnecting, keepalive, the
``Connection`` contract, flow control.  ``docs/writing-a-backend.md`` has the
table of hooks and events with their lifecycle rules.

Master side
    :class:`BaseListener` (hooks: :meth:`~BaseListener.build_factory`, or
    ``_open_port``/``_close_port`` for a backend without endpoint strings;
    plumbing it calls: :meth:`~BaseListener.check_login`,
    :meth:`~BaseListener.attach`, ``login_guard.admit``);
    :class:`BaseConnection` (hooks: ``call_*``, ``lose_connection``,
    ``get_peer``, ``translate_failure``; events: ``on_traffic``,
    ``on_update``, ``on_complete``, ``on_worker_keepalive``,
    ``on_shutdown_request``, ``on_connection_lost``).

Worker side
    :class:`BaseWorkerConnector` (hook: ``connect_once``, which a network
    backend writes as ``return MyAttempt(self).start()``);
    :class:`LoginAttempt` (hooks: ``build_factory``, ``connected``, ``drop``;
    events: ``succeeded``, ``failed``, ``lost_during_login``);
    :class:`WorkerSession`; :class:`BaseCommandChannel`; :func:`call_bot`;
    :class:`WorkerLink` (a :class:`LoginAttempt` that becomes the
    :class:`WorkerSession`, with the link's output window, transfer calls,
    login outcome and loss already kept; events: ``login_succeeded``,
    ``login_failed``, ``lost``; helpers: ``start_command``,
    ``set_builder_list``; hook: ``send_transfer``).

Conformance hooks (on :class:`Backend`)
    ``raw_frames(connector)`` and ``raw_connect(address, reactor)``: the
    hostile-peer tests' raw frames (:mod:`workerwire.conformance.raw_frames`:
    a few lines per kind -- ``request``, ``nested_update``, ``login``,
    ``update``, ``complete``, ``oversized``, ``garbage``, every one required:
    the suite skips none); ``make_interposer``.

Credentials and helpers
    :class:`ChallengeResponse`, :func:`new_challenge`, :func:`login_response`
    (HMAC-SHA256 challenge-response, ready to use); :class:`SendWindow` and
    :class:`ReceiveWindow` (output flow control, worker and master end);
    :class:`Reassembly`, :func:`split` (values larger than a frame,
    :mod:`workerwire.parts`); :func:`error_detail`, :func:`translate_native`,
    :func:`describe_loss` (errors on the wire); :func:`parse_client_address`,
    :func:`parse_server_port`, :func:`describe_peer`; :class:`StreamLink`
    (a stream protocol's transport plumbing on either end: TCP options,
    send budget, pre-login input limit, protocol errors, byte counts) and
    :class:`StreamServerFactory` (a master port's factory for it);
    :class:`PendingRequests` (requests waiting for their answers, by tag),
    :func:`serve_request` (run the handler of the peer's request, answer it).
"""

from __future__ import annotations

from .addresses import describe_peer
from .backend import API_VERSION, Backend, LinkOptions
from .base_connection import BaseConnection, update_pairs
from .base_listener import BaseListener, OpenPort, WorkerCredentials
from .base_worker import BaseCommandChannel, BaseWorkerConnector, LoginAttempt, WorkerSession, call_bot, call_bot_now
from .credentials import ChallengeResponse, IWorkerName, WorkerRealm, login_response, new_challenge
from .endpoints import parse_client_address, parse_server_port
from .errors import describe_loss, error_detail, translate_native
from .flow import ReceiveWindow, SendWindow
from .login_guard import GENERIC_REFUSAL, CloseAtOnce, LoginTicket
from .stream_link import StreamLink, StreamServerFactory
from .worker_link import WorkerLink, builder_pairs
from .parts import Reassembly, split
from .pending import PendingRequests, serve_request

__all__ = [
    "API_VERSION",
    "Backend",
    "LinkOptions",
    "BaseListener",
    "OpenPort",
    "WorkerCredentials",
    "BaseConnection",
    "update_pairs",
    "BaseWorkerConnector",
    "BaseCommandChannel",
    "LoginAttempt",
    "WorkerSession",
    "WorkerLink",
    "builder_pairs",
    "call_bot",
    "call_bot_now",
    "ChallengeResponse",
    "IWorkerName",
    "WorkerRealm",
    "login_response",
    "new_challenge",
    "SendWindow",
    "ReceiveWindow",
    "Reassembly",
    "split",
    "error_detail",
    "translate_native",
    "describe_loss",
    "parse_client_address",
    "parse_server_port",
    "describe_peer",
    "GENERIC_REFUSAL",
    "CloseAtOnce",
    "LoginTicket",
    "StreamLink",
    "StreamServerFactory",
    "PendingRequests",
    "serve_request",
]
