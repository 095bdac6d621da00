"""`python -m components.routing switch|show ...`: the emergency CLI (see `cli.py`)."""

from .cli import main

raise SystemExit(main())
