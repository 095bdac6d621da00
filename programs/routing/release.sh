#!/bin/sh
# Drops the switch lock when its owner still holds it (release/routing/docker_side.py,
# `release_lock`; best effort: a lock goes stale anyway). Run in the proxy container as root.
# Environment: ROUTING_DIR_PATH (the routing markers' directory), ROUTING_OWNER (who switched).
cd "$ROUTING_DIR_PATH" || exit 0
read -r holder _since < .switch.lock/owner 2>/dev/null || exit 0
if [ "$holder" = "$ROUTING_OWNER" ]; then rm -rf .switch.lock; fi
