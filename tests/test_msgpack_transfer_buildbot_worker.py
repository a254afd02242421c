"""File transfer between a workerwire msgpack master and an unmodified
``buildbot-worker`` 4.3 subprocess (``--protocol msgpack_experimental_v7``):
the worker uploads into the master's :class:`~workerwire.transfer.LocalFileWriter`
/ ``DirectoryWriter`` and downloads from its ``LocalFileReader`` through
Buildbot's transfer messages (``update_upload_file_write`` ...), with the args a
Buildbot 4 master hands its connection (the backend makes the paths absolute
and renames the commands, as Buildbot's msgpack master does)."""

from __future__ import annotations

from typing import Any

from pytest_twisted import ensureDeferred as async_test

import stock_worker_transfers as checks
from test_msgpack_buildbot_worker import connected, reactor, setup  # noqa: F401  (fixtures)


@async_test
async def test_stock_worker_uploads_a_file_with_its_stamps(setup: Any, tmp_path: Any) -> None:
    await checks.uploads_a_file_with_its_stamps(await connected(setup), setup[3], tmp_path)


@async_test
async def test_stock_worker_uploads_a_directory_as_a_tar(setup: Any, tmp_path: Any) -> None:
    await checks.uploads_a_directory_as_a_tar(await connected(setup), setup[3], tmp_path)


@async_test
async def test_stock_worker_downloads_a_file(setup: Any, tmp_path: Any) -> None:
    await checks.downloads_a_file(await connected(setup), setup[3], tmp_path)
