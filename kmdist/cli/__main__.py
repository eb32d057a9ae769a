"""``python -m kmdist.cli``: the ``kmdist`` command."""

import sys

from kmdist.cli._main import main

sys.exit(main())
