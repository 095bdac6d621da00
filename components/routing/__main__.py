"""`python -m components.routing`: the emergency CLI's old name, forwarded to `release.routing`."""

import sys

from release.routing.cli import main

if __name__ == "__main__":
    sys.exit(main())
