"""The background-work contract between the deploy and the app (issue 15).

Standard library only: the reference app's image copies this file next to the app,
and the switch (`components.handoff`) uses the same names, so both sides cannot drift.

The source of truth for "which color does background work" is Redis:

- `LIVE_KEY` (hash: color, epoch, changed_at_ms), written only by the switch with a
  new epoch from `EPOCH_KEY` (INCR), and announced on `CHANNEL`.
- `LEASE_KEY` (string "<color>:<epoch>:<instance>", with a TTL): one instance of the
  live color holds it and renews it while alive; only the holder runs consumers and
  schedulers. A crashed or partitioned holder loses it by expiry, never by trust.
- Every effect is committed by a script that first checks the lease (the fence) and
  the message id (the idempotency guard).

Filled in by issue 15, part B (the reference app and the handoff).
"""

from __future__ import annotations

KEY_PREFIX = "paper-trading:work:"
LIVE_KEY = KEY_PREFIX + "live"
EPOCH_KEY = KEY_PREFIX + "epoch"
CHANNEL = KEY_PREFIX + "changes"
LEASE_KEY = KEY_PREFIX + "lease"
PROCESSED_KEY = KEY_PREFIX + "processed"
TICKS_KEY = KEY_PREFIX + "ticks"

#: Roles `/health/detailed` reports.
ROLE_ACTIVE = "active"
ROLE_STANDBY = "standby"
#: The stack runs no background work (no queues, no schedulers configured).
ROLE_DISABLED = "disabled"
