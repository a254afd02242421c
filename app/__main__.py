"""``python -m workerwire_app`` is the ``workerwire`` command."""

import sys

from .cli import main

sys.exit(main())
