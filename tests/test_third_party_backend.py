"""Third-party discovery for real: a throwaway distribution that is not part of
this project (a real ``*.dist-info`` with ``entry_points.txt``) is put on the
path of a fresh Python process, found by the registry, and run through the
conformance suite with the documented command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_distribution

ACME_MODULE = '''
"""acme_loop: a third-party backend, built on whatever the registry calls "null"."""
from workerwire import Backend, load_backend


class AcmeLoop(Backend):
    name = "acme-loop"
    description = "ACME's loopback link (third-party test backend)"
    network = False

    def __init__(self):
        self._inner = load_backend("null")

    def create_listener(self, master, options=None, reactor=None):
        listener = self._inner.create_listener(master, options, reactor)
        listener.backendName = self.name
        return listener

    def create_connector(self, bot, address, name, password, options=None, reactor=None, backoff=None):
        return self._inner.create_connector(bot, address, name, password, options, reactor, backoff)

    def loopback_port(self):
        return self._inner.loopback_port()

    def check_port(self, portStr):
        self._inner.check_port(portStr)

    def make_interposer(self, address, reactor):
        return self._inner.make_interposer(address, reactor)

    def raw_frames(self, connector):
        return self._inner.raw_frames(connector)

    def raw_connect(self, address, reactor):
        return self._inner.raw_connect(address, reactor)


backend = AcmeLoop()


class Incomplete(Backend):
    name = "acme-incomplete"
    description = "forgets to implement the contract"


class Misnamed(AcmeLoop):
    name = "something-else"


class Deaf(AcmeLoop):
    """Offers no way to blackhole its links (and its addresses are not tcp:)."""
    name = "acme-deaf"
    make_interposer = None


deaf = Deaf()


not_a_backend = object()
'''


@pytest.fixture(scope="module")
def third_party_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    write_distribution(root, "acme-loop-backend", "1.2.3", {
        "acme-loop": "acme_loop:backend",
        "acme-broken": "acme_broken:backend",
        "acme-incomplete": "acme_loop:Incomplete",
        "acme-misnamed": "acme_loop:Misnamed",
        "acme-deaf": "acme_loop:deaf",
        "acme-object": "acme_loop:not_a_backend",
    }, {"acme_loop": ACME_MODULE,
        "acme_broken": "raise ImportError('acme_broken needs libacme, which is missing')\n"})
    return root


def _run(path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_registry_lists_the_third_party_backend(third_party_path: Path) -> None:
    code = ("import json; from workerwire import list_backends; "
            "print(json.dumps([b.__dict__ for b in list_backends()]))")
    out = _run(third_party_path, "-c", code)
    assert out.returncode == 0, out.stderr
    infos = {b["name"]: b for b in json.loads(out.stdout)}
    acme = infos["acme-loop"]
    assert (acme["distribution"], acme["version"], acme["loads"]) == ("acme-loop-backend", "1.2.3", True)
    assert infos["null"]["loads"] and infos["null"]["distribution"] == "workerwire"
    broken = infos["acme-broken"]
    assert not broken["loads"] and "libacme" in broken["error"]
    assert not infos["acme-incomplete"]["loads"] and "abstract" in infos["acme-incomplete"]["error"]
    assert not infos["acme-misnamed"]["loads"] and "something-else" in infos["acme-misnamed"]["error"]
    assert not infos["acme-object"]["loads"] and "not a workerwire.Backend" in infos["acme-object"]["error"]


def test_conformance_suite_runs_against_the_third_party_backend(third_party_path: Path) -> None:
    out = _run(third_party_path, "-m", "workerwire.conformance", "acme-loop", "-q", "-p", "no:randomly")
    tail = out.stdout[-3000:]
    assert out.returncode == 0, tail + out.stderr[-2000:]
    assert " passed" in tail and "failed" not in tail and "skipped" not in tail, tail


def test_a_backend_the_suite_cannot_blackhole_fails_the_dead_peer_tests_rather_than_skipping_them(
        third_party_path: Path) -> None:
    """The five tests that need to blackhole the link fail, naming what is missing."""
    out = _run(third_party_path, "-m", "workerwire.conformance", "acme-deaf", "-q", "-p", "no:randomly",
               "-k", "silent_worker or silent_master or dead_peer or outage_shorter or closing_a_dead_link")
    tail = out.stdout[-4000:]
    assert out.returncode == 1, tail + out.stderr[-2000:]
    assert "5 failed" in tail and "passed" not in tail and "skipped" not in tail, tail
    assert out.stdout.count("without it the keepalive and dead-peer guarantees are unproven") >= 5, tail
    assert "make_interposer(address, reactor)" in out.stdout, tail


def test_conformance_command_refuses_an_unknown_backend(third_party_path: Path) -> None:
    out = _run(third_party_path, "-m", "workerwire.conformance", "no-such-backend")
    assert out.returncode == 2
    assert "no workerwire backend named 'no-such-backend'" in out.stderr
    assert "acme-loop" in out.stderr and "null" in out.stderr
