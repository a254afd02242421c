"""A third-party workerwire backend, installed as its own distribution, used
from a stock Buildbot master.cfg by name (``backend='acme-relay'``).

The throwaway distribution (a real ``*.dist-info`` with ``entry_points.txt``,
on PYTHONPATH of the master and the worker processes) is not part of this
project; its backend reuses whatever the registry calls ``amp`` for the wire,
as a third party building on workerwire might.
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest_twisted
from pytest_twisted import ensureDeferred as async_test

from conftest import write_distribution
from test_app_support import Processes
from test_buildbot_plugin_harness import BuildbotMaster, ProbeLink, WorkerSpec, free_port

ACME_RELAY = '''
"""acme_relay: a third-party workerwire backend (test fixture)."""
from workerwire import Backend, load_backend


class AcmeRelay(Backend):
    name = "acme-relay"
    description = "ACME's relay link (third-party test backend over amp's wire)"
    network = True

    def __init__(self):
        self._inner = load_backend("amp")

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


backend = AcmeRelay()
'''


def third_party_site(root: Path) -> dict[str, str]:
    """The environment of processes that have the acme-relay distribution installed (in *root*)."""
    return write_distribution(root, "acme-relay-backend", "0.3", {"acme-relay": "acme_relay:backend"},
                              {"acme_relay": ACME_RELAY})


@pytest_twisted.async_yield_fixture
async def master(tmp_path: Path) -> AsyncIterator[BuildbotMaster]:
    procs = Processes()
    probe = ProbeLink()
    port = await probe.listen()
    bb = BuildbotMaster(tmp_path / "master", procs, probe, port)
    bb.env = third_party_site(tmp_path / "site")
    try:
        yield bb
    finally:
        procs.cleanup()
        bb.kill()
        await probe.port.stopListening()


@async_test
async def test_a_third_party_backend_runs_builds_beside_a_stock_pb_worker(master: BuildbotMaster) -> None:
    workers = [WorkerSpec("linux-1", "pw1", "stock-pb"), WorkerSpec("arm-1", "pw5", "ww-acme-relay", free_port())]
    await master.create()
    master.write_config(workers)
    await master.start()
    for spec in workers:
        await master.start_any_worker(spec)
    for spec in workers:
        await master.probe.wait("worker-connected", name=spec.name)
    results = {}
    for spec in workers:
        build = await master.build(f"quick-{spec.name}")
        hello = next(s for s in build["steps"] if s["name"] == "hello")
        assert f"hello from {spec.name}" in hello["logs"]["stdio"]
        results[spec.name] = [(s["name"], s["results"]) for s in build["steps"]]
    assert results["arm-1"] == results["linux-1"]


@async_test
async def test_checkconfig_lists_the_third_party_backend_among_the_installed_ones(master: BuildbotMaster) -> None:
    await master.create()
    master.write_config([WorkerSpec("arm-1", "pw5", "ww-acme-rlay", 9990)])
    proc = await master.check_config()
    out = proc.text_out + proc.text_err
    assert proc.status != 0
    assert "no workerwire backend named 'acme-rlay'; installed: acme-relay, amp, " in out, out
