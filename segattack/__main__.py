"""``python -m segattack``: see :mod:`segattack.cli`."""

from segattack.cli import main

raise SystemExit(main())
