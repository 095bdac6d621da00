"""`python -m release.swarm show|switch ...`: the Swarm emergency CLI (see `cli.py`)."""

from release.swarm.cli import main

raise SystemExit(main())
