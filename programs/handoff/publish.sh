#!/bin/sh
# The handoff's first step, run in the Redis container by one exec (release/handoff.py,
# `hand_over`): publish the new live color with a new epoch (the contract's PUBLISH_LIVE Lua
# script), then poll the lease until the new color holds it for that epoch ("<color>:<epoch>:...",
# or no holder at all when the color is $NOBODY). The password comes from the server's own
# config file (as its healthcheck reads it) through REDISCLI_AUTH, never on a command line.
#
# Prints `epoch=<n>` once published, then `lease=<value seen last>`. Exit 0: the lease moved;
# 3: the publish failed; 4: the deadline passed first.
#
# Environment (release/handoff.py and contract/work.py constants):
#   REDIS_CONF    the server's config file (its `requirepass` line)
#   PUBLISH       the PUBLISH_LIVE Lua script
#   EPOCH_KEY, LIVE_KEY, LEASE_KEY, CHANNEL   the contract's keys and channel
#   NOBODY        the color that means "no color does background work"
#   COLOR         the new live color (or $NOBODY)
#   NOW_MS        the publish time, epoch milliseconds
#   END           the deadline, epoch seconds
set -u
REDISCLI_AUTH="$(sed -n 's/^requirepass //p' "$REDIS_CONF" 2>/dev/null)"; export REDISCLI_AUTH
[ -n "$REDISCLI_AUTH" ] || unset REDISCLI_AUTH
epoch="$(redis-cli --no-auth-warning --raw EVAL "$PUBLISH" 2 "$EPOCH_KEY" "$LIVE_KEY" \
    "$COLOR" "$NOW_MS" "$CHANNEL")" || exit 3
case "$epoch" in ''|*[!0-9]*) echo "publish: $epoch" >&2; exit 3;; esac
echo "epoch=$epoch"
while :; do
  lease="$(redis-cli --no-auth-warning --raw GET "$LEASE_KEY")"
  case "$COLOR:$lease" in "$COLOR:$COLOR:$epoch:"*|"$NOBODY:") echo "lease=$lease"; exit 0;; esac
  [ "$(date +%s)" -ge "$END" ] && { echo "lease=$lease"; exit 4; }
  sleep 0.02
done
