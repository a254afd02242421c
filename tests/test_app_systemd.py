"""The systemd units in docs/operating.md: present, with LimitNOFILE, and valid.

The syntax check runs ``systemd-analyze verify`` and so depends on the
environment: without that binary it is skipped (the test says so); the
content checks always run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_app_support import workerwire_argv

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operating.md"
UNITS = ("workerwire-master.service", "workerwire-worker.service")


def units() -> dict[str, str]:
    """Unit name -> the ```ini block after the line naming its /etc/systemd/system path."""
    text = DOCS.read_text()
    found = {}
    for name in UNITS:
        m = re.search(rf"^`/etc/systemd/system/{re.escape(name)}`:\n\n```ini\n(.*?)^```", text, re.M | re.S)
        assert m, f"docs/operating.md has no ```ini block for {name}"
        found[name] = m.group(1)
    return found


def test_both_units_run_the_installed_command_with_a_file_limit() -> None:
    for name, unit in units().items():
        assert re.search(r"^LimitNOFILE=\d+$", unit, re.M), name
        command = "master" if "master" in name else "worker"
        assert re.search(rf"^ExecStart=/usr/local/bin/workerwire {command} ", unit, re.M), name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here; the units' syntax was not checked")
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this installation's workerwire.
    program = shutil.which(workerwire_argv()[0]) or workerwire_argv()[0]
    paths = []
    for name, unit in units().items():
        path = tmp_path / name
        path.write_text(unit.replace("/usr/local/bin/workerwire", program))
        paths.append(str(path))
    out = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    # Unknown keys are only warnings (exit status 0): any line about our files is a mistake.
    ours = [line for line in (out.stdout + out.stderr).splitlines() if any(n in line for n in UNITS)]
    assert out.returncode == 0 and not ours, out.stdout + out.stderr
