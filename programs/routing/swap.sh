#!/bin/sh
# The switch, run in the proxy container by ONE exec (release/routing/docker_side.py,
# `swap_markers`), as root without any capability: enough to rename files in the root-owned
# routing volume, never to touch nginx (its configuration volume is read-only).
#
# First takes the switch lock (mkdir is atomic), so a `pulumi up` and the emergency CLI never
# interleave; re-entrant for its owner (a switch back), exit $ROUTING_LOCKED_EXIT if held. Then,
# per role, ONE rename(2) of the other color's marker to the wanted one (at every instant
# exactly one marker exists), or a create by rename when there was none, or a removal for
# `none`. Prints the colors that were there before. Where the proxy's `sh` or `mv` cannot
# (read-only volume, ...) it fails before any change.
#
# Environment (docker_side.swap_env, from the Python constants):
#   ROUTING_DIR_PATH      the routing markers' directory (render/nginx/routing.py ROUTING_DIR)
#   ROUTING_COLORS        the colors, space-separated, in the server's `if` order (COLORS)
#   ROUTING_LIVE, ROUTING_PREVIEW   the wanted color per role: one of ROUTING_COLORS, or none
#   ROUTING_OWNER         who switches (host/pid/nonce), written into the lock
#   ROUTING_MARKER        a marker file's content (MARKER_TEXT)
#   ROUTING_INVALID_EXIT, ROUTING_LOCKED_EXIT, ROUTING_LOCK_STALE_S   exit codes, lock age limit
set -e
cd "$ROUTING_DIR_PATH"
for want in "$ROUTING_LIVE" "$ROUTING_PREVIEW"; do
  ok=
  for c in $ROUTING_COLORS none; do [ "$want" = "$c" ] && ok=1; done
  [ -n "$ok" ] || { echo "invalid color '$want'"; exit "$ROUTING_INVALID_EXIT"; }
done
# The lock first; its owner line is written right after the live rename (nothing but
# builtins and one `mv` before it: the switch is timed until traffic moves). A lock whose
# owner is not written yet counts from the directory's age.
fresh=
if mkdir .switch.lock 2>/dev/null; then
  fresh=1
else
  now=$(date +%s)
  holder=unknown; since=0
  read -r holder since < .switch.lock/owner 2>/dev/null || true
  case "$since" in ''|*[!0-9]*|0) since=$(stat -c %Y .switch.lock 2>/dev/null || echo "$now");; esac
  if [ "$holder" != "$ROUTING_OWNER" ]; then
    age=$((now - since))
    if [ "$age" -lt "$ROUTING_LOCK_STALE_S" ]; then echo "$holder $age"; exit "$ROUTING_LOCKED_EXIT"; fi
    echo "$ROUTING_OWNER $now" > .switch.lock/owner
  fi
fi
# What nginx reads now: the last existing marker wins, as in the server's `if` order.
was_live=none; was_preview=none
for c in $ROUTING_COLORS; do
  [ -e "live-$c" ] && was_live=$c
  [ -e "preview-$c" ] && was_preview=$c
done
move() {
  for c in $ROUTING_COLORS; do
    [ "$c" = "$2" ] || [ ! -e "$1-$c" ] && continue
    if [ "$2" = none ]; then rm -f "$1-$c"; else mv -f "$1-$c" "$1-$2"; fi
  done
  if [ "$2" != none ] && [ ! -e "$1-$2" ]; then
    printf '%s' "$ROUTING_MARKER" > ".$1.next"; chmod 0444 ".$1.next"; mv -f ".$1.next" "$1-$2"
  fi
}
move live "$ROUTING_LIVE"
[ -z "$fresh" ] || echo "$ROUTING_OWNER $(date +%s)" > .switch.lock/owner
move preview "$ROUTING_PREVIEW"
echo "$was_live $was_preview"
