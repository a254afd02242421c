"""Buildbot's name for the msgpack dialect is accepted wherever a backend name is."""

from __future__ import annotations

import pytest

from workerwire import load_backend
from workerwire.errors import BackendNotFound
from workerwire.registry import ALIASES, backend_names, canonical_name
from workerwire_app.config import parse_config


def test_buildbot_protocol_name_loads_the_msgpack_backend() -> None:
    assert ALIASES["msgpack_experimental_v7"] == "msgpack"
    assert canonical_name("msgpack_experimental_v7") == "msgpack"
    assert load_backend("msgpack_experimental_v7") is load_backend("msgpack")
    # An alias is not a second backend: the list shows the real name once.
    assert "msgpack" in backend_names() and "msgpack_experimental_v7" not in backend_names()


def test_unknown_names_still_list_the_installed_backends() -> None:
    with pytest.raises(BackendNotFound) as err:
        load_backend("msgpack_experimental_v8")
    assert "msgpack" in str(err.value)


def test_a_master_config_may_name_the_protocol_as_buildbot_does() -> None:
    config = parse_config({
        "protocols": {"msgpack_experimental_v7": {"port": "tcp:port=0:interface=127.0.0.1"}},
        "workers": [{"name": "w1", "password": "pw"}],
    }, "master.toml")
    (protocol,) = config.protocols.values()
    assert protocol.backend.name == "msgpack"
