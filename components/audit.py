"""Old name of `release.audit`: `python -m components.audit seal` still works."""

import sys

from release.audit import main

if __name__ == "__main__":
    sys.exit(main())
