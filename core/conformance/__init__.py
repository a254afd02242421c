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

#: What to install when the suite's test runner is missing (a plain install has none).
INSTALL_HINT = "pip install 'workerwire[conformance]'"


def missing_runner() -> str | None:
    """Why the suite cannot run here (pytest or pytest-twisted is not
    installed; the text says what to install), or ``None`` when it can."""
    try:
        import pytest  # noqa: F401
        import pytest_twisted  # noqa: F401
    except ImportError as e:
        return (f"the workerwire conformance suite runs under pytest and pytest-twisted, which are not "
                f"installed ({e}); install them with: {INSTALL_HINT}")
    return None


def run(backend_name: str, pytest_args: list[str] | None = None) -> int:
    """Run the whole suite against an installed backend; returns pytest's exit code.

    :raises ImportError: pytest or pytest-twisted is not installed (the message
        says what to install).
    """
    why = missing_runner()
    if why is not None:
        raise ImportError(why)
    from .runner import run as _run

    return _run(backend_name, pytest_args or [])


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
    "missing_runner",
    "INSTALL_HINT",
]

if missing_runner() is None:
    from .fixtures import ConformanceFixtures
    from .harness import Harness, RecordingCommand, RecordingMaster, WorkerHandle, within
    from .relay import LinkInterposer, NoInterposer, TCPRelay
    from .scripted_worker import ScriptedWorker
    from .suite_calls import CallTests
    from .suite_hostile import HostileInputTests, HostilePeerTests
    from .raw_frames import RawFrames  # noqa: F401  (public name)
    from .suite_commands import BackpressureTests, InterruptTests, ScaleTests, StreamingTests
    from .suite_link import DisconnectTests, KeepaliveTests, ShutdownTests
    from .suite_registration import LoginTests, RegistrationTests
    from .suite_transfer import TransferTests, TransferWindowTests

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
        HostileInputTests,
    ):
        """Every conformance test; a backend's test class provides ``backend_name``."""

else:
    # A plain install: `run` and `missing_runner` work (they say what to
    # install); any other name of the suite raises ImportError saying the same.
    def __getattr__(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"workerwire.conformance.{name}: {missing_runner()}")
