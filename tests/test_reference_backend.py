"""The reference backend in examples/jsonlines, installed as a third-party
distribution on a fresh PYTHONPATH, passes the whole conformance suite: proof
that a backend written against workerwire.backend_api alone is a few hundred
lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_distribution

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "jsonlines"
EXAMPLE = EXAMPLES / "acme_jsonlines.py"
#: The modules of the distribution: the backend and its frames for the hostile-peer tests.
MODULES = [EXAMPLE, EXAMPLES / "acme_jsonlines_raw.py"]
#: The issue's bound for a reference backend, all its modules together.
MAX_LINES = 400


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    write_distribution(root, "acme-jsonlines", "1.0", {"acme-jsonlines": "acme_jsonlines:backend"},
                       {module.stem: module.read_text() for module in MODULES})
    return root


def test_the_reference_backend_stays_small() -> None:
    assert sum(len(m.read_text().splitlines()) for m in MODULES) <= MAX_LINES


def test_the_reference_backend_passes_the_whole_conformance_suite(site: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "workerwire.conformance", "acme-jsonlines", "-q", "-p", "no:randomly"],
                         env=env, capture_output=True, text=True, timeout=900)
    tail = out.stdout[-3000:]
    assert out.returncode == 0, tail + out.stderr[-2000:]
    assert " passed" in tail and "failed" not in tail and "skipped" not in tail and "deselected" not in tail, tail


def test_a_line_nested_deep_is_refused_before_json_decodes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """json.loads recurses: a line of 100,000 nested arrays (in the JSON, not in a value) must be refused by
    the backend's own check, without calling it (it would raise RecursionError, or crash a C stack)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import acme_jsonlines
    finally:
        sys.path.remove(str(EXAMPLES))
    from twisted.internet.testing import StringTransport

    from workerwire import LinkOptions

    decoded: list[bytes] = []
    monkeypatch.setattr(acme_jsonlines.json, "loads", lambda line: decoded.append(line))
    from twisted.internet import reactor

    from workerwire.backend_api import StreamLink

    line = acme_jsonlines.Line(LinkOptions(), lambda method, args: None, StreamLink(LinkOptions(), reactor, "test"))
    line.makeConnection(StringTransport())
    errors: list[Exception] = []
    line.protocol_error = errors.append  # type: ignore[method-assign]
    depth = 100_000
    line.dataReceived(b'{"call": 1, "method": "update", "args": ' + b"[" * depth + b"]" * depth + b"}\n")
    line.dataReceived(b'{"call": 2, "method": "x[{", "args": "a\\"[{"}\n')  # brackets in strings are no nesting
    assert str(errors[0]) == "a message must be one JSON object of strings and numbers, nested in nothing", errors
    assert len(decoded) == 1 and decoded[0].startswith(b'{"call": 2'), "json.loads ran on the nested line"
