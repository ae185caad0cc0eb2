"""The ``segattack`` command (:func:`main`, the console script ``segattack.cli:main``)."""

from segattack.cli.app import main

__all__ = ["main"]
