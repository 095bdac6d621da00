"""The background-work contract between the deploy and the app.

Standard library only: the reference app's image copies this file next to the app,
and the switch (`release.handoff`) uses the same names, so both sides cannot drift.

The source of truth for "which color does background work" is Redis:

- `LIVE_KEY` (hash: color, epoch, changed_at_ms), written only by the switch with a
  new epoch from `EPOCH_KEY` (INCR), and announced on `CHANNEL`.
- `LEASE_KEY` (string "<color>:<epoch>:<instance>", with a TTL): one instance of the
  live color holds it and renews it while alive; only the holder runs consumers and
  schedulers. A crashed or partitioned holder loses it by expiry, never by trust.
- Every effect is committed by a script that first checks the lease (the fence) and
  the message id (the idempotency guard).

Details: docs/background-work.md.
"""

from __future__ import annotations

KEY_PREFIX = "paper-trading:work:"
LIVE_KEY = KEY_PREFIX + "live"
EPOCH_KEY = KEY_PREFIX + "epoch"
CHANNEL = KEY_PREFIX + "changes"
LEASE_KEY = KEY_PREFIX + "lease"
PROCESSED_KEY = KEY_PREFIX + "processed"
TICKS_KEY = KEY_PREFIX + "ticks"
#: A list of "<id>|<first committer>|<second committer>" for every refused second commit of
#: a message id or a scheduler slot that was not a broker redelivery: the record the
#: exactly-once tests read (app counters restart with the app; this list does not).
DUPLICATES_KEY = KEY_PREFIX + "duplicates"

COLORS = ("blue", "green")
#: Published as the live color when nothing is promoted (a first promotion switched back):
#: no color may take the lease, and the holder stands down.
NOBODY = "none"
DEFAULT_QUEUE = "paper-trading.orders"
DEFAULT_LEASE_TTL_MS = 3000
DEFAULT_PREFETCH = 10
DEFAULT_TICK_MS = 1000
#: Scheduler jobs of the reference app.
JOB_STRATEGY_TICK = "strategy-tick"
JOB_EOD_PNL = "eod-pnl"

#: Results of the commit script.
COMMIT_OK = "ok"
COMMIT_DUPLICATE = "duplicate"
COMMIT_FENCED = "fenced"

# ---------------------------------------------------------------- Lua scripts (EVAL)
# Each runs atomically in Redis; KEYS/ARGV are documented above each one.

#: KEYS: EPOCH_KEY, LIVE_KEY. ARGV: color, now_ms, CHANNEL. Returns the new epoch.
#: The only writer of LIVE_KEY: every publish gets a new, larger epoch, and the change is
#: announced as "<color>:<epoch>" (subscribers also poll LIVE_KEY: pub/sub may be missed).
PUBLISH_LIVE = """
local epoch = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'color', ARGV[1], 'epoch', epoch, 'changed_at_ms', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ':' .. epoch)
return epoch
"""

#: KEYS: LIVE_KEY, LEASE_KEY. ARGV: color, epoch, token, ttl_ms.
#: Takes or renews the lease: only for the live color at the live epoch, and only when the
#: lease is free or already the caller's. Returns 1 (held, TTL reset) or 0.
ACQUIRE_LEASE = """
local live = redis.call('HMGET', KEYS[1], 'color', 'epoch')
if live[1] ~= ARGV[1] or live[2] ~= ARGV[2] then return 0 end
local current = redis.call('GET', KEYS[2])
if current and current ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', tonumber(ARGV[4]))
return 1
"""

#: KEYS: LEASE_KEY. ARGV: token. Deletes the lease only if it is the caller's. Returns 1/0.
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS: LEASE_KEY, the record hash (PROCESSED_KEY or TICKS_KEY), DUPLICATES_KEY.
#: ARGV: token, id, value ("<color>:<epoch>"), redelivered ("1"/"0").
#: The fence first (the lease must still be the caller's, else "fenced": nothing written),
#: then the id (HSETNX; already there -> "duplicate", recorded unless it is a redelivery).
COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 1 then return 'ok' end
if ARGV[4] ~= '1' then
  redis.call('RPUSH', KEYS[3], ARGV[2] .. '|' .. redis.call('HGET', KEYS[2], ARGV[2]) .. '|' .. ARGV[3])
end
return 'duplicate'
"""
#: Messages and scheduler slots are committed by the same script (different record hash).
COMMIT_MESSAGE = COMMIT
COMMIT_TICK = COMMIT


def make_token(color: str, epoch: int, instance: str) -> str:
    """The lease value "<color>:<epoch>:<instance>"."""
    if color not in COLORS:
        raise ValueError(f"lease color must be one of {COLORS}, got {color!r}")
    if not instance or ":" in instance:
        raise ValueError(f"lease instance must be non-empty without ':', got {instance!r}")
    return f"{color}:{int(epoch)}:{instance}"


def parse_token(token: str | bytes | None) -> tuple[str, int, str] | None:
    """(color, epoch, instance) of a lease value, or None when absent or malformed."""
    if token is None:
        return None
    text = token.decode() if isinstance(token, bytes) else token
    color, _, rest = text.partition(":")
    epoch, _, instance = rest.partition(":")
    if color not in COLORS or not epoch.isdigit() or not instance:
        return None
    return color, int(epoch), instance


def record_value(color: str, epoch: int) -> str:
    """What a commit stores for an id or slot: who did it, at which epoch."""
    return f"{color}:{int(epoch)}"


def tick_slot(job: str, now_ms: int, tick_ms: int) -> str:
    """The slot id of a periodic job: one per `tick_ms` of wall clock, the same on every color."""
    return f"{job}:{now_ms // max(1, tick_ms)}"


def connection_name(color: str, hostname: str) -> str:
    """The AMQP client-provided connection name; consumer tags start with it too."""
    return f"paper-trading-{color}-{hostname}"

#: Roles `/health/detailed` reports.
ROLE_ACTIVE = "active"
ROLE_STANDBY = "standby"
#: The stack runs no background work (no queues, no schedulers configured).
ROLE_DISABLED = "disabled"
