import sys

from . import missing_runner

if missing_runner() is not None:  # a plain install: no pytest; say what to install
    print(f"workerwire conformance: {missing_runner()}", file=sys.stderr)
    sys.exit(2)

from .runner import main  # noqa: E402

sys.exit(main())
