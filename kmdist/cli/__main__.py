"""``python -m kmdist.cli``: the ``kmdist`` command."""

from kmdist.cli._main import run

run()
