"""The conformance suite every workerwire backend passes.

Run it against any installed backend::

    python -m workerwire.conformance NAME        # or: workerwire conformance NAME

or make it part of a backend's own tests (fsspec style)::

    import pytest
    from workerwire.conformance import ConformanceSuite

    class TestAcmeBackend(ConformanceSuite):
        @pytest.fixture
        def backend_name(self):
            return "acme-nats"

The suite drives the backend's real listener and real worker connector (over
real sockets for network backends) with a scripted worker
(:class:`~workerwire.conformance.scripted_worker.ScriptedWorker`).
"""

from __future__ import annotations

from .fixtures import ConformanceFixtures
from .harness import Harness, RecordingCommand, RecordingMaster, WorkerHandle, within
from .relay import LinkInterposer, NoInterposer, TCPRelay
from .scripted_worker import ScriptedWorker
from .suite_calls import CallTests
from .suite_hostile import HostilePeerTests
from .raw_frames import RawFrames
from .suite_commands import BackpressureTests, InterruptTests, ScaleTests, StreamingTests
from .suite_link import DisconnectTests, KeepaliveTests, ShutdownTests
from .suite_registration import LoginTests, RegistrationTests
from .suite_transfer import TransferTests, TransferWindowTests

__all__ = [
    "ConformanceSuite",
    "ConformanceFixtures",
    "RegistrationTests",
    "LoginTests",
    "CallTests",
    "StreamingTests",
    "BackpressureTests",
    "InterruptTests",
    "DisconnectTests",
    "KeepaliveTests",
    "ShutdownTests",
    "ScaleTests",
    "TransferTests",
    "TransferWindowTests",
    "HostilePeerTests",
    "RawFrames",
    "Harness",
    "RecordingCommand",
    "RecordingMaster",
    "WorkerHandle",
    "ScriptedWorker",
    "LinkInterposer",
    "NoInterposer",
    "TCPRelay",
    "within",
    "run",
]


class ConformanceSuite(
    ConformanceFixtures,
    RegistrationTests,
    LoginTests,
    CallTests,
    StreamingTests,
    BackpressureTests,
    InterruptTests,
    DisconnectTests,
    KeepaliveTests,
    ShutdownTests,
    ScaleTests,
    TransferTests,
    TransferWindowTests,
    HostilePeerTests,
):
    """Every conformance test; a backend's test class provides ``backend_name``."""


def run(backend_name: str, pytest_args: list[str] | None = None) -> int:
    """Run the whole suite against an installed backend; returns pytest's exit code."""
    from .runner import run as _run

    return _run(backend_name, pytest_args or [])
