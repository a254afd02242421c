"""The backend API as a backend author meets it: names, port checks, the
hooks core owns for every backend."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_twisted import ensureDeferred as async_test

from workerwire import AddressError, Backend, LinkOptions, load_backend
from workerwire.conformance import Harness


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


