"""``python -m segattack``: see :mod:`segattack.cli`."""

from .cli import main

raise SystemExit(main())
