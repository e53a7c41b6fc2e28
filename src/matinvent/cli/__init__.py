"""The ``matinvent`` command line: :mod:`~matinvent.cli.parser` builds it, :mod:`~matinvent.cli.commands` runs it."""

from matinvent.cli.parser import main

__all__ = ["main"]
