"""`python3 -m reference_app --port 3000 --color blue`."""

from __future__ import annotations

import sys

from reference_app.server import main

sys.exit(main())
