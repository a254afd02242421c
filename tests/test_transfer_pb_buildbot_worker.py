"""File transfer between a workerwire pb master and an unmodified
``buildbot-worker`` 4.x subprocess: the worker uploads into the master's
:class:`~workerwire.transfer.LocalFileWriter` / ``DirectoryWriter`` and
downloads from its ``LocalFileReader``, through the handles Buildbot's dialect
carries as remote references (```uploadFile``, ``uploadDirectory``,
``downloadFile`` with the args a Buildbot 4 master sends over pb: ``workdir``
relative to the builder directory, ``workersrc`` / ``workerdest``)."""

from __future__ import annotations

from typing import Any

from pytest_twisted import ensureDeferred as async_test

import stock_worker_transfers as checks
from test_pb_buildbot_worker import connected, setup  # noqa: F401  (fixtures; reactor is in conftest)


@async_test
async def test_stock_worker_uploads_a_file_with_its_stamps(setup: Any, tmp_path: Any) -> None:
    await checks.uploads_a_file_with_its_stamps(await connected(setup), setup[3], tmp_path)


@async_test
async def test_stock_worker_uploads_a_directory_as_a_tar(setup: Any, tmp_path: Any) -> None:
    await checks.uploads_a_directory_as_a_tar(await connected(setup), setup[3], tmp_path)


@async_test
async def test_stock_worker_downloads_a_file(setup: Any, tmp_path: Any) -> None:
    await checks.downloads_a_file(await connected(setup), setup[3], tmp_path)


# Not tested here: a master-side writer that raises.  buildbot-worker 4.3 then
# cannot report its completion at all (re-sending the master's CopiedFailure
# fails in its jelly: 'bytes' object has no attribute '__module__'), with any
# PB master; the conformance suite pins the contract's side of it instead.
