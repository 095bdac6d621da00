"""Old name of `release.guard` (pickles in existing stacks' state)."""

from release.guard import ReleaseGuardProvider as ReleaseGuardProvider
from release.guard import ReleaseRecordProvider as ReleaseRecordProvider
