"""What a plain ``pip install workerwire`` brings, and what it says when the
conformance suite's test runner is missing."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement

# Runs the CLI with pytest and pytest-twisted made unimportable, as in a
# plain install (``sys.modules[name] = None`` is Python's documented way to
# make an import fail); everything else is the real installed package.
_WITHOUT_PYTEST = (
    "import sys; sys.modules['pytest'] = None; sys.modules['pytest_twisted'] = None; "
    "sys.argv = ['workerwire', *sys.argv[1:]]; from workerwire_app.cli import main; sys.exit(main())"
)


def _requirements(extra: str | None) -> set[str]:
    names = set()
    for line in metadata.requires("workerwire") or []:
        req = Requirement(line)
        applies = req.marker is None if extra is None else (req.marker is not None and
                                                            req.marker.evaluate({"extra": extra}))
        if applies:
            names.add(req.name.lower().replace("_", "-"))
    return names


def test_a_plain_install_does_not_require_pytest() -> None:
    plain = _requirements(None)
    assert "twisted" in plain and "stevedore" in plain
    assert not {"pytest", "pytest-twisted"} & plain, plain


def test_the_conformance_extra_brings_the_test_runner_and_test_includes_it() -> None:
    assert {"pytest", "pytest-twisted"} <= _requirements("conformance")
    assert "workerwire" in _requirements("test")  # workerwire[conformance]


def test_conformance_without_pytest_says_what_to_install() -> None:
    out = subprocess.run([sys.executable, "-c", _WITHOUT_PYTEST, "conformance", "null"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "pip install 'workerwire[conformance]'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_backends_works_without_pytest() -> None:
    out = subprocess.run([sys.executable, "-c", _WITHOUT_PYTEST, "backends"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert {line.split()[0] for line in out.stdout.splitlines()[1:]} >= {"pb", "amp", "null"}
