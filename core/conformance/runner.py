"""``python -m workerwire.conformance NAME``: the suite against an installed backend."""

from __future__ import annotations

import os
import sys

import pytest

from ..errors import BackendLoadFailed, BackendNotFound
from ..registry import load_backend

__all__ = ["run", "main"]


def run(backend_name: str, pytest_args: list[str]) -> int:
    try:
        load_backend(backend_name)
    except (BackendNotFound, BackendLoadFailed) as e:
        print(f"workerwire conformance: {e}", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    target = os.path.join(here, "selected_backend.py")
    args = [
        target,
        f"--workerwire-backend={backend_name}",
        "-p", "no:cacheprovider",
        f"--rootdir={here}",
        "-c", os.devnull,
        *pytest_args,
    ]
    return int(pytest.main(args))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m workerwire.conformance BACKEND [pytest arguments...]", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])
