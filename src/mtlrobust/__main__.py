"""``python -m mtlrobust``: the same command line as the ``mtlrobust`` console script."""

from .cli import main

raise SystemExit(main())
