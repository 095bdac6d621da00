"""Old name of `release.record` (pickles in existing stacks' state)."""

from release.record import DeployRecordProvider as DeployRecordProvider
