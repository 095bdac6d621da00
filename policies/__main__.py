"""Entry point of the policy pack: `pulumi preview --policy-pack policies` runs this file.

It only builds the `PolicyPack` (which starts the analyzer's gRPC server and never returns);
the policies live in `policies/rules.py` so tests and the offline check import them freely.
"""

import sys
from pathlib import Path

# The engine runs this file with `policies/` as the working directory and first sys.path
# entry; the pack's modules are imported as the `policies` package from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies.rules import ALL_POLICIES, PACK_NAME  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    policies=list(ALL_POLICIES),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Paper trading only, read-only exchange keys, CIS Docker section 5 hardening, data safety.",
)
