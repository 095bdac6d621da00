"""`python -m release.routing switch|show ...`: the emergency CLI (see `cli.py`)."""

from release.routing.cli import main

raise SystemExit(main())
