"""The backend API as a backend author meets it: names, port checks, the
hooks core owns for every backend."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pytest_twisted import ensureDeferred as async_test

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.protocol import Protocol

from conftest import write_distribution
from workerwire import AddressError, Backend, LinkOptions, load_backend
from workerwire.conformance import Harness, within


def _renamed(backend_name: str) -> Backend:
    """The in-tree backend *backend_name* registered under another name, as a
    distribution that wraps it would."""
    original = type(load_backend(backend_name))
    wrapped = type(f"Wrapped{original.__name__}", (original,), {"name": f"acme-{backend_name}"})
    return wrapped()


@pytest.mark.parametrize("backend_name", ["pb", "amp", "null"])
@async_test
async def test_every_object_carries_the_registry_name_of_its_backend(
        backend_name: str, reactor: Any, tmp_path: Any) -> None:
    backend = _renamed(backend_name)
    h = Harness(backend, LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    try:
        w = await h.start_worker()
        assert h.listener.backendName == f"acme-{backend_name}"
        assert w.conn.backendName == f"acme-{backend_name}", "the app's reload matches connections on it"
        assert w.connector.backendName == f"acme-{backend_name}"
    finally:
        await h.close()


class _Minimal(Backend):
    name = "acme-minimal"
    description = "a backend that keeps the base check_port"

    def create_listener(self, master: Any, options: Any = None, reactor: Any = None) -> Any:
        raise NotImplementedError("not used by this test")

    def create_connector(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("not used by this test")

    def loopback_port(self) -> str:
        return "tcp:port=0:interface=127.0.0.1"


@pytest.mark.parametrize("bad", ["", None, "bogus:1", True])
def test_the_base_check_port_names_the_backend(bad: Any) -> None:
    with pytest.raises(AddressError) as caught:
        _Minimal().check_port(bad)
    message = str(caught.value)
    assert "acme-minimal" in message and repr(bad) in message and "tcp:port=0:interface=127.0.0.1" in message




def _install(tmp_path: Any, module: str, source: str) -> dict[str, str]:
    """A third-party distribution registering *module*:backend; the environment
    that has it on the path (a fresh process: stevedore caches entry points)."""
    return write_distribution(tmp_path, module, "1.0", {module.replace("_", "-"): f"{module}:backend"},
                              {module: source})


_FUTURE_BACKEND = """
from workerwire_pb import PBBackend

class Future(PBBackend):
    name = "acme-future"
    api_version = 7

backend = Future()
"""


def test_a_backend_for_another_api_version_fails_at_load_naming_both(tmp_path: Any) -> None:
    from workerwire.backend import API_VERSION

    env = _install(tmp_path, "acme_future", _FUTURE_BACKEND)
    probe = "from workerwire import load_backend\nload_backend('acme-future')"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    assert "BackendLoadFailed" in out.stderr
    assert "needs workerwire backend API 7" in out.stderr and f"provides API {API_VERSION[0]}." in out.stderr


def test_a_backend_without_its_classes_fails_when_instantiated() -> None:
    class Incomplete(Backend):
        name = "acme-incomplete"
        description = "neither listener_class nor create_listener"

        def loopback_port(self) -> str:
            return "tcp:port=0:interface=127.0.0.1"

    with pytest.raises(TypeError, match="listener_class"):
        Incomplete()


class _Silent(Protocol):
    """A peer that connects and never logs in."""

    def __init__(self) -> None:
        self.gone: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.gone.callback(None)


@pytest.mark.parametrize("backend_name", ["pb", "amp"])
@async_test
async def test_closing_a_port_closes_its_connections_still_logging_in(
        backend_name: str, make_harness: Any, reactor: Any, monkeypatch: Any) -> None:
    h = make_harness(backend_name, keepalive_interval=None)
    reg = await h.register("w1", "pw")
    admitted: Deferred[None] = Deferred()
    admit = h.listener.admit

    def admit_and_tell(*args: Any) -> Any:
        ticket = admit(*args)
        admitted.callback(None)
        return ticket

    monkeypatch.setattr(h.listener, "admit", admit_and_tell)
    silent = _Silent()
    await connectProtocol(clientFromString(reactor, reg.getAddress()), silent)
    await within(admitted, reactor, what="the listener to accept the silent connection")
    assert not silent.gone.called
    await reg.unregister()  # the port's last registration: the port closes
    await within(silent.gone, reactor, what="the connection still logging in to be closed with its port")


def test_a_backend_written_for_api_1_0_still_runs_with_deprecation_warnings(tmp_path: Any) -> None:
    """API 1.1 renamed the hooks and events (``_remote_print`` -> ``call_print``,
    ``_on_update`` -> ``on_update`` ...).  The reference backend with its names
    turned back into API 1.0's, installed as a third-party distribution, still
    passes the link, call and command parts of the suite, and is told which
    names to change."""
    import re
    from pathlib import Path

    from workerwire import api_compat

    source_path = Path(__file__).resolve().parent.parent / "examples" / "jsonlines" / "acme_jsonlines.py"
    source = source_path.read_text()
    old_names = {new: old for renames in (api_compat.MASTER_HOOKS, api_compat.MASTER_EVENTS,
                                          api_compat.CHANNEL_HOOKS, api_compat.CONNECTOR_HOOKS,
                                          api_compat.CONNECTOR_EVENTS) for old, new in renames.items()}
    legacy = re.sub(r"\b(" + "|".join(old_names) + r")\b", lambda m: old_names[m.group(1)], source)
    assert "_remote_print" in legacy and "._on_traffic" in legacy and "def _connect_once" in legacy
    raw = source_path.parent / "acme_jsonlines_raw.py"  # its frames for the hostile tests (names of neither API)
    env = write_distribution(tmp_path, "acme-legacy", "1.0", {"acme-jsonlines": "acme_legacy:backend"},
                             {"acme_legacy": legacy, raw.stem: raw.read_text()})
    out = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-m", "workerwire.conformance",
                          "acme-jsonlines", "-q", "-p", "no:randomly", "-k", "not nested and (remote_ or start_ or updates or interrupt or transfer_utime or transfer_link_lost or pending_call "
                          "or close or shutdown or login)", "-W", "always::DeprecationWarning"],
                         env=env, capture_output=True, text=True, timeout=600)
    tail = out.stdout[-4000:]
    assert out.returncode == 0, tail + out.stderr[-2000:]
    assert " passed" in tail and "failed" not in tail, tail
    for old, new in (("_remote_start_command", "call_start_command"), ("_on_update", "on_update"),
                     ("_connect_once", "connect_once"), ("_send_update", "send_update")):
        assert f"'{old}' is workerwire backend API 1.0; API 1.1 names it '{new}'" in out.stdout + out.stderr, old
