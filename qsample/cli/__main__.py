"""``python -m qsample.cli``."""

from . import main

raise SystemExit(main())
