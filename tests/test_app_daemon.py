"""``workerwire_app.daemon.run``: the exit status of a main that ends with ``SystemExit``.

Each case runs in its own Python process, as the ``workerwire`` command does: ``run``
starts and stops the global reactor, which pytest's own reactor cannot share.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_MAIN = """
import sys
from workerwire_app.daemon import run

async def main(reactor):
    raise SystemExit({code})

sys.exit(run(main))
"""


@pytest.mark.parametrize(("code", "status", "stderr"), [
    ("None", 0, ""),
    ("3", 3, ""),
    ("'the config is broken'", 1, "the config is broken\n"),
])
def test_a_main_that_raises_system_exit_exits_as_python_would(code: str, status: int, stderr: str) -> None:
    done = subprocess.run([sys.executable, "-c", _MAIN.format(code=code)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stderr) == (status, stderr)
