"""The ``kmdist`` command (`main`): argument parsing, terminal progress, the demo.

Only `main` is imported here, and it imports nothing heavy until a command runs, so
``kmdist --help`` answers at once.
"""

from kmdist.cli._main import main, run

__all__ = ["main", "run"]
