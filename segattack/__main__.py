"""``python -m segattack``: see :mod:`segattack.cli`."""

from segattack.cli.main import main

raise SystemExit(main())
