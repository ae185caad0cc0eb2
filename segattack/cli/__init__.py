"""The ``segattack`` command (:func:`main`, the console script ``segattack.cli:main``)."""

from segattack.cli.main import main

__all__ = ["main"]
